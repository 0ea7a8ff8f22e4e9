"""The rules of retention, pure: what goes and what stays, decided from plain data (no I/O), and the report.

``jobs.retention.passes`` gathers the data (Redis, the catalog, the files) and carries the verdicts out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from warehouse.catalog import FAILED, STAGED, DeltaRunRecord, RunRecord
from warehouse.store import RunInfo, RunState

REDIS_RUNS = "redis.runs"
SCORES = "scores"
LEFTOVERS = "leftovers"
RUN_ROWS = "catalog.score_runs"
PUBLICATIONS = "catalog.publications"
COMPARISONS = "catalog.comparisons"
MONITOR_REPORTS = "catalog.monitor_reports"
VERSION_ROWS = "catalog.model_versions"
REGISTRY = "registry"
PREDICTION_LOGS = "prediction_logs"
LOGS = "logs"
DELTAS = "scores.deltas"
STORES = (REDIS_RUNS, SCORES, DELTAS, LEFTOVERS, RUN_ROWS, PUBLICATIONS, VERSION_ROWS, REGISTRY, PREDICTION_LOGS, LOGS)
DAY_S = 86_400.0


@dataclass(frozen=True)
class Removal:
    """One thing removed (in a dry run: to be removed): its store, what it is, why, and the bytes it held."""

    store: str
    item: str
    reason: str
    bytes: int = 0


@dataclass(frozen=True)
class Kept:
    """Something past its age that stays, and why (live run, rollback target, production version, ...)."""

    store: str
    item: str
    reason: str


@dataclass
class RetentionReport:
    """What one pass removed and kept; ``counts`` per store (what the DAG and the logs show)."""

    now: str
    dry_run: bool
    removed: list[Removal] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {s: n for s in STORES if (n := sum(1 for r in self.removed if r.store == s))}

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes for r in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts(), "bytes_freed": self.bytes_freed}


# ---- pure rules ----------------------------------------------------------------------------------------------------
def held_reasons(runs: Sequence[RunInfo], current: str | None) -> dict[str, str]:
    """Run id → why Redis holds it, for every run of one model in the store (these keep their Parquet)."""
    why = {
        RunState.PUBLISHED: "live run (current in Redis)",
        RunState.RETIRED: "rollback target (retained in Redis)",
        RunState.LOADED: "loaded in Redis for a publish",
        RunState.LOADING: "being loaded into Redis",
    }
    held = {r.run_id: why[r.state] for r in runs}
    if current is not None:
        held[current] = why[RunState.PUBLISHED]
    return held


def catalog_held_reasons(history: Sequence[str], keep_runs: int) -> dict[str, str]:
    """Run id → why the catalog holds it, from the published history its pointer records imply (newest first,
    ``warehouse.store_health.expected_history``): the live run and its ``keep_runs`` rollback targets keep their
    Parquet even when Redis lost them, so ``prescore restore`` can reload them."""
    held = {run_id: "rollback target per the catalog (restore reloads it)" for run_id in history[1 : keep_runs + 1]}
    if history:
        held[history[0]] = "live run per the catalog (restore reloads it when Redis lost it)"
    return held


def unpublished_verdicts(
    runs: Sequence[RunInfo], current: str | None, now: dt.datetime, max_age_h: float
) -> list[tuple[RunInfo, str]]:
    """Runs of one model to unload from Redis: verified (``loaded``) but never published, loaded more than
    ``max_age_h`` hours before ``now``, and not current."""
    out = []
    for run in runs:
        age_h = (now - run.created_at).total_seconds() / 3600
        if run.state is RunState.LOADED and run.run_id != current and age_h > max_age_h:
            out.append((run, f"loaded {age_h:.0f} h ago and never published (retention_unpublished_run_hours="
                             f"{max_age_h:g}); a publish loads it again from Parquet"))  # fmt: skip
    return out


def score_run_verdicts(
    runs: Sequence[RunRecord], held: Mapping[str, str], today: dt.date, keep_days: int
) -> list[tuple[RunRecord, bool, str]]:
    """``(run, remove, reason)`` for the committed runs of one model whose partition is more than ``keep_days``
    before ``today`` (younger ones are not listed: they stay). Kept anyway: a run Redis holds (``held``: run id →
    why) and the model's newest committed run; the others lose their Parquet."""
    if not runs:
        return []
    newest = max(runs, key=lambda r: (r.partition_date, r.finished_at or r.started_at))
    out = []
    for run in runs:
        age = (today - run.partition_date).days
        if age <= keep_days:
            continue
        if run.run_id in held:
            out.append((run, False, held[run.run_id]))
        elif run.run_id == newest.run_id:
            out.append((run, False, "the model's newest committed run"))
        else:
            out.append((run, True, f"partition {run.partition_date} is {age} days old (retention_score_days="
                                   f"{keep_days})"))  # fmt: skip
    return out


def delta_run_verdicts(
    deltas: Sequence[DeltaRunRecord],
    gone_bases: Mapping[str, str],
    held: Mapping[str, str],
    now: dt.datetime,
    failed_days: int,
) -> list[tuple[DeltaRunRecord, bool, str]]:
    """``(delta run, remove, reason)`` for the delta runs of one model that leave or that stay past their age. A
    delta run goes with its base run (``gone_bases``: base run id → why it is gone or going), whatever its status;
    a failed delta run (a scoring that failed or was abandoned: no scores, no drops claimed) goes
    ``failed_days`` after it ended, whatever its base. Never listed: a delta run of a held base run (``held``: the
    live run, rollback targets, ...) that did not fail, and a staged one (its writer may be at work; it is marked
    failed once abandoned)."""
    out = []
    for run in deltas:
        if run.status == STAGED or (run.base_run_id in held and run.status != FAILED):
            continue  # a writer may be at work; delta runs of the live run (or of a rollback target) stay with it
        if run.base_run_id in gone_bases:
            out.append((run, True, f"its base run {run.base_run_id} {gone_bases[run.base_run_id]}"))
        elif run.status == FAILED:
            age = (now - (run.finished_at or run.started_at)).total_seconds() / DAY_S
            if age > failed_days:
                out.append((run, True, f"failed {age:.0f} days ago (retention_failed_days={failed_days}): "
                                       f"{(run.error or '')[:80]}"))  # fmt: skip
    return out


def publication_verdicts(
    rows: Sequence[Mapping[str, Any]],
    now: dt.datetime,
    failed_days: int,
    publication_days: int,
    pointer_actions: Sequence[str],
) -> list[tuple[Mapping[str, Any], bool, str]]:
    """``(row, remove, reason)`` for the publication rows of one model (newest first) past their age: pointer
    records (``pointer_actions``) after ``publication_days``, the others (blocked publishes) after
    ``failed_days``. The newest pointer record always stays: ``reconcile_pointer`` compares it with Redis."""
    newest_pointer = next((r for r in rows if r["action"] in pointer_actions), None)
    out = []
    for row in rows:
        pointer = row["action"] in pointer_actions
        days, setting = (publication_days, "publication") if pointer else (failed_days, "failed")
        age = (now - row["at"]).total_seconds() / DAY_S
        if age <= days:
            continue
        if row is newest_pointer:
            out.append((row, False, "the model's newest pointer record (reconcile compares it with Redis)"))
        else:
            out.append((row, True, f"{row['action']} record {age:.0f} days old (retention_{setting}_days={days})"))
    return out


def model_version_verdicts(
    versions: Sequence[str], production: str | None, keep: int, in_use: Mapping[str, str]
) -> list[tuple[str, bool, str]]:
    """``(version, remove, reason)`` for the registry versions of one model and kind (names sort by creation
    time) beyond the newest ``keep`` non-production ones. Kept anyway: the production version and a version in
    use (``in_use``: version → why)."""
    others = [v for v in sorted(versions) if v != production]
    recent = set(others[-keep:]) if keep > 0 else set()
    out: list[tuple[str, bool, str]] = []
    if production is not None and production in versions and sum(v > production for v in others) >= keep:
        out.append((production, False, "production version"))
    for version in others:
        if version in recent:
            continue
        if version in in_use:
            out.append((version, False, in_use[version]))
        else:
            out.append((version, True, f"older than the newest {keep} non-production versions "
                                       f"(retention_model_versions={keep})"))  # fmt: skip
    return out


def prediction_log_day_verdicts(
    days: Sequence[dt.date], today: dt.date, keep_days: int
) -> list[tuple[dt.date, bool, str]]:
    """``(day, remove, reason)`` for the prediction-log days more than ``keep_days`` before ``today``. The newest
    day always stays: it holds the drain's watermark (its highest entry id), without which entries drained but
    not yet deleted from the stream would be written twice."""
    if not days:
        return []
    newest = max(days)
    out = []
    for day in sorted(days):
        age = (today - day).days
        if age <= keep_days:
            continue
        if day == newest:
            out.append((day, False, "the newest day (holds the drain's watermark)"))
        else:
            out.append((day, True, f"{age} days old (retention_prediction_log_days={keep_days})"))
    return out
