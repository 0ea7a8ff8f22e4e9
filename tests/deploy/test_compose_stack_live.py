"""The whole compose stack built and run end to end (opt-in: ``PRESCORE_TEST_DEPLOY=1``; ``make test-deploy``).

``PRESCORE_DOCKER`` names the docker client: it must build with BuildKit and have Compose v2.24+ (``docker
compose``; ``docker/install-compose.sh`` installs it on Debian). Base and service images missing locally are built
as stand-ins first (``docker/local-base-images.sh --stack``); the online and batch images are built from the
working tree under a tag of this test's own. ``docker/compose.yaml`` runs unchanged but for an override this test
writes: those image tags, and each published port moved to a free port of 127.0.0.1 (so that the run never
collides with a server of the host). Grafana is left out: no stand-in can be built for it from Debian's packages.

In order, on one stack: every service up (healthy where it has a healthcheck, ``airflow-init`` exited 0); data
and models written from the scheduler's container; the nightly DAG, unpaused, run by the scheduler to success,
its scoring tasks executed by the external Dask cluster's two workers; both online replicas (restarted to load
the fallback model) answer ``precomputed`` with the run's own score for a known id and ``fallback`` for a new
one; Prometheus has every target up. Then ``down -v`` and the test's images removed: nothing of it is left but
the base images and the build cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jobs.serve import http_json
from tests.deploy.conftest import COMPOSE_FILE, REPO
from warehouse.store.local_server import free_port

DOCKER = os.environ.get("PRESCORE_DOCKER", "docker")
PROJECT = "prescore-deploy-test"
TAG = "deploy-test"
MODEL = "churn"
DAG_ID = f"prescore_score__{MODEL}"
BATCH_SERVICES = ("airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                  "airflow-triggerer", "dask-scheduler", "dask-worker")  # fmt: skip
SERVICES = ("postgres", "redis", *BATCH_SERVICES, "online-api", "prometheus")
pytestmark = [
    pytest.mark.skipif(os.environ.get("PRESCORE_TEST_DEPLOY") != "1", reason="set PRESCORE_TEST_DEPLOY=1"),
    pytest.mark.timeout(3600),  # the first test builds the images and brings the stack up in its fixtures
]


def _run(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def _free_port_pair() -> int:
    """A port p of 127.0.0.1 with p and p + 1 both free (the two online replicas take a range)."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


@dataclass
class Stack:
    env: dict[str, str]
    override: Path
    ports: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = _run(DOCKER, "compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), "-f", str(self.override), *args,
                    timeout=timeout, env=self.env)  # fmt: skip
        if check:
            assert done.returncode == 0, f"docker compose {' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done

    def exec(self, service: str, *command: str, timeout: float = 600, check: bool = True) -> str:
        done = self.compose("exec", "-T", service, *command, timeout=timeout, check=False)
        if check:
            assert done.returncode == 0, f"{service}: {' '.join(command)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout

    def containers(self) -> list[dict[str, Any]]:
        out = self.compose("ps", "-a", "--format", "json").stdout.strip()
        if out.startswith("["):
            return list(json.loads(out))
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"


def _override_text(ports: dict[str, int]) -> str:
    """The test's compose override: its own image tags, and every published port on a free port of 127.0.0.1."""
    services: dict[str, list[str]] = {name: [f"image: prescore/batch:{TAG}"] for name in BATCH_SERVICES}
    online = ports["online"]
    services["online-api"] = [
        f"image: prescore/online:{TAG}",
        f'ports: !override ["127.0.0.1:{online}-{online + 1}:8000"]',
    ]
    for service, name, inner in (("airflow-api-server", "airflow", 8080), ("dask-scheduler", "dask", 8787),
                                 ("prometheus", "prometheus", 9090)):  # fmt: skip
        services.setdefault(service, []).append(f'ports: !override ["127.0.0.1:{ports[name]}:{inner}"]')
    lines = ["services:"]
    for service, entries in services.items():
        lines += [f"  {service}:", *(f"    {entry}" for entry in entries)]
    return "\n".join(lines) + "\n"


def _engine_or_skip() -> None:
    if shutil.which(DOCKER) is None:
        pytest.skip(f"no docker client {DOCKER!r} on PATH: no Docker engine here (apt-get install docker.io)")
    if _run(DOCKER, "info", timeout=60).returncode != 0:
        pytest.skip(f"no Docker engine answers `{DOCKER} info` (start dockerd)")
    version = _run(DOCKER, "compose", "version", "--short", timeout=60)
    if version.returncode != 0:
        pytest.skip(f"`{DOCKER} compose` is missing: install Compose v2 (bash docker/install-compose.sh)")
    major, minor = (int(x) for x in version.stdout.strip().lstrip("v").split(".")[:2])
    if (major, minor) < (2, 24):
        pytest.skip(f"Compose {version.stdout.strip()} is older than 2.24 (`!override` in the test's override)")


def _build(stack_env: dict[str, str], timings: dict[str, float]) -> None:
    t0 = time.monotonic()
    bases = _run("bash", "docker/local-base-images.sh", "--stack", timeout=1800, env={**stack_env, "DOCKER": DOCKER})
    assert bases.returncode == 0, bases.stdout[-2000:] + bases.stderr[-2000:]
    timings["base images"] = time.monotonic() - t0
    for name in ("online", "batch"):
        t0 = time.monotonic()
        built = _run(DOCKER, "build", "-f", f"docker/{name}.Dockerfile", "-t", f"prescore/{name}:{TAG}", ".",
                     timeout=1800, env={**stack_env, "DOCKER_BUILDKIT": "1"})  # fmt: skip
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        timings[f"{name} image"] = time.monotonic() - t0


def _wait_up(stack: Stack, deadline_s: float = 600) -> None:
    """Every service's containers running (and healthy where they have a healthcheck); airflow-init exited 0."""
    deadline = time.monotonic() + deadline_s
    pending: list[str] = []
    while time.monotonic() < deadline:
        pending = []
        containers = stack.containers()
        seen = {c["Service"] for c in containers}
        pending += [f"{s}: no container" for s in SERVICES if s not in seen]
        for c in containers:
            state, health = c.get("State", ""), c.get("Health", "")
            if c["Service"] == "airflow-init":
                if state == "exited" and c.get("ExitCode") != 0:
                    log = stack.compose("logs", "airflow-init").stdout[-3000:]
                    pytest.fail(f"airflow-init exited {c.get('ExitCode')}:\n{log}")
                if state != "exited":
                    pending.append(f"airflow-init: {state}")
            elif state != "running" or health not in ("", "healthy"):
                pending.append(f"{c['Name']}: {state} {health}".strip())
        if not pending:
            return
        time.sleep(5)
    pytest.fail("services not up in time: " + "; ".join(pending))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Stack]:
    _engine_or_skip()
    env = {**os.environ, "AIRFLOW_JWT_SECRET": secrets.token_hex(32)}
    timings: dict[str, float] = {}
    _build(env, timings)
    online = _free_port_pair()
    ports = {"online": online}
    taken = {online, online + 1}
    for name in ("airflow", "dask", "prometheus"):
        port = free_port()
        while port in taken:
            port = free_port()
        ports[name] = port
        taken.add(port)
    override = tmp_path_factory.mktemp("deploy") / "compose.test.yaml"
    override.write_text(_override_text(ports))
    stack = Stack(env=env, override=override, ports=ports, timings=timings)
    stack.compose("down", "-v", "--remove-orphans", check=False)  # what an interrupted run may have left
    t0 = time.monotonic()
    try:
        stack.compose("up", "-d", "--no-build", *SERVICES, timeout=900)
        _wait_up(stack)
        timings["stack up"] = time.monotonic() - t0
        yield stack
    finally:
        logs = stack.compose("logs", "--no-color", "--tail", "40", check=False).stdout
        (override.parent / "compose.log").write_text(logs)
        t0 = time.monotonic()
        down = stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)
        removed = _run(DOCKER, "image", "rm", f"prescore/online:{TAG}", f"prescore/batch:{TAG}", timeout=300)
        timings["down"] = time.monotonic() - t0
        capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():  # to the CI log
            print("\nmake test-deploy timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
            print(f"last lines of every service's log: {override.parent / 'compose.log'}")
        assert down.returncode == 0, down.stderr[-2000:]
        assert removed.returncode == 0, removed.stderr[-2000:]
        left = _run(DOCKER, "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout
        volumes = _run(DOCKER, "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout
        assert not left.strip() and not volumes.strip(), f"left behind: containers {left!r}, volumes {volumes!r}"


def _dag_runs(stack: Stack) -> list[dict[str, Any]]:
    out = stack.exec("airflow-scheduler", "airflow", "dags", "list-runs", DAG_ID, "-o", "json", check=False)
    return list(_last_json(out) or [])


def _last_json(out: str) -> Any:
    """The JSON an Airflow CLI command printed with ``-o json``: its last line (warnings come first, on stdout)."""
    for line in reversed(out.splitlines()):
        if line.startswith(("[", "{")):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def _paused(stack: Stack) -> bool | None:
    """Whether the nightly DAG is paused; ``None`` while the dag-processor has not stored it yet."""
    dags = _last_json(stack.exec("airflow-scheduler", "airflow", "dags", "list", "-o", "json", check=False)) or []
    return next((str(d["is_paused"]).lower() == "true" for d in dags if d.get("dag_id") == DAG_ID), None)


@pytest.fixture(scope="module")
def nightly(stack: Stack) -> dict[str, Any]:
    """Data and models, then the nightly DAG run by the scheduler on the external Dask cluster to the end."""
    t0 = time.monotonic()
    stack.exec("airflow-scheduler", "prescore", "synth", "--entities", "20000", "--days", "4")
    stack.exec("airflow-scheduler", "prescore", "train", "--model", MODEL)
    deadline = time.monotonic() + 300
    while (paused := _paused(stack)) is not False:  # `dags unpause` of a DAG not parsed yet says so, exit 0
        assert time.monotonic() < deadline, "the dag-processor never parsed the nightly DAG"
        if paused:
            stack.exec("airflow-scheduler", "airflow", "dags", "unpause", DAG_ID)
        else:
            time.sleep(10)
    # Unpaused with catchup off, the scheduler creates the run of the last closed interval itself; a manual trigger
    # (no logical date, as `airflow dags trigger` and the REST API make it) scores the same partition after it.
    stack.exec("airflow-scheduler", "airflow", "dags", "trigger", DAG_ID)
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        runs = _dag_runs(stack)
        manual = [r for r in runs if r["run_id"].startswith("manual__")]
        if manual and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(10)
    stack.timings["nightly DAG"] = time.monotonic() - t0
    states = {r["run_id"]: r["state"] for r in runs}
    if not runs or set(states.values()) != {"success"}:
        logs = "tail -n 30 $(find /opt/airflow/logs -name '*.log' | sort)"
        tasks = stack.exec("airflow-scheduler", "bash", "-c", logs, check=False)
        pytest.fail(f"nightly DAG runs: {runs}\n{tasks[-6000:]}")
    probe = (
        "import json; from jobs.runtime import Runtime; from warehouse.datasets.score_files import read_run\n"
        f"rt = Runtime.from_settings(); run = rt.catalog.runs({MODEL!r}, status='committed')[0]\n"
        "row = read_run(str(run.output_path), columns=['entity_id', 'score']).slice(0, 1).to_pylist()[0]\n"
        f"features = rt.config.model({MODEL!r}).fallback_features\n"
        "print(json.dumps({'run_id': run.run_id, 'row': row, 'features': list(features)}))"
    )
    found = json.loads(stack.exec("airflow-scheduler", "python", "-c", probe).strip().splitlines()[-1])
    return {"runs": runs, **found}


def test_the_nightly_dag_scores_on_the_external_dask_cluster(stack: Stack, nightly: dict[str, Any]) -> None:
    probe = (
        "import json; from distributed import Client\n"
        "with Client('tcp://127.0.0.1:8786', timeout=30) as c:\n"
        "    print(json.dumps(c.run_on_scheduler(lambda dask_scheduler: {'workers': len(dask_scheduler.workers),"
        " 'prefixes': sorted(dask_scheduler.task_prefixes)})))"
    )
    seen = json.loads(stack.exec("dask-scheduler", "python", "-c", probe).strip().splitlines()[-1])
    assert seen["workers"] == 2
    assert "score_chunk" in seen["prefixes"], seen


def test_both_online_replicas_serve_precomputed_and_fallback(stack: Stack, nightly: dict[str, Any]) -> None:
    stack.compose("restart", "online-api")  # they started before the fallback model was trained
    known = nightly["row"]
    features = {name: 1.0 for name in nightly["features"]}
    for port in (stack.ports["online"], stack.ports["online"] + 1):
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        status, ready = http_json("GET", f"{base}/readyz")
        while status != 200 and time.monotonic() < deadline:
            time.sleep(1)
            status, ready = http_json("GET", f"{base}/readyz")
        assert status == 200, f"replica on {port}: /readyz {status} {ready}"
        status, hit = http_json("GET", f"{base}/v1/scores/{MODEL}/{known['entity_id']}")
        assert status == 200 and hit["source"] == "precomputed", hit
        assert hit["run_id"] == nightly["run_id"]
        assert hit["score"] == pytest.approx(float(known["score"]), rel=1e-6)
        status, new = http_json(
            "POST", f"{base}/v1/scores/{MODEL}", {"entity_id": "deploy-test-new", "features": features}
        )
        assert status == 200 and new["source"] == "fallback", new


def test_prometheus_has_every_target_up(stack: Stack) -> None:
    deadline = time.monotonic() + 180
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        status, answer = http_json("GET", stack.url("prometheus", "/api/v1/targets"))
        targets = answer["data"]["activeTargets"] if status == 200 else []
        jobs = [t["labels"]["job"] for t in targets]
        if (
            jobs.count("prescore-online") == 2
            and "dask-scheduler" in jobs
            and all(t["health"] == "up" for t in targets)
        ):
            return
        time.sleep(5)
    pytest.fail(
        "Prometheus targets: " + json.dumps([(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets])
    )
