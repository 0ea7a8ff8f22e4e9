"""The Airflow REST client's handling of a busy Airflow, against an HTTP server on 127.0.0.1 that answers the
way Airflow 3.3 does when its SQLite metadata DB is locked (503 to POST /api/v2/backfills)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from jobs.airflow_api import AirflowAPI, AirflowBusyError
from tests.support.clock import END

LOCKED = b'{"detail":"Database is locked. Backfill creation is not supported on SQLite under concurrent access."}'


@pytest.fixture
def airflow(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """``busy``: how many backfill POSTs get a 503 before one is created; ``posts`` counts them."""
    state: dict[str, Any] = {"busy": 0, "posts": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/auth/token":
                self._send(201, b'{"access_token": "t"}')
                return
            state["posts"] += 1
            if state["posts"] <= state["busy"]:
                self._send(503, LOCKED)
            else:
                self._send(200, json.dumps({"id": 7, "dag_id": "d"}).encode())

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def test_a_backfill_refused_while_airflow_is_busy_is_retried(airflow: dict[str, Any]) -> None:
    airflow["busy"] = 2
    api = AirflowAPI(airflow["url"], "admin", "pw", busy_retries=3, busy_backoff_s=0.01)
    assert api.create_backfill("d", END, END)["id"] == 7
    assert airflow["posts"] == 3


def test_a_backfill_still_refused_after_the_retries_is_one_clear_error(airflow: dict[str, Any]) -> None:
    airflow["busy"] = 10
    api = AirflowAPI(airflow["url"], "admin", "pw", busy_retries=2, busy_backoff_s=0.01)
    with pytest.raises(AirflowBusyError, match=r"answered 503 to POST /api/v2/backfills: .*Database is locked"):
        api.create_backfill("d", END, END)
    assert airflow["posts"] == 3
