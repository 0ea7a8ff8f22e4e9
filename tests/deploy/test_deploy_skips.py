"""``make test-deploy`` where the stack cannot run: each missing piece (client, engine, Compose v2 or a recent
enough Compose) makes it skip with a line saying what is missing and how to get it; exit 0, never a failure and
never a silent pass. The clients here are small scripts that answer as a host without that piece does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO


def run_live(docker: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRESCORE_TEST_DEPLOY": "1", "PRESCORE_DOCKER": docker}
    args = ["tests/deploy/test_compose_stack_live.py", "-rs", "-q", "-p", "no:cacheprovider"]
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def client(tmp_path: Path, info_rc: int, compose: str) -> str:
    """A docker client whose ``info`` exits ``info_rc`` and whose ``compose version`` runs ``compose`` (sh)."""
    path = tmp_path / "docker"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = info ]; then echo "Cannot connect to the Docker daemon" >&2; exit {info_rc}; fi\n'
        f'if [ "$1" = compose ]; then {compose}; fi\n'
        "exit 1\n"
    )
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no client", "no docker client"),
        ("no engine", "no Docker engine answers"),
        ("no compose", "install Compose v2 (bash docker/install-compose.sh)"),
        ("old compose", "Compose 2.20.3 is older than 2.24"),
    ],
)
def test_make_test_deploy_skips_saying_what_is_missing(tmp_path: Path, case: str, expected: str) -> None:
    clients = {
        "no engine": (1, "exit 1"),
        "no compose": (0, "echo \"docker: 'compose' is not a docker command.\" >&2; exit 1"),
        "old compose": (0, "echo 2.20.3; exit 0"),
    }
    docker = client(tmp_path, *clients[case]) if case in clients else str(tmp_path / "no-such-docker")
    done = run_live(docker)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "3 skipped" in done.stdout and "passed" not in done.stdout and "failed" not in done.stdout, done.stdout
    assert expected in done.stdout, done.stdout
