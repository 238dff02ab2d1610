"""Explanations: CAM methods (``cam/``), input attributions, overlays, and the checks of both (``metrics/``)."""
