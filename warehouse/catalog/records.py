"""Read-only copies of catalog rows (safe after the session closes), and the helpers that name runs and URLs."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from warehouse.catalog.tables import Comparison, ScoreRun, utcnow


@dataclass(frozen=True)
class PointerRecord:
    """A publication that moved (or restored) the Redis pointer: which run it named and when (``at``, UTC: the
    time of the pointer change itself, as the store stamped it)."""

    model: str
    action: str
    run_id: str
    previous_run_id: str | None
    at: dt.datetime


@dataclass(frozen=True)
class RunRecord:
    """A read-only copy of a score run row (safe to use after the session closes)."""

    run_id: str
    model: str
    model_version: str
    partition_date: dt.date
    status: str
    device: str
    rows_in: int | None
    rows_out: int | None
    input_fingerprint: str | None
    output_path: str | None
    timings: dict[str, Any]
    report: dict[str, Any]
    error: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, row: ScoreRun) -> RunRecord:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ComparisonRecord:
    """A read-only copy of a ``comparisons`` row (``jobs.compare``), also what ``Catalog.upsert_comparison`` takes.

    ``status`` ``compared`` (both runs committed: the counts, ``psi``, ``rank_correlation`` and, with thresholds,
    ``decision_change`` are set) or ``failed`` (``reason``). ``champion_quality`` / ``challenger_quality``: the realized
    metrics on the labelled joined entities under ``objective`` (``auc``, ``logloss`` | ``rmse``, ``mae``), None
    until the date's labels exist."""

    model: str
    challenger_version: str
    partition_date: dt.date
    status: str
    compared_at: dt.datetime
    reason: str | None = None
    champion_version: str | None = None
    champion_run_id: str | None = None
    challenger_run_id: str | None = None
    n_champion: int | None = None
    n_challenger: int | None = None
    n_joined: int | None = None
    psi: float | None = None
    rank_correlation: float | None = None
    decision_change: float | None = None
    objective: str | None = None
    n_labelled: int | None = None
    champion_quality: dict[str, float] | None = None
    challenger_quality: dict[str, float] | None = None

    @classmethod
    def of(cls, row: Comparison) -> ComparisonRecord:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: dates and times as ISO text."""
        out = asdict(self)
        out["partition_date"] = self.partition_date.isoformat()
        out["compared_at"] = self.compared_at.isoformat()
        return out


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


def new_run_id(model: str, partition_date: dt.date) -> str:
    return f"{partition_date:%Y%m%d}-{utcnow():%H%M%S}-{uuid.uuid4().hex[:8]}"
