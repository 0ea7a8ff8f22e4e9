"""``prescore serve``: run the online reader under uvicorn, in the foreground or detached.

The app is ``online.app:create_app`` (a factory; uvicorn imports it, so jobs/ never imports online/). A
detached server writes ``<home>/run/api.json`` (pid, host, port, log file) and is stopped by PID with
``prescore serve --stop``. Loopback (127.0.0.1) is the default bind; any other address is allowed but logged
as a warning, because the API is then reachable from the network (configure API keys first).

The detached server's output goes to ``<home>/run/api.log``, bounded by size: rotated before each start, and every
``LOG_CHECK_S`` by the server itself (``jobs.logfiles``: at most ``PRESCORE_LOG_MAX_MB`` plus one interval of
output, and ``PRESCORE_LOG_BACKUPS`` older files).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from jobs import logfiles
from warehouse.errors import UserError

log = logging.getLogger(__name__)
APP = "online.app:create_app"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
LOG_CHECK_S = 10.0
DEFAULT_LOG_MAX_BYTES = 50 * logfiles.MIB
DEFAULT_LOG_BACKUPS = 3


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    port: int
    log_file: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _state_file(home: Path) -> Path:
    return home / "run" / "api.json"


def check_bind(host: str, port: int, warn_exposed: bool = True) -> None:
    """Refuse a port that is already taken (one line naming it and the fix); warn about a non-loopback address
    unless ``warn_exposed`` is off (the caller warns in its own words)."""
    if not 0 < port < 65536:
        raise UserError(f"--port {port} is not a TCP port (1-65535)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from None
    if warn_exposed and host not in LOOPBACK:
        log.warning("binding to %s: the API is reachable from the network; set PRESCORE_API_KEY_HASHES", host)


def api_log(home: Path) -> Path:
    """Where the detached server of ``home`` writes its output (pure)."""
    return _state_file(home).parent / "api.log"


def serve_foreground(
    host: str,
    port: int,
    workers: int,
    log_file: Path | None = None,
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
    log_backups: int = DEFAULT_LOG_BACKUPS,
) -> None:
    """Run uvicorn until interrupted (SIGINT/SIGTERM stop it gracefully). With ``log_file`` (the file this
    process's output is appended to), rotate it every ``LOG_CHECK_S`` while serving."""
    import uvicorn

    if workers < 1:
        raise UserError(f"--workers {workers}: give at least 1")
    check_bind(host, port)
    rotator = logfiles.Rotator(log_file, log_max_bytes, log_backups, LOG_CHECK_S).start() if log_file else None
    try:
        uvicorn.run(APP, factory=True, host=host, port=port, workers=workers, access_log=False, log_level="info")
    finally:
        if rotator is not None:
            rotator.stop()


def running_server(home: Path) -> ServerInfo | None:
    """The detached server of ``home`` if its process is alive (a stale state file is removed)."""
    path = _state_file(home)
    try:
        info = ServerInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    except PermissionError:
        pass
    return info


def start_detached(
    home: Path,
    host: str,
    port: int,
    workers: int,
    ready_timeout_s: float = 90.0,
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
    log_backups: int = DEFAULT_LOG_BACKUPS,
) -> ServerInfo:
    """Start ``prescore serve`` in its own session, wait until ``/readyz`` answers 200, record its PID. Its output
    is appended to ``api_log(home)``, rotated first when it is over ``log_max_bytes`` and by the server itself
    from then on."""
    current = running_server(home)
    if current is not None:
        raise UserError(f"an API started here is already running at {current.url} (pid {current.pid}); "
                        "stop it with `prescore serve --stop`")  # fmt: skip
    check_bind(host, port)
    log_file = api_log(home)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logfiles.rotate(log_file, log_max_bytes, log_backups)
    cmd = [sys.executable, "-m", "jobs.cli", "serve", "--host", host, "--port", str(port), "--workers", str(workers),
           "--log-file", str(log_file)]  # fmt: skip
    with log_file.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    info = ServerInfo(proc.pid, host, port, str(log_file))
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if proc.poll() is not None:
            raise UserError(f"the API exited with code {proc.returncode} before it was ready; see {log_file}:\n"
                            + _tail(log_file))  # fmt: skip
        status, body = http_json("GET", info.url + "/readyz", timeout=2.0)
        if status == 200:
            break
        if time.monotonic() > deadline:
            _terminate(proc.pid)
            raise UserError(f"the API was not ready within {ready_timeout_s:.0f}s (last /readyz: {status} {body}); "
                            f"see {log_file}")  # fmt: skip
        time.sleep(0.25)
    _state_file(home).write_text(json.dumps(asdict(info)))
    return info


def stop_detached(home: Path) -> ServerInfo | None:
    """Stop the detached server of ``home`` by PID (SIGTERM, then SIGKILL after 15 s); None when none ran."""
    info = running_server(home)
    if info is None:
        return None
    _terminate(info.pid)
    _state_file(home).unlink(missing_ok=True)
    return info


def _terminate(pid: int, grace_s: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)  # its own session: uvicorn workers go too
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def http_json(method: str, url: str, body: object = None, timeout: float = 5.0) -> tuple[int, object]:
    """One HTTP call with the standard library; (status, decoded JSON or text); status 0 when unreachable."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
