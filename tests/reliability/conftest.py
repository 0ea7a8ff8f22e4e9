"""Fixtures of the fault, load and security suite, and where it writes what it observed.

- ``rt`` (tests/jobs/conftest.py) and ``home`` / ``make_settings`` / ``publish`` (tests/online/conftest.py) are
  re-exported here: the same real Redis, trained warehouse and promoted fallback model as those suites.
- ``observe``: ``observe(name, **figures)`` writes ``<PRESCORE_RELIABILITY_OUT>/<name>.json`` (the figures plus the
  test id) when that variable is set (``make reliability`` sets it; ``bench/reliability_report.py`` turns the files
  into RELIABILITY.md); without it, it does nothing and the test only asserts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.jobs.conftest import rt  # noqa: F401  (fixture re-exported for this folder)
from tests.online.conftest import fallback_template, home, make_settings, publish  # noqa: F401  (fixtures)

OUT_ENV = "PRESCORE_RELIABILITY_OUT"


@pytest.fixture
def observe(request: pytest.FixtureRequest) -> Callable[..., None]:
    def write(name: str, **figures: Any) -> None:
        out = os.environ.get(OUT_ENV)
        if not out:
            return
        Path(out).mkdir(parents=True, exist_ok=True)
        record = {"test": request.node.nodeid, **figures}
        (Path(out) / f"{name}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    return write
