# pneumo dashboard: docker build -t pneumo . && docker run -p 8501:8501 pneumo
# Serves models/default (shipped in the repo). Mount other bundles and point at them with
#   docker run -p 8501:8501 -v /path/to/bundles:/models -e PNEUMO_MODELS_DIR=/models pneumo
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app

# Dependencies first: this layer is reused until requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Run unprivileged; uploads are processed in memory, so the app needs no writable folder.
RUN useradd --create-home --uid 1000 pneumo
USER pneumo

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health')"

CMD ["streamlit", "run", "streamlit_app.py", "--server.address", "0.0.0.0", "--server.port", "8501", "--server.headless", "true"]
