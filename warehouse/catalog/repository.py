"""The run catalog (``Catalog``): model versions, score runs, publications and champion/challenger comparisons, in
SQLite (default) or PostgreSQL.

Contract:
- ``Catalog.open(url)`` connects, upgrades the schema to the newest Alembic revision, and raises
  ``CatalogError`` (with the password hidden) when the database cannot be reached.
- At most one run per (model, partition_date) is ``running`` at a time: a partial unique index enforces it in
  the database itself, so two processes cannot both start one; the loser gets ``RunConflictError``.
- Every timestamp is timezone-aware UTC.
- Retention (``jobs.retention``) removes a committed run's Parquet in three steps: ``expire_run`` turns the row into
  a tombstone (status ``expired``: no query for committed runs returns it), the files go, then ``delete_runs``
  drops the row. A crash in between leaves a tombstone that the next pass finishes; never a committed row
  naming missing files.
- A monitoring report (``upsert_monitor``) is keyed by (model, partition date): writing one again replaces it and
  its per-feature rows in one transaction (no duplicates, also when two writers race).
- A comparison (``upsert_comparison``) is keyed by (model, challenger version, partition date): writing one again
  replaces it, also when two writers race (the database's unique constraint decides, the loser updates).
- Delta runs and the drops they scored: ``warehouse.catalog.deltas`` (mixed into ``Catalog``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from warehouse.catalog.deltas import DeltaRuns
from warehouse.catalog.records import (
    ComparisonRecord,
    MonitorRecord,
    PointerRecord,
    RunRecord,
    new_run_id,
    redact,
)
from warehouse.catalog.tables import (
    ABANDON_AFTER_S,
    ABANDONED,
    COMMITTED,
    EXPIRED,
    FAILED,
    POINTER_ACTIONS,
    RUNNING,
    Comparison,
    ModelVersion,
    MonitorFeature,
    MonitorReport,
    Publication,
    ScoreRun,
    utcnow,
)
from warehouse.errors import CatalogError, RunConflictError


class Catalog(DeltaRuns):
    """Access to the catalog database. Create with ``Catalog.open(url)``; ``close()`` when done."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, migrate: bool = True, create: bool = True) -> Catalog:
        """``create=False``: a SQLite file that does not exist is a ``CatalogError`` instead of a new database (for
        readers, which never make one)."""
        try:
            parsed = make_url(url)
        except sa.exc.ArgumentError as exc:
            raise CatalogError(f"PRESCORE_CATALOG_URL {url!r} is not a database URL: {exc}") from None
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and not create and not Path(parsed.database).exists():
                raise CatalogError(f"no catalog database at {parsed.database}")
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        elif parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 5}
        try:
            engine = sa.create_engine(parsed, **kwargs)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise CatalogError(f"cannot use catalog URL {redact(url)}: {exc}") from None
        catalog = cls(engine)
        try:
            with engine.connect():
                pass
        except sa.exc.OperationalError as exc:
            engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise CatalogError(
                f"cannot reach the catalog database at {redact(url)}: {reason}. "
                "Check PRESCORE_CATALOG_URL and that the server is running."
            ) from None
        if migrate:
            catalog.migrate()
        return catalog

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision (a no-op when current)."""
        from warehouse.catalog.migrations import upgrade_to_head

        upgrade_to_head(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # ---- model versions -------------------------------------------------------------------------------
    def record_model_version(
        self,
        *,
        model: str,
        kind: str,
        version: str,
        sha256: str,
        artifact_path: str,
        features: list[str],
        metrics: dict[str, Any],
        training_window: dict[str, Any],
        created_at: dt.datetime,
    ) -> None:
        with self.session() as s:
            s.add(
                ModelVersion(
                    model=model,
                    kind=kind,
                    version=version,
                    sha256=sha256,
                    artifact_path=artifact_path,
                    features=features,
                    metrics=metrics,
                    training_window=training_window,
                    created_at=created_at,
                )
            )

    def mark_promoted(self, model: str, kind: str, version: str) -> None:
        with self.session() as s:
            row = s.scalars(sa.select(ModelVersion).filter_by(model=model, kind=kind, version=version)).one_or_none()
            if row is not None:
                row.promoted_at = utcnow()

    def model_versions(self, model: str) -> list[ModelVersion]:
        with self.session() as s:
            stmt = sa.select(ModelVersion).filter_by(model=model).order_by(ModelVersion.created_at)
            return list(s.scalars(stmt))

    def delete_model_version(self, model: str, kind: str, version: str) -> int:
        """Delete the record of one registry version (retention removes the version itself). Returns rows deleted."""
        with self.session() as s:
            result = s.execute(sa.delete(ModelVersion).filter_by(model=model, kind=kind, version=version))
            return int(result.rowcount)  # type: ignore[attr-defined]

    # ---- score runs -----------------------------------------------------------------------------------
    def start_run(
        self,
        *,
        model: str,
        model_version: str,
        partition_date: dt.date,
        device: str = "cpu",
        run_id: str | None = None,
        abandon_after_s: float = ABANDON_AFTER_S,
    ) -> str:
        """Insert a ``running`` run, or raise ``RunConflictError`` naming the run already running.

        A ``running`` row whose heartbeat is older than ``abandon_after_s`` (its process died) is marked
        failed first, so a crash never blocks the partition forever.
        """
        run_id = run_id or new_run_id(model, partition_date)
        now = utcnow()
        self.abandon_stale_runs(now, abandon_after_s, model=model, partition_date=partition_date)
        try:
            with self.session() as s:
                s.add(
                    ScoreRun(
                        run_id=run_id,
                        model=model,
                        model_version=model_version,
                        partition_date=partition_date,
                        status=RUNNING,
                        device=device,
                        timings={},
                        report={},
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            other = self.running_run(model, partition_date)
            raise RunConflictError(
                f"model {model!r} partition {partition_date} is already being scored by run "
                f"{other.run_id if other else '?'}; wait for it to finish or fail"
            ) from None
        return run_id

    def abandon_stale_runs(
        self,
        now: dt.datetime,
        after_s: float,
        *,
        model: str | None = None,
        partition_date: dt.date | None = None,
        dry_run: bool = False,
    ) -> list[RunRecord]:
        """Mark ``running`` runs whose heartbeat is more than ``after_s`` older than ``now`` as failed (their
        process died; error ``ABANDONED``, finished at ``now``), optionally of one model or partition only.
        Returns them as they are after the change (``dry_run``: as they would be; nothing is changed)."""
        with self.session() as s:
            stmt = sa.select(ScoreRun).filter_by(status=RUNNING)
            if model is not None:
                stmt = stmt.filter_by(model=model)
            if partition_date is not None:
                stmt = stmt.filter_by(partition_date=partition_date)
            stale = [row for row in s.scalars(stmt) if (now - row.heartbeat_at).total_seconds() > after_s]
            out = []
            for row in stale:
                record = RunRecord.of(row)
                if dry_run:
                    out.append(replace(record, status=FAILED, error=ABANDONED, finished_at=now))
                    continue
                row.status, row.error, row.finished_at = FAILED, ABANDONED, now
                out.append(RunRecord.of(row))
            return out

    def running_run(self, model: str, partition_date: dt.date) -> RunRecord | None:
        with self.session() as s:
            row = s.scalars(
                sa.select(ScoreRun).filter_by(model=model, partition_date=partition_date, status=RUNNING)
            ).first()
            return RunRecord.of(row) if row else None

    def heartbeat(self, run_id: str) -> None:
        with self.session() as s:
            s.execute(sa.update(ScoreRun).filter_by(run_id=run_id).values(heartbeat_at=utcnow()))

    def finish_run(self, run_id: str, *, status: str, error: str | None = None, **fields: Any) -> RunRecord:
        """Close a run as ``committed`` or ``failed`` and store its report fields."""
        if status not in (COMMITTED, FAILED):
            raise ValueError(f"finish_run status must be committed or failed, not {status!r}")
        with self.session() as s:
            row = s.get(ScoreRun, run_id)
            if row is None:
                raise CatalogError(f"unknown run {run_id!r}")
            row.status, row.error, row.finished_at = status, error, utcnow()
            for key, value in fields.items():
                setattr(row, key, value)
            return RunRecord.of(row)

    def get_run(self, run_id: str) -> RunRecord:
        with self.session() as s:
            row = s.get(ScoreRun, run_id)
            if row is None:
                raise CatalogError(f"unknown run {run_id!r}; `prescore status` lists the runs")
            return RunRecord.of(row)

    def runs(
        self,
        model: str,
        *,
        partition_date: dt.date | None = None,
        status: str | None = None,
        limit: int | None = 50,
    ) -> list[RunRecord]:
        """Newest first (``limit=None``: all of them)."""
        with self.session() as s:
            stmt = sa.select(ScoreRun).filter_by(model=model)
            if partition_date is not None:
                stmt = stmt.filter_by(partition_date=partition_date)
            if status is not None:
                stmt = stmt.filter_by(status=status)
            stmt = stmt.order_by(ScoreRun.started_at.desc())
            if limit is not None:
                stmt = stmt.limit(limit)
            return [RunRecord.of(r) for r in s.scalars(stmt)]

    def challenger_keys(self, model: str) -> list[str]:
        """The catalog models of ``model``'s challenger runs (``warehouse.rollout.challenger_key``: ``model@version``),
        of every version that ever had a run, also dropped or promoted ones."""
        with self.session() as s:
            stmt = sa.select(ScoreRun.model).where(ScoreRun.model.startswith(f"{model}@", autoescape=True)).distinct()
            return sorted(s.scalars(stmt))

    def runs_finished_before(self, status: str, before: dt.datetime) -> list[RunRecord]:
        """Runs of every model in ``status`` that finished before ``before``, oldest first."""
        with self.session() as s:
            stmt = (
                sa.select(ScoreRun)
                .filter_by(status=status)
                .where(ScoreRun.finished_at < before)
                .order_by(ScoreRun.finished_at)
            )
            return [RunRecord.of(r) for r in s.scalars(stmt)]

    def expire_run(self, run_id: str) -> bool:
        """Turn a committed run into a tombstone (status ``EXPIRED``) before its Parquet is removed. True when this
        call changed it; False when it is not committed (already expired, or never committed)."""
        with self.session() as s:
            result = s.execute(sa.update(ScoreRun).filter_by(run_id=run_id, status=COMMITTED).values(status=EXPIRED))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def delete_runs(self, run_ids: list[str], *, status: str) -> int:
        """Delete the rows of ``run_ids`` that are still in ``status`` (a row that changed meanwhile stays).
        Returns the rows deleted."""
        if not run_ids:
            return 0
        with self.session() as s:
            result = s.execute(sa.delete(ScoreRun).where(ScoreRun.run_id.in_(run_ids), ScoreRun.status == status))
            return int(result.rowcount)  # type: ignore[attr-defined]

    def latest_committed(
        self, model: str, *, before: dt.date | None = None, exclude: str | None = None
    ) -> RunRecord | None:
        with self.session() as s:
            stmt = sa.select(ScoreRun).filter_by(model=model, status=COMMITTED)
            if before is not None:
                stmt = stmt.where(ScoreRun.partition_date <= before)
            if exclude is not None:
                stmt = stmt.where(ScoreRun.run_id != exclude)
            stmt = stmt.order_by(ScoreRun.partition_date.desc(), ScoreRun.finished_at.desc()).limit(1)
            row = s.scalars(stmt).first()
            return RunRecord.of(row) if row else None

    # ---- publications ---------------------------------------------------------------------------------
    def record_publication(
        self,
        *,
        model: str,
        action: str,
        run_id: str,
        previous_run_id: str | None,
        forced: bool = False,
        detail: dict[str, Any] | None = None,
        at: dt.datetime | None = None,
    ) -> None:
        """``at``: when it happened (a pointer change: the time the store stamped on it); default now."""
        with self.session() as s:
            s.add(
                Publication(
                    model=model,
                    action=action,
                    run_id=run_id,
                    previous_run_id=previous_run_id,
                    forced=forced,
                    detail=detail or {},
                    at=at or utcnow(),
                )
            )

    def publications(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first, as plain dicts."""
        with self.session() as s:
            stmt = (
                sa.select(Publication)
                .filter_by(model=model)
                .order_by(Publication.at.desc(), Publication.id.desc())
                .limit(limit)
            )
            return [
                {
                    "action": p.action,
                    "run_id": p.run_id,
                    "previous_run_id": p.previous_run_id,
                    "forced": p.forced,
                    "detail": p.detail,
                    "at": p.at.isoformat(),
                }
                for p in s.scalars(stmt)
            ]

    def pointer_records(self, model: str, limit: int = 200) -> list[PointerRecord]:
        """The newest ``limit`` pointer changes of ``model`` (``POINTER_ACTIONS``), newest first: the first names the
        run the catalog says is live."""
        with self.session() as s:
            stmt = (
                sa.select(Publication)
                .filter_by(model=model)
                .where(Publication.action.in_(POINTER_ACTIONS))
                .order_by(Publication.at.desc(), Publication.id.desc())
                .limit(limit)
            )
            return [PointerRecord(p.model, p.action, p.run_id, p.previous_run_id, p.at) for p in s.scalars(stmt)]

    def live_pointer(self, model: str) -> PointerRecord | None:
        """The newest pointer change of ``model``: the run the catalog says is live (None: never published)."""
        records = self.pointer_records(model, limit=1)
        return records[0] if records else None

    def publication_records(self, model: str) -> list[dict[str, Any]]:
        """Every publication of ``model``, newest first, with its row ``id`` (for ``delete_publications``)."""
        with self.session() as s:
            stmt = sa.select(Publication).filter_by(model=model).order_by(Publication.at.desc(), Publication.id.desc())
            return [{"id": p.id, "model": p.model, "action": p.action, "run_id": p.run_id, "at": p.at}
                    for p in s.scalars(stmt)]  # fmt: skip

    def delete_publications(self, ids: list[int]) -> int:
        """Delete publication rows by id. Returns the rows deleted."""
        if not ids:
            return 0
        with self.session() as s:
            result = s.execute(sa.delete(Publication).where(Publication.id.in_(ids)))
            return int(result.rowcount)  # type: ignore[attr-defined]

    # ---- champion/challenger comparisons --------------------------------------------------------------
    def upsert_comparison(self, record: ComparisonRecord) -> ComparisonRecord:
        """Insert or replace the comparison of (model, challenger version, partition date); returns it as stored."""
        values = {f: getattr(record, f) for f in ComparisonRecord.__dataclass_fields__}
        key = {k: values[k] for k in ("model", "challenger_version", "partition_date")}
        for attempt in range(2):
            try:
                with self.session() as s:
                    row = s.scalars(sa.select(Comparison).filter_by(**key)).one_or_none()
                    if row is None:
                        row = Comparison(**values)
                        s.add(row)
                    else:
                        for name, value in values.items():
                            setattr(row, name, value)
                    s.flush()
                    return ComparisonRecord.of(row)
            except sa.exc.IntegrityError:
                if attempt:  # a concurrent writer inserted it first: the second pass updates its row
                    raise
        raise AssertionError("unreachable")

    def comparisons(
        self,
        model: str,
        *,
        challenger_version: str | None = None,
        partition_date: dt.date | None = None,
        limit: int | None = None,
    ) -> list[ComparisonRecord]:
        """Comparisons of ``model``, newest partition first (then by challenger version)."""
        with self.session() as s:
            stmt = sa.select(Comparison).filter_by(model=model)
            if challenger_version is not None:
                stmt = stmt.filter_by(challenger_version=challenger_version)
            if partition_date is not None:
                stmt = stmt.filter_by(partition_date=partition_date)
            stmt = stmt.order_by(Comparison.partition_date.desc(), Comparison.challenger_version)
            if limit is not None:
                stmt = stmt.limit(limit)
            return [ComparisonRecord.of(r) for r in s.scalars(stmt)]

    def delete_comparisons(
        self, model: str, *, before: dt.date | None = None, keep_versions: set[str] | None = None
    ) -> int:
        """Delete comparisons of ``model`` of partitions before ``before`` and/or of challenger versions not in
        ``keep_versions`` (retention: versions no longer challengers nor production). Returns the rows deleted."""
        if before is None and keep_versions is None:
            raise ValueError("delete_comparisons needs before or keep_versions")
        with self.session() as s:
            stmt = sa.delete(Comparison).filter_by(model=model)
            where = []
            if before is not None:
                where.append(Comparison.partition_date < before)
            if keep_versions is not None:
                where.append(Comparison.challenger_version.not_in(sorted(keep_versions)))
            result = s.execute(stmt.where(sa.or_(*where)))
            return int(result.rowcount)  # type: ignore[attr-defined]

    # ---- monitoring -----------------------------------------------------------------------------------
    def upsert_monitor(self, record: MonitorRecord) -> MonitorRecord:
        """Insert or replace the monitoring report of (model, partition date) and its features; returns it as
        stored."""
        names = [f for f in MonitorRecord.__dataclass_fields__ if f != "features"]
        values = {f: getattr(record, f) for f in names}
        values["notes"] = list(record.notes)
        key = {"model": record.model, "partition_date": record.partition_date}
        for attempt in range(2):
            try:
                with self.session() as s:
                    s.execute(sa.delete(MonitorFeature).filter_by(**key))
                    s.execute(sa.delete(MonitorReport).filter_by(**key))
                    s.flush()
                    row = MonitorReport(**values)
                    s.add(row)
                    rows = [MonitorFeature(**key, **{f: getattr(feature, f) for f in feature.__dataclass_fields__})
                            for feature in record.features]  # fmt: skip
                    s.add_all(rows)
                    s.flush()
                    return MonitorRecord.of(row, rows)
            except sa.exc.IntegrityError:
                if attempt:  # a concurrent writer inserted it first: the second pass replaces its rows
                    raise
        raise AssertionError("unreachable")

    def delete_monitor_reports(self, model: str, *, before: dt.date) -> int:
        """Delete the monitoring reports (and their features) of ``model``'s partitions before ``before``
        (retention). Returns the reports deleted."""
        with self.session() as s:
            s.execute(sa.delete(MonitorFeature).filter_by(model=model).where(MonitorFeature.partition_date < before))
            result = s.execute(sa.delete(MonitorReport).filter_by(model=model)
                               .where(MonitorReport.partition_date < before))  # fmt: skip
            return int(result.rowcount)  # type: ignore[attr-defined]

    def monitor_reports(
        self, model: str, *, partition_date: dt.date | None = None, limit: int | None = None
    ) -> list[MonitorRecord]:
        """Monitoring reports of ``model``, newest partition first, each with its features (by name)."""
        with self.session() as s:
            stmt = sa.select(MonitorReport).filter_by(model=model)
            if partition_date is not None:
                stmt = stmt.filter_by(partition_date=partition_date)
            stmt = stmt.order_by(MonitorReport.partition_date.desc())
            if limit is not None:
                stmt = stmt.limit(limit)
            out = []
            for row in s.scalars(stmt):
                features = s.scalars(sa.select(MonitorFeature).filter_by(model=model, partition_date=row.partition_date)
                                     .order_by(MonitorFeature.feature))  # fmt: skip
                out.append(MonitorRecord.of(row, list(features)))
            return out
