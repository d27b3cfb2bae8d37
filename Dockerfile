# Sonify on a CUDA GPU. Build:  docker build -t sonify .
# Run:    docker run --gpus all -v $PWD/config.toml:/app/config.toml:ro \
#           -v sonify-data:/data -v sonify-models:/models -p 127.0.0.1:8080:8080 sonify
# (Not built in CI: the project's build machines have no Docker engine.)
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/models

# Distribution package versions move with the base image; pinning them breaks rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, so code changes don't reinstall torch.
COPY pyproject.toml README.md ./
COPY core/__init__.py core/__init__.py
COPY bot/__init__.py bot/__init__.py
RUN pip install torch==2.14.1 torchvision==0.29.1 && pip install .

COPY core core
COPY bot bot
COPY config.example.toml ./
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 sonify \
    && mkdir -p /data /models \
    && chown sonify:sonify /data /models

USER 10001
VOLUME ["/data", "/models"]
EXPOSE 8080
# The web page binds to localhost by default; in a container set [web] host = "0.0.0.0"
# and [storage] data_dir = "/data" in the mounted config.
CMD ["sonify", "run", "--config", "/app/config.toml"]
