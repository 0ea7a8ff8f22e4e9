"""Date-range backfills through the same per-partition function the nightly DAG uses.

Contract:
- Every date in ``[start, end]`` is scored by ``score_partition`` on ONE Dask cluster, one partition at a time
  per slot (``max_parallel`` slots), so memory stays bounded by a partition whatever the range.
- A date already committed with the same model version and input is skipped (unless ``force``), which makes
  a backfill resumable: interrupt it (Ctrl-C / SIGTERM: the partition in flight is rolled back, nothing
  half-committed), run it again, and it continues where it stopped.
- A date being scored by another process (an overlapping backfill) is refused for this run and reported as
  ``busy``; it is never scored twice at once.
- Missing feature partitions stop the backfill before any work, listing them, unless ``skip_missing``.
- Publishing: ``latest`` publishes only the newest date of the range, and only when it is newer than the
  current published run (history never overwrites the live store); ``none`` publishes nothing.
- Challengers (``jobs.shadow``): each date the champion scored is scored for every challenger too, on the same
  cluster (so a new challenger gets the past dates its promotion gate compares); with ``latest``, the newest date's
  challenger runs are loaded behind their challenger pointers. A challenger's failure is reported in its date's
  ``challengers`` and never fails the date.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from jobs.cluster import open_cluster, resolve_device
from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition
from jobs.shadow import publish_challengers, score_challengers
from warehouse.datasets import features as fstore
from warehouse.errors import PrescoreError, QualityGateError, RunConflictError, UserError

log = logging.getLogger(__name__)
PublishMode = Literal["latest", "none"]


@dataclass
class DateResult:
    date: str
    status: str  # scored | skipped | busy | missing | failed
    run_id: str | None = None
    rows: int = 0
    seconds: float = 0.0
    error: str | None = None
    challengers: list[dict[str, Any]] = field(default_factory=list)  # ``jobs.shadow.score_challengers`` results


@dataclass
class BackfillReport:
    model: str
    start: str
    end: str
    dates: list[DateResult] = field(default_factory=list)
    published: dict[str, Any] | None = None
    publish_note: str | None = None
    challengers_published: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.dates:
            out[d.status] = out.get(d.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts()}


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if start > end:
        raise UserError(f"--start {start} is after --end {end}; swap them")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C in the main thread, so the partition in flight is rolled back cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def backfill(
    rt: Runtime,
    model: str,
    start: dt.date,
    end: dt.date,
    publish: PublishMode = "latest",
    force: bool = False,
    max_parallel: int = 1,
    device: str = "auto",
    skip_missing: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillReport:
    """Score every date of the range (see module docstring) and return what happened to each."""
    spec = rt.config.model(model)
    if max_parallel < 1:
        raise UserError(f"--max-parallel must be >= 1, got {max_parallel}")
    if publish not in ("latest", "none"):
        raise UserError(f"--publish must be latest or none, not {publish!r}")
    days = date_range(start, end)
    available = set(fstore.available_dates(rt.home, spec.feature_set, rt.config.feature_set(spec.feature_set)))
    missing = [d for d in days if d not in available]
    if missing and not skip_missing:
        listed = ", ".join(d.isoformat() for d in missing[:20]) + (" …" if len(missing) > 20 else "")
        raise UserError(
            f"no feature partition for {len(missing)} of {len(days)} dates of {spec.feature_set}: {listed}; "
            "create them, or pass --skip-missing to score the others"
        )
    report = BackfillReport(model=model, start=start.isoformat(), end=end.isoformat())
    results: dict[dt.date, DateResult] = {d: DateResult(d.isoformat(), "missing") for d in missing}
    todo = [d for d in days if d not in missing]
    t0 = time.perf_counter()
    done = len(missing)
    dev = resolve_device(device)

    def one(day: dt.date, cluster: Any) -> DateResult:
        t = time.perf_counter()
        try:
            run = score_partition(rt, model, day, device=dev, force=force, cluster=cluster)
        except RunConflictError as exc:
            return DateResult(day.isoformat(), "busy", error=str(exc))
        except PrescoreError as exc:
            return DateResult(day.isoformat(), "failed", error=str(exc))
        status = "skipped" if run.reused else "scored"
        log.info("%s %s: %s run %s, %s rows", model, day, status, run.run_id, f"{run.rows_out:,}")
        try:
            shadowed = score_challengers(rt, model, day, device=dev, force=force, cluster=cluster)
        except PrescoreError as exc:
            shadowed = [{"status": "failed", "stage": "score", "error": str(exc)}]
        return DateResult(day.isoformat(), status, run.run_id, run.rows_out, round(time.perf_counter() - t, 2),
                          challengers=shadowed)  # fmt: skip

    with sigterm_as_interrupt(), open_cluster(rt.settings, dev) as cluster:
        if progress:
            progress(done, len(days))
        with ThreadPoolExecutor(max_workers=max_parallel) as pool:
            for day, result in zip(todo, pool.map(lambda d: one(d, cluster), todo), strict=True):
                results[day] = result
                done += 1
                if progress:
                    progress(done, len(days))
    report.dates = [results[d] for d in days]
    if publish == "latest":
        _publish_latest(rt, model, days[-1], results.get(days[-1]), report)
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


def _publish_latest(
    rt: Runtime, model: str, newest: dt.date, result: DateResult | None, report: BackfillReport
) -> None:
    if result is None or result.run_id is None or result.status not in ("scored", "skipped"):
        report.publish_note = f"not published: the newest date {newest} was not scored"
        return
    try:
        published = publish_run(rt, model, result.run_id)
    except QualityGateError as exc:
        report.publish_note = f"not published: {exc}"
        return
    if published.declined:
        report.publish_note = f"not published: the current run is newer than {newest} ({published.declined})"
    else:
        report.published = published.to_dict()
    report.challengers_published = publish_challengers(rt, model, result.challengers)
