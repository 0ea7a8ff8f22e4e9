"""The catalog's tables: model versions, score runs, publications, champion/challenger comparisons, monitoring
reports and delta runs with the delta drops they scored (SQLAlchemy models), and the run and comparison states.

Every timestamp is timezone-aware UTC (``UTCDateTime``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

RUNNING, COMMITTED, FAILED = "running", "committed", "failed"
# Publication actions that name the run the Redis pointer moved to (newest first, their newest is the live run);
# ``promote``: a challenger's run made live (``jobs.promote``), its catalog model a challenger key (``churn@<v>``).
POINTER_ACTIONS = ("publish", "rollback", "reconcile", "restore", "promote")
COMPARED = "compared"  # a comparison of two committed runs (``Comparison.status``; else FAILED, with its reason)
EXPIRED = "expired"  # a tombstone: retention is removing the run's Parquet (see warehouse.catalog.repository)
ABANDONED = "abandoned (no heartbeat)"
STAGED = "staged"  # a delta run writing its Parquet (``DeltaRun.status``; then COMMITTED or FAILED)
ABANDON_AFTER_S = 6 * 3600.0  # a running run without a heartbeat for this long is dead (longer than any job's timeout)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores UTC; always returns aware datetimes (SQLite drops the zone otherwise)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog; pass a UTC-aware datetime")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (sa.UniqueConstraint("model", "kind", "version", name="uq_model_versions"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(128), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    version: Mapped[str] = mapped_column(sa.String(64))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    artifact_path: Mapped[str] = mapped_column(sa.Text)
    features: Mapped[list[str]] = mapped_column(sa.JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    training_window: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    promoted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ScoreRun(Base):
    __tablename__ = "score_runs"
    __table_args__ = (
        sa.Index(
            "uq_score_runs_one_running",
            "model",
            "partition_date",
            unique=True,
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        ),
    )

    run_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(128), index=True)
    model_version: Mapped[str] = mapped_column(sa.String(64))
    partition_date: Mapped[dt.date] = mapped_column(sa.Date)
    status: Mapped[str] = mapped_column(sa.String(16))
    device: Mapped[str] = mapped_column(sa.String(16), default="cpu")
    rows_in: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    rows_out: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    input_fingerprint: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    output_path: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    timings: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Publication(Base):
    __tablename__ = "publications"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(sa.String(128), index=True)
    action: Mapped[str] = mapped_column(sa.String(16))  # POINTER_ACTIONS, or blocked
    run_id: Mapped[str] = mapped_column(sa.String(64))
    previous_run_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    forced: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Comparison(Base):
    """One challenger version against the champion on one partition date (``jobs.compare``): one row per
    (model, challenger_version, partition_date), replaced by a rerun. ``status`` ``compared`` or ``failed`` (the
    challenger's run failed or is missing: ``reason``). Quality columns are None until the date's labels exist."""

    __tablename__ = "comparisons"
    __table_args__ = (sa.UniqueConstraint("model", "challenger_version", "partition_date", name="uq_comparisons"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(sa.String(128), index=True)
    challenger_version: Mapped[str] = mapped_column(sa.String(64))
    partition_date: Mapped[dt.date] = mapped_column(sa.Date)
    status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    champion_version: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    champion_run_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    challenger_run_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    n_champion: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    n_challenger: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    n_joined: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    psi: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    rank_correlation: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    decision_change: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    objective: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    n_labelled: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    champion_quality: Mapped[dict[str, float] | None] = mapped_column(sa.JSON, nullable=True)
    challenger_quality: Mapped[dict[str, float] | None] = mapped_column(sa.JSON, nullable=True)
    compared_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class MonitorReport(Base):
    """What ``prescore monitor`` measured for one model on one partition date (``jobs.monitor``): one row per
    (model, partition_date), replaced with its ``monitor_features`` rows by a rerun. Drift, quality and serving
    figures are None where they could not be measured; ``notes`` says why (no baseline, no labels yet, ...)."""

    __tablename__ = "monitor_reports"
    __table_args__ = (sa.UniqueConstraint("model", "partition_date", name="uq_monitor_reports"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(sa.String(128), index=True)
    partition_date: Mapped[dt.date] = mapped_column(sa.Date)
    model_version: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    previous_run_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    drift_status: Mapped[str] = mapped_column(sa.String(32))
    n_drifted: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    score_psi_previous: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    score_psi_baseline: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    quality_status: Mapped[str] = mapped_column(sa.String(32))
    objective: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    n_labels: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    n_labels_unscored: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    published_quality: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    served_quality: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    serving_status: Mapped[str] = mapped_column(sa.String(32))
    answers: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    lost_to_trimming: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    serving: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    notes: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    monitored_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class MonitorFeature(Base):
    """The drift of one feature of a ``monitor_reports`` row against the production version's baseline."""

    __tablename__ = "monitor_features"
    __table_args__ = (sa.UniqueConstraint("model", "partition_date", "feature", name="uq_monitor_features"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(sa.String(128), index=True)
    partition_date: Mapped[dt.date] = mapped_column(sa.Date)
    feature: Mapped[str] = mapped_column(sa.String(256))
    kind: Mapped[str] = mapped_column(sa.String(16))
    psi: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    null_rate: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    baseline_null_rate: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    null_rate_change: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    unknown_share: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    drifted: Mapped[bool] = mapped_column(sa.Boolean, default=False)


# ---- delta runs (``jobs.delta``) ------------------------------------------------------------------------------------
class DeltaRun(Base):
    """One scoring of intra-day delta drops on top of the live nightly run ``base_run_id`` of ``partition_date``.
    ``staged`` while it writes, then ``committed`` (its ``delta_drops`` rows inserted in the same transaction) or
    ``failed`` (``error``). ``drop_ids`` in drop order; ``as_of``: the newest feature timestamp of its rows."""

    __tablename__ = "delta_runs"

    run_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(128), index=True)
    base_run_id: Mapped[str] = mapped_column(sa.String(64))
    partition_date: Mapped[dt.date] = mapped_column(sa.Date)
    model_version: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    drop_ids: Mapped[list[str]] = mapped_column(sa.JSON)
    rows_out: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    as_of: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    output_path: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    report: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeltaDrop(Base):
    """A delta drop a committed delta run scored: one row per (model, drop id), so no drop is scored twice (the
    unique constraint decides between two runs that race to commit the same drop)."""

    __tablename__ = "delta_drops"
    __table_args__ = (sa.UniqueConstraint("model", "drop_id", name="uq_delta_drops"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(sa.String(128), index=True)
    drop_id: Mapped[str] = mapped_column(sa.String(64))
    run_id: Mapped[str] = mapped_column(sa.String(64))
