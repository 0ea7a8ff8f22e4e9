"""A real headless Chromium (Debian package ``chromium``) that may reach 127.0.0.1 and nothing else.

- ``chromium_binary()``: the browser's path; absent, the test is skipped with the reason locally and fails in CI
  (``CI`` set), where ``.ci/run`` installs it.
- ``dump_dom(binary, url, profile)``: the page's DOM after its scripts ran (``--dump-dom`` with a virtual time
  budget, so requests the page makes after ``load`` finish first). Every host name resolves to nothing except
  127.0.0.1, and every request that does not go to 127.0.0.1 goes to a proxy on a closed port: a page that needs
  a CDN gets nothing from it, as in a closed network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

OFFLINE_FLAGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",  # the discard port: nothing listens there
    "--proxy-bypass-list=127.0.0.1",
)


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "no chromium on PATH (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must provide it (.ci/run installs it)")
    pytest.skip(reason)


def dump_dom(binary: str, url: str, profile: Path, timeout_s: float = 120.0, budget_ms: int = 15_000) -> str:
    """The DOM of ``url`` after its scripts ran, loaded with network access to 127.0.0.1 only."""
    cmd = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *OFFLINE_FLAGS, f"--virtual-time-budget={budget_ms}", "--dump-dom", url,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
