"""Read-only copies of catalog rows (safe after the session closes), and the helpers that name runs and URLs."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from warehouse.catalog.tables import Comparison, DeltaRun, MonitorFeature, MonitorReport, ScoreRun, utcnow


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


@dataclass(frozen=True)
class MonitorFeatureRecord:
    """A read-only copy of a ``monitor_features`` row: one feature's drift against the production baseline."""

    feature: str
    kind: str
    psi: float | None = None
    null_rate: float | None = None
    baseline_null_rate: float | None = None
    null_rate_change: float | None = None
    unknown_share: float | None = None
    drifted: bool = False

    @classmethod
    def of(cls, row: MonitorFeature) -> MonitorFeatureRecord:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class MonitorRecord:
    """A read-only copy of a ``monitor_reports`` row (``jobs.monitor``) with its features, also what
    ``Catalog.upsert_monitor`` takes. ``*_status`` say whether a part was measured (``measured``) or why not
    (``unavailable``, ``no labels yet``, ``no log``, ``error``; ``notes`` the details)."""

    model: str
    partition_date: dt.date
    monitored_at: dt.datetime
    drift_status: str
    quality_status: str
    serving_status: str
    model_version: str | None = None
    run_id: str | None = None
    previous_run_id: str | None = None
    n_drifted: int | None = None
    score_psi_previous: float | None = None
    score_psi_baseline: float | None = None
    objective: str | None = None
    n_labels: int | None = None
    n_labels_unscored: int | None = None
    published_quality: dict[str, Any] | None = None
    served_quality: dict[str, Any] | None = None
    answers: int | None = None
    lost_to_trimming: int | None = None
    serving: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    features: tuple[MonitorFeatureRecord, ...] = ()

    @classmethod
    def of(cls, row: MonitorReport, features: list[MonitorFeature]) -> MonitorRecord:
        names = [f for f in cls.__dataclass_fields__ if f != "features"]
        return cls(**{f: getattr(row, f) for f in names},
                   features=tuple(MonitorFeatureRecord.of(r) for r in features))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: dates and times as ISO text."""
        out = asdict(self)
        out["partition_date"] = self.partition_date.isoformat()
        out["monitored_at"] = self.monitored_at.isoformat()
        out["features"] = [asdict(f) for f in self.features]
        return out


@dataclass(frozen=True)
class DeltaRunRecord:
    """A read-only copy of a ``delta_runs`` row: what publishing a committed delta run as an overlay of its base run
    needs (``base_run_id``, ``drop_ids`` in drop order, ``rows_out``, ``as_of``, ``output_path``: its scores
    Parquet, a committed run directory of ``warehouse.datasets.score_files``)."""

    run_id: str
    model: str
    base_run_id: str
    partition_date: dt.date
    model_version: str
    status: str
    drop_ids: list[str]
    rows_out: int | None
    as_of: dt.datetime | None
    output_path: str | None
    report: dict[str, Any]
    error: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, row: DeltaRun) -> DeltaRunRecord:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


def new_run_id(model: str, partition_date: dt.date) -> str:
    return f"{partition_date:%Y%m%d}-{utcnow():%H%M%S}-{uuid.uuid4().hex[:8]}"
