"""A small client of the Airflow 3 REST API (``/auth/token``, ``/api/v2/backfills``, ``/api/v2/pools``) for
``--via-airflow`` and ``prescore airflow up``.

Standard library only: the CLI must not need Airflow installed to ask a remote Airflow for a backfill.
Every failure is a ``UserError`` naming the URL and what to check.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from warehouse.errors import UserError
from warehouse.settings import Settings


class AirflowBusyError(UserError):
    """Airflow answered 503: it did not take the request (e.g. its SQLite metadata DB was locked); retry later."""


class AirflowAPI:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: str | None,
        timeout_s: float = 10.0,
        busy_retries: int = 5,
        busy_backoff_s: float = 1.0,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.username, self.password, self.timeout_s = username, password, timeout_s
        self.busy_retries, self.busy_backoff_s = busy_retries, busy_backoff_s  # 503s retried 1, 2, 4 … s apart
        self._token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AirflowAPI:
        return cls(settings.airflow_url, settings.airflow_username, settings.airflow_password)

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, auth: bool = True, missing_ok: bool = False
    ) -> Any:
        """The decoded JSON answer; ``UserError`` on any error status (None for 404 with ``missing_ok``)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == 404:
                return None
            detail = exc.read().decode(errors="replace")[:300]
            kind = AirflowBusyError if exc.code == 503 else UserError
            raise kind(f"Airflow at {self.base} answered {exc.code} to {method} {path}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(
                f"cannot reach Airflow at {self.base} ({reason}); start its api-server or set PRESCORE_AIRFLOW_URL"
            ) from None

    def token(self) -> str:
        if self._token is None:
            body = {"username": self.username, "password": self.password or ""}
            self._token = str(self._call("POST", "/auth/token", body, auth=False)["access_token"])
        return self._token

    def ensure_pool(self, name: str, slots: int, description: str) -> bool:
        """Create the pool ``name`` with ``slots`` unless it exists (then it is left as it is); True when created."""
        if self._call("GET", f"/api/v2/pools/{name}", missing_ok=True) is not None:
            return False
        self._call("POST", "/api/v2/pools", {"name": name, "slots": slots, "description": description})
        return True

    def create_backfill(
        self, dag_id: str, start: dt.date, end: dt.date, reprocess: str = "none", max_active_runs: int = 1
    ) -> dict[str, Any]:
        body = {
            "dag_id": dag_id,
            # Logical dates of the nightly runs fall inside their partition's day (e.g. D 02:00 for dt=D): whole days.
            "from_date": f"{start.isoformat()}T00:00:00Z",
            "to_date": f"{end.isoformat()}T23:59:59Z",
            "reprocess_behavior": reprocess,
            "max_active_runs": max_active_runs,
            "run_backwards": False,
            "dag_run_conf": {},
        }
        for attempt in range(self.busy_retries + 1):
            try:
                result: dict[str, Any] = self._call("POST", "/api/v2/backfills", body)
                return result
            except AirflowBusyError:
                # A 503 created nothing (on SQLite, Airflow refuses a backfill while its DB is locked): retry.
                if attempt == self.busy_retries:
                    raise
                time.sleep(min(self.busy_backoff_s * 2.0**attempt, 30.0))
        raise AssertionError("unreachable")

    def follow_backfill(
        self,
        backfill_id: int,
        poll_s: float = 5.0,
        timeout_s: float = 6 * 3600,
        say: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the backfill until Airflow marks it completed; return its final state."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state: dict[str, Any] = self._call("GET", f"/api/v2/backfills/{backfill_id}")
            if state.get("completed_at"):
                return state
            if say:
                say(f"backfill {backfill_id} running …")
            time.sleep(poll_s)
        raise UserError(f"backfill {backfill_id} did not complete within {timeout_s:.0f}s; follow it in the Airflow UI")

    def backfill_run_states(self, dag_id: str, start: dt.date, end: dt.date) -> dict[str, str]:
        """State of each backfill run of ``dag_id`` by partition date (UTC date of its data interval start)."""
        runs = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns?run_type=backfill&limit=1000")["dag_runs"]
        states = {}
        for run in runs:
            day = dt.date.fromisoformat(str(run["data_interval_start"])[:10])
            if start <= day <= end:
                states[day.isoformat()] = str(run["state"])
        return dict(sorted(states.items()))
