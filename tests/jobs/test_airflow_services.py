"""``prescore airflow up|down|status``: the settings the components get, the mistakes refused before anything
starts, pid files that name another program, and (PRESCORE_TEST_AIRFLOW_LIVE=1) the real services started, used
over REST, listening on 127.0.0.1 only, and stopped by PID."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from jobs import airflow_services as services
from jobs.airflow_api import AirflowAPI
from jobs.cli import app
from jobs.local_airflow import DAGS_DIR
from tests.support.listeners import listening

runner = CliRunner()
needs_airflow = pytest.mark.skipif(importlib.util.find_spec("airflow") is None, reason="needs the airflow extra")
LIVE = os.environ.get("PRESCORE_TEST_AIRFLOW_LIVE") == "1"
PRESCORE_BIN = str(Path(sys.executable).with_name("prescore"))


def test_every_component_gets_the_settings_the_recipe_needs(tmp_path: Path) -> None:
    """The API's address and the URLs derived from it, the execution API that tasks report to, a small
    LocalExecutor, the login as user:role, no scheduler log server or health-check server, absolute PRESCORE_*."""
    home = tmp_path / "airflow-local"
    prescore = {"PRESCORE_HOME": "/data/home", "PRESCORE_REDIS_URL": "redis://127.0.0.1:6390/0"}
    env = services.services_env(home, "127.0.0.1", 18081, 2, "s3cret", prescore)
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]) == ("127.0.0.1", "18081")
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18081"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18081/execution/"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2" and env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"  # user admin, role admin
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(home.resolve() / services.PASSWORDS_FILE)
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "False"
    assert env["AIRFLOW_HOME"] == str(home.resolve()) and env["AIRFLOW__CORE__DAGS_FOLDER"] == str(DAGS_DIR)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home.resolve() / 'airflow.db'}"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "s3cret"
    assert {k: env[k] for k in prescore} == prescore
    assert "--skip-serve-logs" in services.COMPONENTS["scheduler"]
    assert "--skip-serve-logs" in services.COMPONENTS["triggerer"]
    ipv6 = services.services_env(home, "::1", 8080, 1, "x", {})
    assert ipv6["AIRFLOW__API__BASE_URL"] == "http://[::1]:8080"


@needs_airflow
def test_up_on_a_port_in_use_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    env = {"PRESCORE_HOME": str(tmp_path / "home"), "PRESCORE_REDIS_URL": "redis://127.0.0.1:1/0"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["airflow", "up", "--port", str(port)], env=env)
    assert result.exit_code == 1, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "home" / "airflow-local").exists()


@needs_airflow
def test_up_with_no_parallelism_is_refused(tmp_path: Path) -> None:
    env = {"PRESCORE_HOME": str(tmp_path / "home")}
    result = runner.invoke(app, ["airflow", "up", "--parallelism", "0"], env=env)
    assert result.exit_code == 1 and "--parallelism 0: give at least 1" in result.output


def test_down_and_status_with_nothing_started(tmp_path: Path) -> None:
    env = {"PRESCORE_HOME": str(tmp_path / "home")}
    down = runner.invoke(app, ["airflow", "down"], env=env)
    assert down.exit_code == 0 and "no Airflow services were running" in down.output
    status = runner.invoke(app, ["airflow", "status", "--json"], env=env)
    assert status.exit_code == 0
    body = json.loads(status.stdout)
    assert [(c["name"], c["running"]) for c in body["components"]] == [
        ("api-server", False),
        ("scheduler", False),
        ("dag-processor", False),
    ]


def test_a_pid_file_naming_another_program_is_stale_and_that_program_is_left_alone(tmp_path: Path) -> None:
    """A pid file whose pid now belongs to something else (a reused pid): status says not running and removes the
    file; down signals nothing."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        home = services.services_home(tmp_path / "home")
        (home / "run").mkdir(parents=True)
        services.pid_file(home, "scheduler").write_text(f"{other.pid}\n")
        env = {"PRESCORE_HOME": str(tmp_path / "home")}
        down = runner.invoke(app, ["airflow", "down"], env=env)
        assert down.exit_code == 0 and "no Airflow services were running" in down.output
        assert other.poll() is None  # still alive
        assert not services.pid_file(home, "scheduler").exists()
    finally:
        other.kill()
        other.wait()


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PRESCORE_BIN, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _group(pgid: int) -> set[int]:
    found = set()
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid:
                found.add(proc.info["pid"])
        except (ProcessLookupError, PermissionError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.skipif(not LIVE, reason="set PRESCORE_TEST_AIRFLOW_LIVE=1 (starts api-server, scheduler, dag-processor)")
def test_up_status_down_for_real(tmp_path: Path, redis_url: str) -> None:
    """`prescore airflow up` starts the api-server, scheduler and dag-processor: the API answers on 127.0.0.1 with
    the login it printed, the prescore_dask pool exists, the dag-processor parsed prescore's DAGs, status says
    running, every socket of every component process listens on loopback only (no log server on 8793), a second
    up is refused; `down` stops every process of every component, nothing listens afterwards, status says so."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "PRESCORE_HOME": str(tmp_path / "home"),
        "PRESCORE_REDIS_URL": redis_url,
        "PRESCORE_CATALOG_URL": "",
    }
    port = _free_port()
    home = services.services_home(tmp_path / "home")
    pids: dict[str, int] = {}
    groups: dict[str, set[int]] = {}
    try:
        started = _cli(env, "airflow", "up", "--port", str(port), "--json")
        assert started.returncode == 0, started.stderr[-3000:]
        info = json.loads(started.stdout)
        url = f"http://127.0.0.1:{port}"
        assert info["url"] == url and info["user"] == "admin" and info["password"]
        assert info["redis_url"] == redis_url
        assert Path(info["home"]) == home == tmp_path / "home" / "airflow-local"
        assert json.loads(Path(info["passwords_file"]).read_text()) == {"admin": info["password"]}
        pids = {c["name"]: c["pid"] for c in info["components"] if c["running"]}
        assert set(pids) == {"api-server", "scheduler", "dag-processor"}
        assert {n: int(services.pid_file(home, n).read_text()) for n in pids} == pids

        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=10) as response:
            health: dict[str, Any] = json.loads(response.read())
        assert health["metadatabase"]["status"] == "healthy"
        api = AirflowAPI(url, "admin", info["password"])
        assert api.ensure_pool("prescore_dask", 1, "") is False  # up created it
        dag = urllib.request.Request(
            f"{url}/api/v2/dags/prescore_rescore", headers={"Authorization": f"Bearer {api.token()}"}
        )
        deadline = time.monotonic() + 120
        while True:  # the dag-processor parsed dags/ with the PRESCORE_* settings up passed on
            try:
                with urllib.request.urlopen(dag, timeout=10) as response:
                    assert json.loads(response.read())["dag_id"] == "prescore_rescore"
                    break
            except urllib.error.HTTPError as exc:
                assert exc.code == 404 and time.monotonic() < deadline, (
                    home / "run" / "dag-processor.log"
                ).read_text()[-3000:]
                time.sleep(2)

        status = _cli(env, "airflow", "status")
        assert status.returncode == 0
        for name, pid in pids.items():
            assert f"{name}: running (pid {pid})" in status.stderr
        groups = {name: _group(pid) for name, pid in pids.items()}
        sockets = {str(item) for pid in pids.values() for item in listening(pid)}
        assert sockets and all(s.startswith("127.0.0.1:") for s in sockets), sockets
        assert {s.split(" ")[0] for s in sockets} == {f"127.0.0.1:{port}"}  # only the API listens

        again = _cli(env, "airflow", "up", "--port", str(_free_port()))
        assert again.returncode == 1 and "already run" in again.stderr
    finally:
        stopped = _cli(env, "airflow", "down", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    for name, pid in pids.items():
        assert f"stopped {name} (pid {pid})" in stopped.stderr
    left = [pid for members in groups.values() for pid in members if _alive(pid)]
    assert left == []
    assert not any(services.pid_file(home, name).exists() for name in pids)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    after = _cli(env, "airflow", "status")
    assert "running (pid" not in after.stderr
