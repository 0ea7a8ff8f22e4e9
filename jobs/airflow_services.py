"""``prescore airflow up|down|status``: Airflow's api-server, scheduler and dag-processor on this machine, with
prescore's DAGs, bound to 127.0.0.1, started in the background and stopped by PID.

Everything lives in one Airflow home, ``services_home(local_dir)`` = ``<PRESCORE_HOME>/airflow-local`` (or under
``PRESCORE_STATE_DIR`` when the home is a URL), never ``~/airflow`` or the working directory: the SQLite metadata
DB, the task logs (``logs/``), the generated login (``simple_auth_manager_passwords.json.generated``), and in
``run/``: each component's pid file (``<component>.pid``) and output (``<component>.log``, appended, rotated at each
``up`` and by ``prescore retention`` past ``PRESCORE_LOG_MAX_MB``), the JWT secret the components share, and
``services.json`` (URL, login, components).

What ``services_env`` sets, and why:

- the API on ``host:port`` (127.0.0.1:8080 by default) with ``AIRFLOW__API__BASE_URL`` and the execution API URL
  that task processes report to derived from them (Airflow's default assumes localhost:8080);
- the scheduler runs with ``--skip-serve-logs`` (its log server would listen on 0.0.0.0:8793) and its health-check
  server off; the triggerer, started only on request, with ``--skip-serve-logs`` too. prescore needs no triggerer:
  its one sensor runs in ``reschedule`` mode and nothing defers, so the Home page's Triggerer badge stays red;
- ``SIMPLE_AUTH_MANAGER_USERS=admin:admin`` is *user:role*: user ``admin`` with the admin role; the api-server
  generates the password into the passwords file on its first start;
- ``parallelism`` (2 by default): the LocalExecutor starts that many worker processes, each ~150 MB, whatever the
  load; Airflow's default of 32 is too much for a small machine;
- ``PRESCORE_HOME`` and ``PRESCORE_MODELS_FILE`` as absolute paths and ``PRESCORE_REDIS_URL`` resolved (the
  embedded Redis of the home is started when it is unset), so every task process uses the same warehouse and
  Redis as the command that started them.

The ``prescore_dask`` pool is created over the REST API once the api-server answers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jobs import logfiles
from jobs.airflow_api import AirflowAPI
from jobs.local_airflow import airflow_home_env
from jobs.serve import LOOPBACK, check_bind, http_json
from warehouse.errors import UserError
from warehouse.settings import Settings
from warehouse.store import ensure_local_redis

log = logging.getLogger(__name__)
USER, ROLE = "admin", "admin"
POOL = "prescore_dask"
COMPONENTS: dict[str, tuple[str, ...]] = {
    "api-server": ("api-server",),
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),  # only with up(triggerer=True)
}
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class Component:
    name: str
    pid: int | None  # None: no pid file
    running: bool
    log_file: str


@dataclass
class ServicesInfo:
    """What ``up`` started and ``status`` reports; ``password`` is None until the api-server has written it."""

    home: str
    url: str
    user: str
    passwords_file: str
    password: str | None
    redis_url: str | None
    components: list[Component] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return any(c.running for c in self.components)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def services_home(local_dir: Path) -> Path:
    """The Airflow home of the local services (pure)."""
    return local_dir / "airflow-local"


def _run_dir(home: Path) -> Path:
    return home / "run"


def pid_file(home: Path, component: str) -> Path:
    return _run_dir(home) / f"{component}.pid"


def log_file(home: Path, component: str) -> Path:
    return _run_dir(home) / f"{component}.log"


def service_logs(local_dir: Path) -> list[Path]:
    """Every component output file of the services home of ``local_dir`` (what retention rotates)."""
    return [log_file(services_home(local_dir), name) for name in COMPONENTS]


def _url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def services_env(
    home: Path,
    host: str,
    port: int,
    parallelism: int,
    jwt_secret: str,
    prescore_env: dict[str, str],
) -> dict[str, str]:
    """The environment of every component (see the module docstring); pure."""
    base = _url(host, port)
    return {
        **airflow_home_env(home),
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:{ROLE}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home.resolve() / PASSWORDS_FILE),
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        **prescore_env,
    }


def _prescore_env(settings: Settings) -> dict[str, str]:
    """PRESCORE_* as the task processes must see them: absolute paths, the Redis URL resolved."""
    env = {"PRESCORE_MODELS_FILE": str(settings.models_file.expanduser().resolve())}
    if settings.home_is_remote:
        env["PRESCORE_STATE_DIR"] = str(settings.local_dir)
    else:
        env["PRESCORE_HOME"] = str(settings.home_dir)
    env["PRESCORE_REDIS_URL"] = settings.redis_url or ensure_local_redis(settings.embedded_redis_dir).url
    return env


def _jwt_secret(home: Path) -> str:
    """The secret every component signs its tokens with: made once, kept private in ``run/jwt_secret``."""
    path = _run_dir(home) / "jwt_secret"
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path.read_text().strip()


def _airflow_bin() -> str:
    if importlib.util.find_spec("airflow") is None:  # never import it here: importing reads ~/airflow
        raise UserError("Airflow is not installed: uv sync --extra airflow (make install does)")
    return str(Path(sys.executable).with_name("airflow"))


def _alive(pid: int, component: str) -> bool:
    """True when ``pid`` runs and is that component (a reused pid of another program is not)."""
    import psutil  # comes with Airflow

    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    shown = " ".join(cmdline)  # the api-server renames itself "airflow api_server -- host:…"
    return "airflow" in shown and (component in shown or component.replace("-", "_") in shown)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def status(local_dir: Path) -> ServicesInfo:
    """Every component's pid and whether it runs, the URL and the login; a stale pid file is removed."""
    home = services_home(local_dir)
    recorded: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads((_run_dir(home) / "services.json").read_text())
    components = []
    for name in COMPONENTS:
        path = pid_file(home, name)
        pid = _read_pid(path)
        running = pid is not None and _alive(pid, name)
        if pid is not None and not running:
            path.unlink(missing_ok=True)
            pid = None
        if pid is not None or name != "triggerer":
            components.append(Component(name, pid, running, str(log_file(home, name))))
    passwords = home / PASSWORDS_FILE
    return ServicesInfo(
        home=str(home), url=str(recorded.get("url", "")), user=USER, passwords_file=str(passwords),
        password=_password(passwords), redis_url=str(recorded.get("redis_url") or "") or None, components=components,
    )  # fmt: skip


def _password(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text()).get(USER)
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def up(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8080,
    parallelism: int = 2,
    triggerer: bool = False,
    ready_timeout_s: float = 180.0,
) -> ServicesInfo:
    """Migrate the metadata DB, start the components in their own sessions, wait for the API to answer, create the
    ``prescore_dask`` pool, and return what runs where. ``UserError`` when they already run, the port is taken, or a
    component exits or the API is not up within ``ready_timeout_s`` (every component started is stopped then)."""
    airflow = _airflow_bin()
    if parallelism < 1:
        raise UserError(f"--parallelism {parallelism}: give at least 1")
    local_dir = settings.local_dir
    current = status(local_dir)
    if current.running:
        raise UserError(f"Airflow services started here already run ({current.url or 'see prescore airflow status'});"
                        " stop them with `prescore airflow down`")  # fmt: skip
    check_bind(host, port, warn_exposed=False)
    if host not in LOOPBACK:
        log.warning("binding the Airflow UI and API to %s: reachable from the network, behind a generated password "
                    "only", host)  # fmt: skip
    home = services_home(local_dir)
    _run_dir(home).mkdir(parents=True, exist_ok=True)
    prescore_env = _prescore_env(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CTX_")}
    env.update(services_env(home, host, port, parallelism, _jwt_secret(home), prescore_env))
    url = _url(host, port)

    migrate_log = _run_dir(home) / "db-migrate.log"
    with migrate_log.open("wb") as out:
        done = subprocess.run([airflow, "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=600, check=False)  # fmt: skip
    if done.returncode != 0:
        raise UserError(
            f"`airflow db migrate` failed (exit {done.returncode}); see {migrate_log}:\n{_tail(migrate_log)}"
        )

    names = [n for n in COMPONENTS if n != "triggerer" or triggerer]
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in names:
            path = log_file(home, name)
            logfiles.rotate(path, settings.log_max_bytes, settings.log_backups)
            with path.open("ab") as out:
                started[name] = subprocess.Popen([airflow, *COMPONENTS[name]], env=env, stdout=out,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 start_new_session=True)  # fmt: skip
            pid_file(home, name).write_text(f"{started[name].pid}\n")
        record = {"url": url, "user": USER, "redis_url": prescore_env["PRESCORE_REDIS_URL"], "components": names}
        (_run_dir(home) / "services.json").write_text(json.dumps(record))
        _wait_ready(url, started, home, ready_timeout_s)
        password = _wait_for_password(home / PASSWORDS_FILE, started, home)
        AirflowAPI(url, USER, password).ensure_pool(POOL, 1, "prescore Dask jobs (one local cluster at a time)")
    except BaseException:
        down(local_dir)
        raise
    return status(local_dir)


def _wait_ready(url: str, started: dict[str, subprocess.Popen[bytes]], home: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for name, proc in started.items():
            if proc.poll() is not None:
                log = log_file(home, name)
                raise UserError(f"the Airflow {name} exited with code {proc.returncode} while starting; see {log}:\n"
                                + _tail(log))  # fmt: skip
        code, _ = http_json("GET", f"{url}/api/v2/monitor/health", timeout=2.0)
        if code == 200:
            return
        if time.monotonic() > deadline:
            raise UserError(f"the Airflow API at {url} did not answer within {timeout_s:.0f}s; see "
                            f"{log_file(home, 'api-server')}")  # fmt: skip
        time.sleep(0.5)


def _wait_for_password(path: Path, started: dict[str, subprocess.Popen[bytes]], home: Path) -> str:
    deadline = time.monotonic() + 30.0
    while (password := _password(path)) is None:
        if time.monotonic() > deadline or started["api-server"].poll() is not None:
            raise UserError(f"the api-server wrote no password for {USER!r} to {path}; see "
                            f"{log_file(home, 'api-server')}")  # fmt: skip
        time.sleep(0.2)
    return password


def down(local_dir: Path, grace_s: float = STOP_GRACE_S) -> list[Component]:
    """Stop every running component by PID (SIGTERM to its process group, SIGKILL after ``grace_s``) and remove
    the pid files; what was stopped (empty when nothing ran)."""
    home = services_home(local_dir)
    running = [(c, c.pid) for c in status(local_dir).components if c.running and c.pid is not None]
    for _, pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # its own session: everything it started gets the signal too
    deadline = time.monotonic() + grace_s
    for component, pid in running:
        while _group_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _group_alive(pid):
                _reap(pid)
                time.sleep(0.05)
        _reap(pid)
        pid_file(home, component.name).unlink(missing_ok=True)
    return [component for component, _ in running]


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group (the component and every process it started) is left, zombies aside."""
    import psutil

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for proc in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.info["pid"]) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
