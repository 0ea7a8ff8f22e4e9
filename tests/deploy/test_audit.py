"""The dependency audit gate (`make audit`): real pip-audit against an OSV-compatible service on 127.0.0.1.

The public advisory services are not reachable from the test machines, so the service here is a small HTTP server
that answers OSV queries from a table; everything else — pip-audit, the lock export, the gate's verdict — is real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ROOT / ".ci" / "audit.py"


def _advisory(vid: str, package: str, fixed: str, alias: str | None = None) -> dict:
    return {
        "id": vid,
        "aliases": [alias] if alias else [],
        "summary": f"test advisory for {package}",
        "affected": [
            {
                "package": {"name": package, "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
            }
        ],
    }


class Advisories:
    def __init__(self) -> None:
        self.vulns: dict[tuple[str, str], list[dict]] = {}
        self.failing: set[str] = set()
        self.queries: list[tuple[str, str]] = []


@pytest.fixture
def osv() -> Iterator[tuple[str, Advisories]]:
    table = Advisories()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            key = (query["package"]["name"], query["version"])
            table.queries.append(key)
            if key[0] in table.failing:
                self.send_response(503)
                self.end_headers()
                return
            body = json.dumps({"vulns": table.vulns[key]} if key in table.vulns else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query", table
    finally:
        server.shutdown()
        server.server_close()


REQUIREMENTS = "urllib3==2.8.0\nidna==3.11\nredis==7.1.0\n"


def _audit(tmp_path: Path, url: str, *extra: str, pyproject: str = "", requirements: str = REQUIREMENTS):
    req = tmp_path / "requirements.txt"
    req.write_text(requirements)
    project = tmp_path / "pyproject.toml"
    project.write_text(pyproject)
    cmd = [sys.executable, str(AUDIT), "--service", "osv", "--osv-url", url, "--requirements", str(req),
           "--pyproject", str(project), "--timeout", "5", *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_clean_set_passes_and_every_package_was_queried(tmp_path, osv):
    url, table = osv
    done = _audit(tmp_path, url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 locked packages checked" in done.stdout
    assert sorted(table.queries) == [("idna", "3.11"), ("redis", "7.1.0"), ("urllib3", "2.8.0")]


def test_known_vulnerability_fails_naming_package_id_and_fix(tmp_path, osv):
    url, table = osv
    table.vulns[("urllib3", "2.8.0")] = [_advisory("GHSA-test-0001", "urllib3", "2.8.1", alias="CVE-2099-0001")]
    done = _audit(tmp_path, url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "VULNERABLE urllib3 2.8.0: " in done.stdout and "(fixed in 2.8.1)" in done.stdout
    assert "GHSA-test-0001" in done.stdout and "CVE-2099-0001" in done.stdout
    assert "uv lock --upgrade-package" in done.stdout


def test_accepted_vulnerability_passes_until_its_date_then_fails(tmp_path, osv):
    url, table = osv
    table.vulns[("redis", "7.1.0")] = [_advisory("GHSA-test-0002", "redis", "7.2.0", alias="CVE-2099-0002")]
    accepted = (
        "[tool.prescore.audit]\n"
        'ignore = [{ id = "CVE-2099-0002", reason = "only the cluster client is affected", until = 2027-01-31 }]\n'
    )
    before = _audit(tmp_path, url, "--today", "2027-01-31", pyproject=accepted)
    assert before.returncode == 0, before.stdout + before.stderr
    assert "accepted " in before.stdout and "GHSA-test-0002" in before.stdout
    assert "in redis 7.1.0 until 2027-01-31: only the cluster client" in before.stdout
    after = _audit(tmp_path, url, "--today", "2027-02-01", pyproject=accepted)
    assert after.returncode == 1, after.stdout + after.stderr
    assert "accepted until 2027-01-31, which has passed" in after.stdout


@pytest.mark.parametrize(
    "entry, complaint",
    [
        ('{ id = "GHSA-x", until = 2027-01-01 }', "lacks reason"),
        ('{ id = "GHSA-x", reason = "r", until = "soon" }', "is not a date"),
    ],
)
def test_an_acceptance_without_reason_or_date_is_refused(tmp_path, osv, entry, complaint):
    url, _ = osv
    done = _audit(tmp_path, url, pyproject=f"[tool.prescore.audit]\nignore = [{entry}]\n")
    assert done.returncode == 1
    assert complaint in done.stdout


def test_a_package_the_service_cannot_answer_for_is_not_counted_clean(tmp_path, osv):
    url, table = osv
    table.failing.add("idna")
    done = _audit(tmp_path, url)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "INCOMPLETE" in done.stdout


def test_unreachable_service_fails_closed(tmp_path, osv):
    url, _ = osv
    closed = url.rsplit(":", 1)[0] + ":9/v1/query"  # discard port: nothing listens
    done = _audit(tmp_path, closed)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "INCOMPLETE" in done.stdout


def test_the_lockfile_exports_to_a_set_pip_audit_can_read(tmp_path, osv):
    """Without --requirements the gate audits uv.lock itself: every locked package is queried."""
    url, table = osv
    uv = shutil.which("uv") or ROOT / ".tools" / "bin" / "uv"
    if not Path(uv).exists():
        pytest.skip("uv is not on PATH and `make install` has not put it at .tools/bin/uv")
    project = tmp_path / "pyproject.toml"
    project.write_text("")
    cmd = [sys.executable, str(AUDIT), "--service", "osv", "--osv-url", url, "--uv", str(uv),
           "--pyproject", str(project), "--timeout", "5"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    names = {name for name, _ in table.queries}
    assert {"xgboost", "redis", "fastapi", "apache-airflow-core", "pip-audit"} <= names
    locked = (ROOT / "uv.lock").read_text().count("\n[[package]]\n")
    assert len(names) == locked - 1  # every locked package (any platform) except prescore itself
