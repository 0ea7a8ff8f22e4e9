# A dask-cuda worker for GPU scoring (extras batch + gpu). Needs the NVIDIA Container Toolkit on the host;
# docker/compose.yaml starts it under the `gpu` profile with the GPU reserved for it.
#
# Build from the repository root:
#   docker build -f docker/gpu-worker.Dockerfile -t prescore/gpu-worker:0.1.0 .
#
# Ubuntu 22.04 has no packaged Python 3.11.14, and a Python built for Debian bookworm needs a newer glibc than
# jammy's, so uv installs a relocatable CPython build of the same version into /opt/python.
# Base images are pinned to exact versions; pin by digest as well with `FROM name:tag@sha256:...`.

# ---- build -----------------------------------------------------------------------------------------------
FROM nvidia/cuda:12.6.3-runtime-ubuntu22.04 AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN uv python install 3.11.14
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project --python 3.11.14 --extra batch --extra gpu
COPY warehouse/ warehouse/
COPY online/ online/
COPY jobs/ jobs/
# --reinstall-package: uv's cache (the mount) keeps a built wheel of the project until pyproject.toml changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --reinstall-package prescore --python 3.11.14 --extra batch --extra gpu

# ---- runtime ---------------------------------------------------------------------------------------------
FROM nvidia/cuda:12.6.3-runtime-ubuntu22.04
# libgomp1: xgboost's OpenMP runtime (the CPU path of a task and model loading).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 prescore \
    && useradd --system --uid 10001 --gid prescore --create-home --home-dir /home/prescore prescore \
    && mkdir -p /data/prescore \
    && chown prescore:prescore /data/prescore
# The virtual environment links to the interpreter under /opt/python: both keep their build-stage paths.
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PRESCORE_HOME=/data/prescore
WORKDIR /home/prescore
USER prescore
# The worker's HTTP server (health, Prometheus metrics) listens on 8790 in the container; it is not published.
HEALTHCHECK --interval=20s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8790/health', timeout=3)"]
CMD ["dask", "cuda", "worker", "tcp://dask-scheduler:8786", "--dashboard-address", ":8790"]
