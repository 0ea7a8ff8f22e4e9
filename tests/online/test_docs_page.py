"""``/docs`` in a real headless Chromium that can reach 127.0.0.1 and nothing else, as in a closed network."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.openapi.docs import get_swagger_ui_html

from online.app import TAGS, create_app
from online.settings import OnlineSettings
from tests.support.browser import chromium_binary, dump_dom
from warehouse.store.local_server import free_port

pytestmark = pytest.mark.slow


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f}s: {log.read_text()[-3000:]}")


@pytest.fixture
def api(home: Path, redis_url: str, tmp_path: Path) -> Iterator[str]:
    """The online app under a real uvicorn on 127.0.0.1 (its own process); its base URL."""
    port = free_port()
    env = {**os.environ, "PRESCORE_HOME": str(home), "PRESCORE_REDIS_URL": redis_url}
    log = tmp_path / "uvicorn.log"
    cmd = [sys.executable, "-m", "uvicorn", "online.app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", proc, log)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def cdn_docs(tmp_path: Path) -> Iterator[str]:
    """FastAPI's stock Swagger UI page (assets on cdn.jsdelivr.net) and this app's OpenAPI document, served from
    127.0.0.1: what ``/docs`` was before the assets came with the app."""
    page = get_swagger_ui_html(openapi_url="/openapi.json", title="stock").body
    spec = json.dumps(create_app(OnlineSettings(redis_url="redis://127.0.0.1:1/0")).openapi()).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, kind = (spec, "application/json") if self.path == "/openapi.json" else (page, "text/html")
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(tag, operationId, path) of every documented operation."""
    return [(op["tags"][0], op["operationId"], path) for path, ops in spec["paths"].items() for op in ops.values()]


def test_docs_render_every_operation_under_its_tag_with_no_network(api: str, tmp_path: Path) -> None:
    """Swagger UI's script and stylesheet come from the app itself: with every host but 127.0.0.1 unreachable,
    /docs renders each operation of the OpenAPI document, grouped under the scores, models and operations tags
    (no "default" group)."""
    browser = chromium_binary()
    with urllib.request.urlopen(f"{api}/openapi.json", timeout=5) as response:
        spec = json.loads(response.read())
    ops = operations(spec)
    assert {tag for tag, _, _ in ops} == {t["name"] for t in TAGS} == {"scores", "models", "operations"}

    dom = dump_dom(browser, f"{api}/docs", tmp_path / "profile")
    assert "cdn.jsdelivr.net" not in dom
    for tag in ("scores", "models", "operations"):
        assert f'data-tag="{tag}"' in dom, tag
    assert 'data-tag="default"' not in dom
    for tag, operation_id, path in ops:
        assert f'id="operations-{tag}-{operation_id}"' in dom, (tag, operation_id)
        assert f'data-path="{path}"' in dom, path


def test_the_stock_cdn_page_stays_blank_in_the_same_browser(cdn_docs: str, tmp_path: Path) -> None:
    """The same browser, flags and OpenAPI document with FastAPI's stock page, whose assets are on the CDN: no
    operation renders. The network block is real, so the test above shows the app's own assets at work."""
    browser = chromium_binary()
    dom = dump_dom(browser, f"{cdn_docs}/docs", tmp_path / "profile")
    assert "cdn.jsdelivr.net" in dom  # the stock page was loaded ...
    assert "opblock" not in dom and "data-path=" not in dom  # ... and Swagger UI never ran
