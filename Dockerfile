# Sonify on an NVIDIA GPU (or, without --gpus, on the CPU).
#
# Build:  docker build -t sonify .
# Run:    docker run --gpus all -t \
#           --mount type=bind,src="$PWD/config.toml",dst=/app/config.toml,readonly \
#           -v sonify-data:/data -v sonify-models:/models -p 127.0.0.1:8080:8080 sonify
#         (--mount, not -v: -v would turn a missing config.toml into an empty folder)
#         (docs/running/docker.md: the config.toml to mount, tokens as -e variables.)
#
# No CUDA base image: the torch wheels bring their own CUDA 13.0 runtime, cuBLAS and cuDNN
# (the nvidia-* packages pip installs beside torch), so a CUDA base image would only add a
# second, unused CUDA stack. The host provides the NVIDIA driver, which the NVIDIA Container
# Toolkit mounts in with --gpus: CUDA 13.0 needs driver R580 or newer (580.65.06 shipped with
# CUDA 13.0), and these wheels run on GPUs of compute capability 7.5 (Turing) or newer.
# NVIDIA_REQUIRE_CUDA makes `docker run --gpus` on an older driver stop with "unsatisfied
# condition: cuda>=13.0" instead of torch falling back to the CPU without a word.
# Not built in CI: the project's build machines have no Docker engine.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0"

WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, so code changes don't reinstall torch. torch comes from PyTorch's own
# index for its CUDA 13.0 build, pinned to the version the tests run on (see the Makefile);
# the PostgreSQL driver comes too, for a request log shared by several workers.
COPY pyproject.toml README.md ./
COPY core/__init__.py core/__init__.py
COPY bot/__init__.py bot/__init__.py
RUN pip install --index-url https://download.pytorch.org/whl/cu130 \
        torch==2.14.1 torchvision==0.29.1 \
    && pip install "/app[postgres]"

COPY core core
COPY bot bot
COPY config.example.toml ./
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 sonify \
    && mkdir -p /data /models \
    && chown sonify:sonify /data /models

USER 10001
# /data: the request log, the clip cache and accepted pictures; /models: downloaded weights.
VOLUME ["/data", "/models"]
EXPOSE 8080
# Ready once the models are loaded and every configured platform is connected (README
# "Operating it"); docker-compose.yml gives each worker a check of its own.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 \
    CMD ["sonify", "health", "--config", "/app/config.toml"]
# The mounted config sets [storage] data_dir = "/data" and [web] host = "0.0.0.0" (README).
CMD ["sonify", "run", "--config", "/app/config.toml"]
