"""The I/O shell of retention: ``apply_retention`` reads each store, asks ``jobs.retention.rules`` for verdicts and
carries them out in the order and the steps the package docstring gives."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from jobs import logfiles
from jobs.airflow_services import service_logs
from jobs.prediction_drain import LOG_DIR
from jobs.retention.rules import (
    COMPARISONS,
    DAY_S,
    DELTAS,
    LEFTOVERS,
    LOGS,
    MONITOR_REPORTS,
    PREDICTION_LOGS,
    PUBLICATIONS,
    REDIS_RUNS,
    REGISTRY,
    RUN_ROWS,
    SCORES,
    VERSION_ROWS,
    Kept,
    Removal,
    RetentionReport,
    catalog_held_reasons,
    delta_run_verdicts,
    held_reasons,
    model_version_verdicts,
    prediction_log_day_verdicts,
    publication_verdicts,
    score_run_verdicts,
    unpublished_verdicts,
)
from jobs.runtime import Runtime
from jobs.serve import api_log
from warehouse.catalog import (
    ABANDON_AFTER_S,
    COMMITTED,
    EXPIRED,
    FAILED,
    POINTER_ACTIONS,
    RUNNING,
    STAGED,
    Catalog,
    DeltaRunRecord,
    RunRecord,
)
from warehouse.datasets import score_files, storage
from warehouse.datasets.storage import ObjectPath, StoragePath
from warehouse.errors import CatalogError, StoreError
from warehouse.registry import KINDS
from warehouse.rollout import split_key
from warehouse.store import ScoreStore, running_local_redis
from warehouse.store_health import expected_history

log = logging.getLogger(__name__)
REMOVING_PREFIX = ".removing-"  # a prediction-log day on its way out (out of the dt= listing)
DAY_PREFIX = "dt="


# ---- the rule for crashed writers' staging, shared with jobs.score ---------------------------------------------------
def abandoned_staging(
    catalog: Catalog, partition_dir: StoragePath, keep: StoragePath | None = None
) -> list[tuple[StoragePath, str, str]]:
    """``(directory, run_id, status)`` of the uncommitted run directories of ``partition_dir``
    (``score_files.uncommitted_runs``) whose writer is gone: the catalog does not show their run ``running``
    (failed, expired, or unknown to it). ``keep`` (the caller's own staging directory) is never listed."""
    out = []
    for path, run_id in score_files.uncommitted_runs(partition_dir):
        if keep is not None and path == keep:
            continue
        try:
            status = catalog.get_run(run_id).status
        except CatalogError:
            status = "unknown to the catalog"
        if status != RUNNING:
            out.append((path, run_id, status))
    return out


# ---- the shell -----------------------------------------------------------------------------------------------------
def apply_retention(rt: Runtime, *, now: dt.datetime, dry_run: bool = False) -> RetentionReport:
    """Enforce every bound (see the module docstring) as of ``now``; the report says what went and why.

    Raises ``StoreUnavailableError`` before removing anything when Redis cannot be reached."""
    if now.tzinfo is None:
        raise ValueError("apply_retention needs an aware `now` (UTC)")
    now = now.astimezone(dt.UTC)
    report = RetentionReport(now=now.isoformat(), dry_run=dry_run)
    if dry_run:
        report.notes.append("dry run: nothing was changed; Redis cleanup (keep_runs) is not simulated, so the runs it "
                            "would drop still protect their Parquet here")  # fmt: skip
    models = rt.config.model_names
    with ScoreStore.from_url(rt.redis_url) as store:
        held = {model: _redis_runs(rt, store, model, now, dry_run, report) for model in models}
        for model in models:  # what the catalog says is live stays too, whatever Redis still holds
            history = expected_history(rt.catalog.pointer_records(model))
            held[model] = {**catalog_held_reasons(history, rt.config.model(model).keep_runs), **held[model]}
        _run_rows(rt, now, dry_run, report)
        deltas_gone: dict[str, set[str]] = {}
        for model in models:
            gone = _score_runs(rt, store, model, held[model], now, dry_run, report)
            deltas_gone[model] = _delta_runs(rt, model, held[model], gone, now, dry_run, report)
            for key in rt.catalog.challenger_keys(model):  # challengers' runs: the same window, held alike
                _score_runs(rt, store, key, held[model], now, dry_run, report)
    for model in [*models, *(k for m in models for k in rt.catalog.challenger_keys(m))]:
        _score_leftovers(rt, model, now, dry_run, report, deltas_gone.get(model, set()))
    for model in models:
        _registry(rt, model, now, dry_run, report)
        _publications(rt, model, now, dry_run, report)
        _comparisons(rt, model, now, dry_run, report)
    _prediction_logs(rt, now, dry_run, report)
    _log_files(rt, dry_run, report)
    verb = "would remove" if dry_run else "removed"
    for store_name, count in report.counts().items():
        freed = sum(r.bytes for r in report.removed if r.store == store_name)
        log.info("retention %s %d from %s (%d bytes)", verb, count, store_name, freed)
    return report


def _redis_runs(
    rt: Runtime, store: ScoreStore, model: str, now: dt.datetime, dry_run: bool, report: RetentionReport
) -> dict[str, str]:
    """Redis retention for one model; returns what Redis holds afterwards (run id → why)."""
    from jobs.publish import ORPHAN_AFTER_S

    if not dry_run:
        cleaned = store.cleanup(model, keep_runs=rt.config.model(model).keep_runs, orphan_after_s=ORPHAN_AFTER_S)
        report.removed += [Removal(REDIS_RUNS, f"{model}/{run_id}", why) for run_id, why in cleaned.removed.items()]
    current = store.current_run(model)
    current_id = current.run_id if current else None
    runs = store.list_runs(model)
    challengers = store.challengers(model)  # loaded, never published, but behind a challenger pointer: they stay
    gone = set()
    hours = rt.settings.retention_unpublished_run_hours
    for run, why in unpublished_verdicts([r for r in runs if r.run_id not in challengers.values()], current_id, now,
                                         hours):  # fmt: skip
        if not dry_run:
            try:
                store.abort_run(model, run.run_id)
            except StoreError:  # it became current meanwhile
                report.kept.append(Kept(REDIS_RUNS, f"{model}/{run.run_id}", "published meanwhile"))
                continue
        gone.add(run.run_id)
        report.removed.append(Removal(REDIS_RUNS, f"{model}/{run.run_id}", why))
    held = held_reasons([r for r in runs if r.run_id not in gone], current_id)
    held.update({run_id: f"challenger {version}'s run (behind its challenger pointer)"
                 for version, run_id in challengers.items()})  # fmt: skip
    return held


def _run_rows(rt: Runtime, now: dt.datetime, dry_run: bool, report: RetentionReport) -> None:
    """Close runs whose process died; delete failed runs past their age (every model)."""
    for run in rt.catalog.abandon_stale_runs(now, ABANDON_AFTER_S, dry_run=dry_run):
        report.notes.append(f"run {run.run_id} ({run.model} {run.partition_date}) had no heartbeat for "
                            f"{ABANDON_AFTER_S / 3600:.0f} h: marked failed")  # fmt: skip
    days = rt.settings.retention_failed_days
    old = rt.catalog.runs_finished_before(FAILED, now - dt.timedelta(days=days))
    if not dry_run:
        rt.catalog.delete_runs([r.run_id for r in old], status=FAILED)
    for run in old:
        age = (now - (run.finished_at or run.started_at)).total_seconds() / DAY_S
        why = f"failed {age:.0f} days ago (retention_failed_days={days}): {(run.error or '')[:80]}"
        report.removed.append(Removal(RUN_ROWS, f"{run.model}/{run.run_id}", why))


def _score_runs(
    rt: Runtime,
    store: ScoreStore,
    model: str,
    held: Mapping[str, str],
    now: dt.datetime,
    dry_run: bool,
    report: RetentionReport,
) -> dict[str, str]:
    """Score-run Parquet of one model: finish interrupted removals, then remove runs past the window. Returns the
    runs removed (in a dry run: to be removed), run id → why (their delta runs go with them)."""
    gone: dict[str, str] = {}
    for run in rt.catalog.runs(model, status=EXPIRED, limit=None):
        size = _size(run.output_path)
        gone[run.run_id] = "was removed (an interrupted removal, finished)"
        if not dry_run:
            _remove_expired(rt, run)
        report.removed.append(Removal(SCORES, run.output_path or run.run_id, "finishing an interrupted removal "
                                      "(its catalog row was already a tombstone)", size))  # fmt: skip
    runs = rt.catalog.runs(model, status=COMMITTED, limit=None)
    for run, remove, why in score_run_verdicts(runs, held, now.date(), rt.settings.retention_score_days):
        item = run.output_path or run.run_id
        if remove and run.output_path and not _inside(run.output_path, rt.settings.scores_dir):
            remove, why = False, f"its output is outside this PRESCORE_HOME ({rt.settings.scores_dir})"
        if not remove:
            report.kept.append(Kept(SCORES, item, why))
            continue
        size = _size(run.output_path)
        if not dry_run:
            if store.get_run(split_key(model)[0], run.run_id) is not None:  # loaded for a publish since the snapshot
                report.kept.append(Kept(SCORES, item, "loaded into Redis meanwhile"))
                continue
            if not rt.catalog.expire_run(run.run_id):  # no longer committed: someone else changed it
                continue
            _remove_expired(rt, run)
        gone[run.run_id] = f"was removed ({why})"
        report.removed.append(Removal(SCORES, item, why, size))
    return gone


def _delta_runs(
    rt: Runtime,
    model: str,
    held: Mapping[str, str],
    gone: Mapping[str, str],
    now: dt.datetime,
    dry_run: bool,
    report: RetentionReport,
) -> set[str]:
    """Delta runs of one model (``jobs.delta``): those whose base run went (this pass, ``gone``, or before it) and
    failed ones past ``retention_failed_days``; rows first (their drops with them), then ``delta=<id>/`` and
    ``.delta-staging-<id>/``. Returns the run ids removed (in a dry run: to be removed)."""
    if not dry_run:
        for run_id in rt.catalog.abandon_stale_delta_runs(model, now=now, after_s=ABANDON_AFTER_S):
            report.notes.append(f"delta run {run_id} of {model} had no heartbeat for {ABANDON_AFTER_S / 3600:.0f} h: "
                                "marked failed")  # fmt: skip
    deltas = rt.catalog.delta_runs(model)
    bases = dict(gone)
    for base_id in {d.base_run_id for d in deltas} - set(bases) - set(held):
        try:
            status = rt.catalog.get_run(base_id).status
        except CatalogError:
            status = None
        if status is None or status == EXPIRED:
            bases[base_id] = "is no longer in the catalog" if status is None else "is being removed (a tombstone)"
    days = rt.settings.retention_failed_days
    verdicts = [(run, why) for run, remove, why in delta_run_verdicts(deltas, bases, held, now, days) if remove]
    paths = {run.run_id: _delta_paths(rt, model, run) for run, _ in verdicts}
    for run, why in verdicts:
        item = f"{model}/{run.run_id} (delta over {run.base_run_id})"
        report.removed.append(Removal(DELTAS, item, why, sum(_size(p) for p in paths[run.run_id])))
    if dry_run or not verdicts:
        return set(paths)
    rt.catalog.delete_delta_runs(list(paths))  # rows first: from then on nothing finds the files
    for run, _ in verdicts:
        for path in paths[run.run_id]:
            score_files.remove_run(path)
        _drop_if_empty(paths[run.run_id][0].parent)
    return set(paths)


def _delta_paths(rt: Runtime, model: str, run: DeltaRunRecord) -> list[StoragePath]:
    """Where a delta run may have left files: ``delta=<id>/`` and ``.delta-staging-<id>/`` of its partition, and
    its recorded output when that differs (only under this ``PRESCORE_HOME``)."""
    part_dir = score_files.partition_of(rt.settings.scores_dir, model, run.partition_date)
    paths = [score_files.delta_dir(part_dir, run.run_id), score_files.delta_staging_dir(part_dir, run.run_id)]
    if run.output_path and _inside(run.output_path, rt.settings.scores_dir):
        output = storage.as_path(run.output_path)
        if str(output) not in {str(p) for p in paths}:
            paths.append(output)
    return paths


def _remove_expired(rt: Runtime, run: RunRecord) -> None:
    """Steps 2 and 3 of a score run's removal (see the module docstring): files, then the tombstone row."""
    if run.output_path and _inside(run.output_path, rt.settings.scores_dir):
        path = storage.as_path(run.output_path)
        score_files.remove_run(path)
        _drop_if_empty(path.parent)
    rt.catalog.delete_runs([run.run_id], status=EXPIRED)


def _score_leftovers(
    rt: Runtime, model: str, now: dt.datetime, dry_run: bool, report: RetentionReport, deltas_gone: set[str]
) -> None:
    hours = rt.settings.retention_leftover_hours
    model_dir = rt.settings.scores_dir / model
    if not model_dir.is_dir():
        return
    for part_dir in sorted(p for p in model_dir.iterdir() if p.name.startswith(DAY_PREFIX)):
        for path, run_id, status in abandoned_staging(rt.catalog, part_dir):
            age_h = _age_h(path, now)
            if age_h is None or age_h <= hours:
                continue
            why = f"left by run {run_id} ({status}), {age_h:.0f} h old (retention_leftover_hours={hours:g})"
            report.removed.append(Removal(LEFTOVERS, str(path), why, _size(path)))
            if not dry_run:
                storage.rmtree(path)
        for path, run_id, status in _abandoned_delta_dirs(rt.catalog, part_dir):
            age_h = _age_h(path, now)
            if run_id in deltas_gone or age_h is None or age_h <= hours:
                continue
            why = f"left by delta run {run_id} ({status}), {age_h:.0f} h old (retention_leftover_hours={hours:g})"
            report.removed.append(Removal(LEFTOVERS, str(path), why, _size(path)))
            if not dry_run:
                score_files.remove_run(path)
        if not dry_run:
            _drop_if_empty(part_dir)


def _abandoned_delta_dirs(catalog: Catalog, part_dir: StoragePath) -> list[tuple[StoragePath, str, str]]:
    """``(directory, run_id, status)`` of the delta directories of ``part_dir`` nothing will use: staging of a run
    that is not staged, and ``delta=<id>/`` of a run the catalog does not show staged or committed (unknown: a
    removal that crashed after the rows, or a failed run on object storage)."""
    found = [*part_dir.glob(f"{score_files.DELTA_PREFIX}*"), *part_dir.glob(f"{score_files.DELTA_STAGING_PREFIX}*")]
    out = []
    for path in sorted(found, key=str):
        staging = path.name.startswith(score_files.DELTA_STAGING_PREFIX)
        prefix = score_files.DELTA_STAGING_PREFIX if staging else score_files.DELTA_PREFIX
        run_id = path.name.removeprefix(prefix)
        try:
            status = catalog.get_delta_run(run_id).status
        except CatalogError:
            status = "unknown to the catalog"
        if status != STAGED and (staging or status != COMMITTED):
            out.append((path, run_id, status))
    return out


def _registry(rt: Runtime, model: str, now: dt.datetime, dry_run: bool, report: RetentionReport) -> None:
    keep, hours = rt.settings.retention_model_versions, rt.settings.retention_leftover_hours
    running = {r.model_version: f"used by running score run {r.run_id}"
               for r in rt.catalog.runs(model, status=RUNNING, limit=None)}  # fmt: skip
    # Records before listings: training registers a version, then records it, so every record read here names a
    # version that the listing below shows unless it is really gone.
    rows = {(row.kind, row.version) for row in rt.catalog.model_versions(model)}
    for kind in KINDS:
        versions = rt.registry.versions(model, kind)
        production = rt.registry.production_version(model, kind)
        challengers = {v: "a challenger (scored in shadow)" for v in rt.registry.challengers(model)}
        in_use = {**running, **challengers} if kind == "primary" else {}
        for version, remove, why in model_version_verdicts(versions, production, keep, in_use):
            item = f"{model}/{kind}/{version}"
            if not remove:
                report.kept.append(Kept(REGISTRY, item, why))
                continue
            size = _size(rt.registry.kind_dir(model, kind) / version)
            if not dry_run:
                rt.catalog.delete_model_version(model, kind, version)  # the record first, then the version
                rt.registry.remove_version(model, kind, version)
            report.removed.append(Removal(REGISTRY, item, why, size))
            if (kind, version) in rows:
                report.removed.append(Removal(VERSION_ROWS, item, "its registry version was removed"))
        for row_kind, version in sorted(rows):
            if row_kind == kind and version not in versions:  # the record of a version deleted by other means
                if not dry_run:
                    rt.catalog.delete_model_version(model, kind, version)
                report.removed.append(Removal(VERSION_ROWS, f"{model}/{kind}/{version}", "no such registry version"))
        for path in rt.registry.leftovers(model, kind):
            age_h = _age_h(path, now)
            if age_h is None or age_h <= hours:
                continue
            why = f"left by an interrupted register or removal, {age_h:.0f} h old (retention_leftover_hours={hours:g})"
            report.removed.append(Removal(LEFTOVERS, str(path), why, _size(path)))
            if not dry_run:
                _remove_path(path)


def _publications(rt: Runtime, model: str, now: dt.datetime, dry_run: bool, report: RetentionReport) -> None:
    s = rt.settings
    verdicts = publication_verdicts(rt.catalog.publication_records(model), now, s.retention_failed_days,
                                    s.retention_publication_days, POINTER_ACTIONS)  # fmt: skip
    doomed = [row for row, remove, _ in verdicts if remove]
    if not dry_run:
        rt.catalog.delete_publications([int(row["id"]) for row in doomed])
    for row, remove, why in verdicts:
        item = f"{model}/{row['action']}/{row['run_id']}@{row['at'].isoformat()}"
        if remove:
            report.removed.append(Removal(PUBLICATIONS, item, why))
        else:
            report.kept.append(Kept(PUBLICATIONS, item, why))


def _comparisons(rt: Runtime, model: str, now: dt.datetime, dry_run: bool, report: RetentionReport) -> None:
    """Champion/challenger comparisons (``jobs.compare``) and monitoring reports (``jobs.monitor``) of partitions
    older than the publication window."""
    days = rt.settings.retention_publication_days
    before = now.date() - dt.timedelta(days=days)
    old = [c for c in rt.catalog.comparisons(model) if c.partition_date < before]
    if old and not dry_run:
        rt.catalog.delete_comparisons(model, before=before)
    why = f"compared more than {days} days ago (retention_publication_days={days})"
    report.removed += [Removal(COMPARISONS, f"{model}/{c.challenger_version}/{c.partition_date}", why) for c in old]
    reports = [r for r in rt.catalog.monitor_reports(model) if r.partition_date < before]
    if reports and not dry_run:
        rt.catalog.delete_monitor_reports(model, before=before)
    why = f"monitored more than {days} days ago (retention_publication_days={days})"
    report.removed += [Removal(MONITOR_REPORTS, f"{model}/{r.partition_date}", why) for r in reports]


def _prediction_logs(rt: Runtime, now: dt.datetime, dry_run: bool, report: RetentionReport) -> None:
    root = rt.home / LOG_DIR
    if not root.is_dir():
        return
    days: dict[dt.date, StoragePath] = {}
    for path in root.iterdir():
        if path.name.startswith(REMOVING_PREFIX):  # an interrupted removal: already out of the listing
            report.removed.append(Removal(PREDICTION_LOGS, str(path), "finishing an interrupted removal", _size(path)))
            if not dry_run:
                storage.rmtree(path)
            continue
        try:
            days[dt.date.fromisoformat(path.name.removeprefix(DAY_PREFIX))] = path
        except ValueError:
            continue  # not a day directory of the drain: not ours
    keep = rt.settings.retention_prediction_log_days
    for day, remove, why in prediction_log_day_verdicts(list(days), now.date(), keep):
        if not remove:
            report.kept.append(Kept(PREDICTION_LOGS, str(days[day]), why))
            continue
        report.removed.append(Removal(PREDICTION_LOGS, str(days[day]), why, _size(days[day])))
        if not dry_run:
            _remove_day(days[day])
    hours = rt.settings.retention_leftover_hours
    for tmp in root.glob(f"{DAY_PREFIX}*/.*.tmp"):  # the drain's temp files (a drain killed mid-write)
        age_h = _age_h(tmp, now)
        if age_h is not None and age_h > hours:
            why = f"temp file of an interrupted drain, {age_h:.0f} h old (retention_leftover_hours={hours:g})"
            report.removed.append(Removal(LEFTOVERS, str(tmp), why, _size(tmp)))
            if not dry_run:
                tmp.unlink(missing_ok=True)


def _remove_day(path: StoragePath) -> None:
    if isinstance(path, ObjectPath):
        storage.rmtree(path)
        return
    doomed = path.with_name(f"{REMOVING_PREFIX}{path.name}")
    os.rename(path, doomed)  # out of the dt= listing in one step
    storage.rmtree(doomed)


def _log_files(rt: Runtime, dry_run: bool, report: RetentionReport) -> None:
    files = [api_log(rt.local_dir), *service_logs(rt.local_dir)]
    if not rt.settings.home_is_remote:
        embedded = running_local_redis(rt.settings.home_dir)
        if embedded is not None:
            files.append(Path(embedded.workdir) / "redis.log")
    max_bytes, backups = rt.settings.log_max_bytes, rt.settings.log_backups
    for path in files:
        size = logfiles.needs_rotation(path, max_bytes)
        if size is None:
            continue
        oldest = logfiles.backup(path, backups) if backups else path
        dropped = _size(oldest) if backups else size
        if not dry_run:
            logfiles.rotate(path, max_bytes, backups)
        why = f"{size} bytes, over log_max_mb={rt.settings.log_max_mb}: rotated ({backups} backups kept)"
        report.removed.append(Removal(LOGS, str(path), why, dropped))


# ---- file helpers --------------------------------------------------------------------------------------------------
def _inside(path: str | StoragePath, root: StoragePath) -> bool:
    target = storage.as_path(path)
    if isinstance(root, ObjectPath) or isinstance(target, ObjectPath):
        return str(target).startswith(str(root).rstrip("/") + "/")
    return target.resolve().is_relative_to(root.resolve())


def _drop_if_empty(directory: StoragePath) -> None:
    if isinstance(directory, Path):
        with contextlib.suppress(OSError):  # not empty (or gone): nothing to do
            directory.rmdir()


def _remove_path(path: StoragePath) -> None:
    if isinstance(path, Path) and path.is_file():
        path.unlink(missing_ok=True)
    else:
        storage.rmtree(path)


def _size(path: str | StoragePath | None) -> int:
    """Bytes under ``path`` (a file or a directory tree); 0 when it is gone."""
    if path is None:
        return 0
    target = storage.as_path(path)
    try:
        if isinstance(target, ObjectPath):
            return int(target.fs.du(target.key))
        if target.is_file():
            return target.stat().st_size
        return sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return 0


def _modified_at(path: StoragePath) -> dt.datetime | None:
    """The newest modification time of ``path`` and what lies directly in it (object storage: of every object
    under it); None when there is nothing."""
    if isinstance(path, ObjectPath):
        stamps = []
        found = path.fs.find(path.key, detail=True)
        for info in found.values() if isinstance(found, dict) else []:
            stamp = info.get("LastModified") or info.get("mtime") or info.get("created")
            if isinstance(stamp, dt.datetime):
                stamps.append(stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC))
            elif isinstance(stamp, int | float):
                stamps.append(dt.datetime.fromtimestamp(stamp, dt.UTC))
        return max(stamps) if stamps else None
    try:
        times = [path.stat().st_mtime]
        if path.is_dir():
            times += [child.stat().st_mtime for child in path.iterdir()]
    except FileNotFoundError:
        return None
    return dt.datetime.fromtimestamp(max(times), dt.UTC)


def _age_h(path: StoragePath, now: dt.datetime) -> float | None:
    modified = _modified_at(path)
    return None if modified is None else (now - modified).total_seconds() / 3600
