"""The soak (``bench/soak.py``) as an opt-in test: ``PRESCORE_TEST_SOAK=1`` (``PRESCORE_SOAK_SECONDS``, default 60).

Marked ``soak`` and skipped by default: it runs for minutes and needs ``wrk``. ``make reliability`` runs it for
300 s (``-m soak``, after the rest of the suite) with ``PRESCORE_RELIABILITY_OUT`` set, so its ``soak.json`` is the
one RELIABILITY.md reports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.conftest import OUT_ENV

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("PRESCORE_SOAK_SECONDS", "60"))
RSS_GROWTH_MAX_MIB = 20.0  # over the second half of the soak, after warm-up

pytestmark = [
    pytest.mark.soak,
    pytest.mark.skipif(not os.environ.get("PRESCORE_TEST_SOAK"), reason="opt-in: set PRESCORE_TEST_SOAK=1"),
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
]


@pytest.mark.timeout(SECONDS + 300)
def test_soak_loses_nothing_and_memory_stays_flat(tmp_path: Path, observe: Callable[..., None]) -> None:
    """At 80 % of the measured capacity with a publish and a rollback in the middle: every answer 2xx and
    precomputed, no socket error, both runs served around the flip, and the API's RSS flat after warm-up."""
    results = os.environ.get(OUT_ENV)  # `make reliability`: the figures go where RELIABILITY.md is built from
    out = Path(results) / "soak.json" if results else tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, "bench/soak.py", "--duration", str(SECONDS), "--json", str(out)],
                          cwd=ROOT, timeout=SECONDS + 240, capture_output=True, text=True)  # fmt: skip
    assert out.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    observe("soak_test", **{k: result[k] for k in ("errors", "rss_mib", "target_rps", "nothing_lost")})
    assert proc.returncode == 0 and result["nothing_lost"], result["errors"]
    assert result["rss_mib"]["growth_second_half"] < RSS_GROWTH_MAX_MIB, result["rss_mib"]
