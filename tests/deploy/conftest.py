"""Fixtures of the deployment tests: the parsed deployment files, and a real external Dask cluster.

- ``compose`` / ``dockerfiles`` / ``dockerignore`` (session): ``docker/compose.yaml`` parsed with PyYAML, each
  ``docker/*.Dockerfile`` parsed into stages, the ``.dockerignore`` patterns.
- ``entry_points`` (session): the ``prescore`` click group (from ``jobs.cli.app``) and, when the batch extra is
  installed, the option parsers of ``dask scheduler`` and ``dask worker``.
- ``image_health`` (session): image name → whether the Dockerfile compose builds it from has a HEALTHCHECK.
- ``external_dask`` (module): a ``dask scheduler`` and two ``dask worker`` processes from ``.venv/bin`` on
  127.0.0.1 (free ports, every HTTP server on loopback too); stopped by PID (SIGTERM, then SIGKILL).
- ``warehouse_copy``: a factory of private copies of the session's trained warehouse (``trained_template``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.commands import EntryPoints
from tests.deploy.dockerfiles import Stage, has_healthcheck, parse_dockerfile, parse_dockerignore

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
DOCKERFILES = {
    "online": DOCKER_DIR / "online.Dockerfile",
    "batch": DOCKER_DIR / "batch.Dockerfile",
    "gpu-worker": DOCKER_DIR / "gpu-worker.Dockerfile",
}
BIN = Path(sys.executable).parent  # the virtualenv's bin/, where `dask` is installed


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, list[Stage]]:
    return {name: parse_dockerfile(path.read_text()) for name, path in DOCKERFILES.items()}


@pytest.fixture(scope="session")
def dockerignore() -> list[str]:
    return parse_dockerignore((REPO / ".dockerignore").read_text())


@pytest.fixture(scope="session")
def entry_points() -> EntryPoints:
    import typer.main

    from jobs.cli import app

    parsers: dict[tuple[str, ...], Any] = {}
    try:
        from distributed.cli import dask_scheduler, dask_worker
    except ImportError:  # without the batch extra the words are checked, not the options
        pass
    else:
        parsers = {("dask", "scheduler"): dask_scheduler.main, ("dask", "worker"): dask_worker.main}
    return EntryPoints(prescore=typer.main.get_command(app), parsers=parsers)


@pytest.fixture(scope="session")
def image_health(compose: dict[str, Any]) -> dict[str, bool]:
    health = {}
    for service in compose["services"].values():
        build = service.get("build")
        if isinstance(build, dict) and "image" in service:
            dockerfile = (COMPOSE_FILE.parent / build.get("context", ".") / build["dockerfile"]).resolve()
            health[service["image"]] = has_healthcheck(parse_dockerfile(dockerfile.read_text()))
    return health


# ---- an external Dask cluster ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM by PID, then SIGKILL when it has not exited within ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@pytest.fixture(scope="module")
def external_dask(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a running ``dask scheduler`` with two single-threaded ``dask worker`` processes.

    The scheduler's and workers' HTTP servers would listen on all interfaces by default (even with
    ``--no-dashboard``): ``--dashboard-address 127.0.0.1:0`` keeps them on loopback. Workers run without a nanny,
    so each PID is the whole worker.
    """
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask-logs")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    loopback_http = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    worker = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-nanny"]
    commands = {
        "scheduler": [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), *loopback_http],
        "worker-1": [*worker, "--name", "worker-1", *loopback_http],
        "worker-2": [*worker, "--name", "worker-2", *loopback_http],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in commands.items():
            with (logs / f"{name}.log").open("wb") as out:
                procs[name] = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL)  # fmt: skip
            if name == "scheduler":
                _wait_listening(port, procs[name], logs / "scheduler.log")
        with Client(address, timeout="30s") as client:
            try:
                client.wait_for_workers(2, timeout=120)
            except TimeoutError:
                pytest.fail("the workers did not join:\n" + "\n".join(_tail(logs / f"{n}.log") for n in procs))
        yield address
    finally:
        for name in reversed(list(procs)):  # workers first, the scheduler last
            _stop(procs[name])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dask scheduler exited with {proc.returncode}:\n{_tail(log)}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"dask scheduler not listening on 127.0.0.1:{port} after {timeout_s:.0f}s:\n{_tail(log)}")


@pytest.fixture
def warehouse_copy(trained_template: tuple[Path, Path], tmp_path: Path) -> Callable[[str], tuple[Path, Path]]:
    """``copy(name)`` → (home, models file): a private copy of the trained warehouse under ``tmp_path/name``."""
    home, models_file = trained_template

    def copy(name: str) -> tuple[Path, Path]:
        target = tmp_path / name / "home"
        shutil.copytree(home, target)
        return target, models_file

    return copy
