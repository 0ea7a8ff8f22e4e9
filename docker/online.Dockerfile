# The online lookup API (`prescore serve`): the `online` extra only — no Dask, no Airflow, no xgboost.
#
# Build from the repository root:
#   docker build -f docker/online.Dockerfile -t prescore/online:0.1.0 .
#
# Base images are pinned to exact versions. To pin them by content as well, resolve each tag's digest
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`) and write `FROM name:tag@sha256:...`.

# ---- build: the locked environment in /opt/venv, the project installed as a wheel (not editable) ----------
FROM python:3.11.14-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first (a layer that changes only with the lock file), then the project itself. The online extra
# carries no xgboost, SciPy or scikit-learn: the reader runs its fallback model from the registry's UBJSON.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project --extra online
COPY warehouse/ warehouse/
COPY online/ online/
COPY jobs/ jobs/
# --reinstall-package: uv's cache (the mount) keeps a built wheel of the project until pyproject.toml changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --reinstall-package prescore --extra online

# ---- runtime ---------------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm
# No apt packages: the reader needs no native library beyond the wheels (no xgboost, hence no OpenMP runtime).
RUN groupadd --system --gid 10001 prescore \
    && useradd --system --uid 10001 --gid prescore --create-home --home-dir /home/prescore prescore \
    && mkdir -p /data/prescore \
    && chown prescore:prescore /data/prescore
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PRESCORE_HOME=/data/prescore
WORKDIR /home/prescore
USER prescore
EXPOSE 8000
# Liveness only: /readyz stays 503 until a model is published, which is not a reason to restart the process.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Inside a container the server must bind 0.0.0.0: 127.0.0.1 there is the container's own loopback, which
# the published port cannot reach. The host side stays private: compose publishes it on 127.0.0.1 only.
CMD ["prescore", "serve", "--host", "0.0.0.0", "--port", "8000"]
