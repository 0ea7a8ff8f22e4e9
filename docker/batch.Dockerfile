# The CPU batch image: prescore jobs, Dask scheduler and workers, and Airflow (extras batch, airflow, online).
# One image for every batch role; docker/compose.yaml picks the role with `command:` and gives each server
# role its own healthcheck (a single HEALTHCHECK here could not fit a scheduler, a worker and an API server).
#
# Build from the repository root:
#   docker build -f docker/batch.Dockerfile -t prescore/batch:0.1.0 .
#
# Base images are pinned to exact versions; pin by digest as well with `FROM name:tag@sha256:...`.

# ---- build -----------------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project --extra batch --extra airflow --extra online
COPY warehouse/ warehouse/
COPY online/ online/
COPY jobs/ jobs/
# --reinstall-package: uv's cache (the mount) keeps a built wheel of the project until pyproject.toml changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --reinstall-package prescore --extra batch --extra airflow --extra online

# ---- runtime ---------------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm
# libgomp1: xgboost's OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 prescore \
    && useradd --system --uid 10001 --gid prescore --create-home --home-dir /home/prescore prescore \
    && mkdir -p /data/prescore /opt/airflow/logs \
    && chown -R prescore:prescore /data/prescore /opt/airflow
COPY --from=build /opt/venv /opt/venv
# DAG files are configuration: they import the installed `jobs` package and read the models file.
COPY --chown=prescore:prescore dags/ /opt/prescore/dags/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PRESCORE_HOME=/data/prescore \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/prescore/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
WORKDIR /home/prescore
USER prescore
CMD ["prescore", "--help"]
