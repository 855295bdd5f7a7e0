# pneumo dashboard: docker build -t pneumo . && docker run -p 8501:8501 pneumo
# Serves models/default (shipped in the repo) with LiteRT: the light install
# (requirements-serve.txt) has no TensorFlow, so the image is small and starts in seconds.
# Grad-CAM++ / Score-CAM, training and calibration need requirements.txt instead.
# PNEUMO_SERVING=public (also the default when unset): nothing a visitor does is written to the
# models folder or shown to another visitor; a workstation sets PNEUMO_SERVING=workstation.
# Mount other bundles (each with model.tflite: python -m pneumo export --format litert) with
#   docker run -p 8501:8501 -v /path/to/bundles:/models -e PNEUMO_MODELS_DIR=/models pneumo
FROM python:3.11-slim

# MALLOC_ARENA_MAX=2: Streamlit runs a thread per visitor and glibc gives each its own malloc
# arena; two arenas cut the server's peak under 8 visitors and a fit from 1.2 GB to 0.9 GB
# (scripts/load_app.py --sessions 8 --films 10 --fit 60, README).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PNEUMO_RUNTIME=litert \
    PNEUMO_SERVING=public \
    MALLOC_ARENA_MAX=2

WORKDIR /app

# Dependencies first: this layer is reused until requirements-serve.txt changes.
COPY requirements-serve.txt .
RUN pip install -r requirements-serve.txt

# The whole repository, samples/ included: "Try a sample" offers those films when
# PNEUMO_SAMPLES_DIR is unset, so the image has a demo out of the box.
COPY . .

# Run unprivileged; uploads are processed in memory, so the app needs no writable folder.
RUN useradd --create-home --uid 1000 pneumo
USER pneumo

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health')"

CMD ["streamlit", "run", "streamlit_app.py", "--server.address", "0.0.0.0", "--server.port", "8501", "--server.headless", "true"]
