# CPU image: `docker build -t xai-cxr .`
#   demo (phantoms, offline):  docker run --rm -v "$PWD/out:/app/out" xai-cxr
#   app on http://localhost:8501:  docker run --rm -p 8501:8501 -v "$PWD/saved_weights:/app/saved_weights" xai-cxr \
#                                      xai-cxr app --port 8501 --address 0.0.0.0
#   API on http://localhost:8000:  docker run --rm -p 8000:8000 xai-cxr xai-cxr serve --host 0.0.0.0 --phantom
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg \
    XAI_CXR_CACHE=/app/.cache
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[app]"
COPY eXplainable-ai.ipynb ./
RUN useradd --create-home xai && mkdir -p /app/out /app/.cache /app/saved_weights && chown -R xai /app
USER xai
EXPOSE 8501 8000
CMD ["xai-cxr", "demo", "--weights-dir", "out/saved_weights", "--results-dir", "out/sample_results"]
