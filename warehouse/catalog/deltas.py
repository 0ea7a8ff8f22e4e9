"""The catalog's delta runs (``jobs.delta``): the scorings of intra-day delta drops and the drops each one scored.

Contract:
- ``start_delta_run`` records a ``staged`` run that claims nothing: a run that dies while staged (a killed job)
  blocks no drop, and a rerun scores the same drops again under a new run id.
- ``commit_delta_run`` marks the run ``committed`` and inserts one ``delta_drops`` row per drop in the same
  transaction. The unique (model, drop id) constraint makes a drop scored at most once: when another run committed
  one of the drops first, nothing changes and ``RunConflictError`` names that run.
- ``fail_delta_run`` marks a staged run ``failed``; ``abandon_stale_delta_runs`` marks runs staged longer than a bound
  failed (their process died).
- ``delete_delta_runs`` (retention) deletes runs and the ``delta_drops`` rows of their drops in one transaction,
  before their Parquet goes: from then on nothing finds those files (a crash leaves directories no row names,
  which the next retention pass removes).
- Only committed delta runs are visible (``delta_runs(status=COMMITTED)``, ``scored_drops``): readers of delta
  Parquet find it through the catalog, never by listing directories.
- Every time is given by the caller (``at``, UTC-aware): the job's clock decides, not this module.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from warehouse.catalog.records import DeltaRunRecord
from warehouse.catalog.tables import ABANDONED, COMMITTED, FAILED, STAGED, DeltaDrop, DeltaRun
from warehouse.errors import CatalogError, RunConflictError


class DeltaRuns:
    """The delta-run methods of ``Catalog`` (mixed into it; ``session`` is the catalog's)."""

    def session(self) -> AbstractContextManager[Session]:
        raise NotImplementedError  # Catalog.session

    def start_delta_run(
        self,
        *,
        run_id: str,
        model: str,
        base_run_id: str,
        partition_date: dt.date,
        model_version: str,
        drop_ids: list[str],
        at: dt.datetime,
    ) -> DeltaRunRecord:
        """Record a ``staged`` delta run of ``drop_ids`` (in drop order) on top of ``base_run_id``."""
        with self.session() as s:
            row = DeltaRun(
                run_id=run_id, model=model, base_run_id=base_run_id, partition_date=partition_date,
                model_version=model_version, status=STAGED, drop_ids=list(drop_ids), report={}, started_at=at,
            )  # fmt: skip
            s.add(row)
            s.flush()
            return DeltaRunRecord.of(row)

    def commit_delta_run(
        self, run_id: str, *, rows_out: int, as_of: dt.datetime | None, output_path: str, report: dict[str, Any],
        at: dt.datetime,
    ) -> DeltaRunRecord:  # fmt: skip
        """Mark the staged run committed and claim its drops, in one transaction; ``RunConflictError`` (nothing
        changed) when another run committed one of them first."""
        try:
            with self.session() as s:
                row = s.get(DeltaRun, run_id)
                if row is None or row.status != STAGED:
                    raise CatalogError(f"delta run {run_id!r} is not staged ({row.status if row else 'unknown'})")
                row.status, row.rows_out, row.as_of, row.output_path = COMMITTED, rows_out, as_of, output_path
                row.report, row.finished_at = report, at
                s.add_all([DeltaDrop(model=row.model, drop_id=d, run_id=run_id) for d in row.drop_ids])
                s.flush()
                return DeltaRunRecord.of(row)
        except sa.exc.IntegrityError:
            record = self.get_delta_run(run_id)
            owners = self.scored_drops(record.model)
            taken = {d: owners[d] for d in record.drop_ids if d in owners}
            raise RunConflictError(
                f"delta drops of run {run_id} were committed meanwhile by another delta run "
                f"({', '.join(f'{d} by {r}' for d, r in taken.items())}); nothing of {run_id} was committed"
            ) from None

    def fail_delta_run(self, run_id: str, *, error: str, at: dt.datetime) -> None:
        """Mark a staged delta run failed with ``error`` (a committed or failed run is left as it is)."""
        with self.session() as s:
            s.execute(sa.update(DeltaRun).filter_by(run_id=run_id, status=STAGED)
                      .values(status=FAILED, error=error[:2000], finished_at=at))  # fmt: skip

    def abandon_stale_delta_runs(self, model: str, *, now: dt.datetime, after_s: float) -> list[str]:
        """Mark ``model``'s delta runs staged for more than ``after_s`` before ``now`` failed (their process died);
        returns their run ids."""
        cutoff = now - dt.timedelta(seconds=after_s)
        with self.session() as s:
            stmt = sa.select(DeltaRun.run_id).filter_by(model=model, status=STAGED).where(DeltaRun.started_at < cutoff)
            stale = list(s.scalars(stmt))
            if stale:
                s.execute(sa.update(DeltaRun).where(DeltaRun.run_id.in_(stale))
                          .values(status=FAILED, error=ABANDONED, finished_at=now))  # fmt: skip
            return stale

    def delete_delta_runs(self, run_ids: list[str]) -> int:
        """Delete the delta runs ``run_ids`` that are not staged, with their ``delta_drops`` rows, in one transaction
        (a run staged meanwhile stays). Returns the runs deleted."""
        if not run_ids:
            return 0
        with self.session() as s:
            doomed = list(s.scalars(sa.select(DeltaRun.run_id).where(DeltaRun.run_id.in_(run_ids),
                                                                     DeltaRun.status != STAGED)))  # fmt: skip
            if not doomed:
                return 0
            s.execute(sa.delete(DeltaDrop).where(DeltaDrop.run_id.in_(doomed)))
            result = s.execute(sa.delete(DeltaRun).where(DeltaRun.run_id.in_(doomed)))
            return int(result.rowcount)  # type: ignore[attr-defined]

    def get_delta_run(self, run_id: str) -> DeltaRunRecord:
        with self.session() as s:
            row = s.get(DeltaRun, run_id)
            if row is None:
                raise CatalogError(f"unknown delta run {run_id!r}")
            return DeltaRunRecord.of(row)

    def delta_runs(
        self, model: str, *, status: str | None = None, partition_date: dt.date | None = None
    ) -> list[DeltaRunRecord]:
        """``model``'s delta runs, oldest first (the order their overlays apply in)."""
        with self.session() as s:
            stmt = sa.select(DeltaRun).filter_by(model=model)
            if status is not None:
                stmt = stmt.filter_by(status=status)
            if partition_date is not None:
                stmt = stmt.filter_by(partition_date=partition_date)
            stmt = stmt.order_by(DeltaRun.started_at, DeltaRun.run_id)
            return [DeltaRunRecord.of(r) for r in s.scalars(stmt)]

    def scored_drops(self, model: str) -> dict[str, str]:
        """Drop id → the committed delta run that scored it, for every drop of ``model`` scored so far."""
        with self.session() as s:
            rows = s.execute(sa.select(DeltaDrop.drop_id, DeltaDrop.run_id).filter_by(model=model))
            return {drop_id: run_id for drop_id, run_id in rows}
