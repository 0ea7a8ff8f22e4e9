"""A real headless Chromium (Debian package ``chromium``) that may reach 127.0.0.1 and nothing else.

- ``chromium_binary()``: the browser's path; absent, the test is skipped with the reason locally and fails in CI
  (``CI`` set), where ``.ci/run`` installs it.
- ``dump_dom(binary, url, profile)``: the page's DOM after its scripts ran (``--dump-dom`` with a virtual time
  budget, so requests the page makes after ``load`` finish first). Every host name resolves to nothing except
  127.0.0.1, and every request that does not go to 127.0.0.1 goes to a proxy on a closed port: a page that needs
  a CDN gets nothing from it, as in a closed network.
- ``console_messages(binary, url, profile)``: the DOM and what the page wrote to its console (uncaught errors
  included), from Chromium's log on stderr, loaded the same way.
- ``screenshot(binary, url, out, profile)``: a PNG of the page, loaded the same way.
"""

from __future__ import annotations

import os
import re
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


_BASE = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")  # fmt: skip
_CONSOLE = re.compile(r":INFO:CONSOLE[^\]]*\] (.*)$")


def console_messages(
    binary: str, url: str, profile: Path, timeout_s: float = 120.0, budget_ms: int = 5_000
) -> tuple[str, list[str]]:
    """The DOM of ``url`` after its scripts ran and the page's console messages (``"text", source: URL (line)``),
    loaded with network access to 127.0.0.1 only."""
    cmd = [binary, *_BASE, f"--user-data-dir={profile}", *OFFLINE_FLAGS, "--enable-logging=stderr", "--v=0",
           f"--virtual-time-budget={budget_ms}", "--dump-dom", url]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, [m.group(1) for line in proc.stderr.splitlines() if (m := _CONSOLE.search(line))]


def screenshot(
    binary: str, url: str, out: Path, profile: Path, size: tuple[int, int] = (900, 1600), timeout_s: float = 120.0
) -> None:
    """A PNG of ``url`` (``size``: the window, CSS pixels) at ``out``, loaded with network access to 127.0.0.1 only."""
    cmd = [binary, *_BASE, f"--user-data-dir={profile}", *OFFLINE_FLAGS, "--hide-scrollbars",
           f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=3000", f"--screenshot={out}", url]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-3000:]
