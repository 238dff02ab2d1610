"""Serving a trained model: the Predictor, the HTTP API, the Streamlit app and the one-file report. Nothing here
imports the pipeline or the audit."""
