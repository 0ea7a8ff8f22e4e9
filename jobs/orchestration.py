"""What the Airflow tasks call: one function per task, each a thin wrapper over existing ``jobs`` functions.

Contract of every task function:

- arguments are plain values (model name, ``YYYY-MM-DD`` partition date, run id, flags), so a task body in
  ``dags/`` is one call with values rendered by Airflow;
- the return value is a small JSON-able dict (ids, paths, counts) for XCom — never data;
- each call builds its own ``Runtime`` from the ``PRESCORE_*`` environment and closes it;
- failures raise ``warehouse.errors`` exceptions; the DAGs fail fast (no retry) on the ones a retry cannot fix
  (``NON_RETRYABLE``) and retry everything else, which is safe because every step is idempotent per
  (model, partition) or per run id;
- a task function that returns logs ``task_summary`` of its result as its last line: model and date, run id,
  rows, seconds, where the output is.

Module import is cheap (settings and the models file only): ``dags/`` imports it at parse time to list the
models. Everything heavy (Dask, XGBoost, pyarrow, Redis, the catalog) is imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec

from warehouse.model_config import ProjectConfig, load_config
from warehouse.settings import Settings

log = logging.getLogger(__name__)

# Exceptions a retry cannot fix: the task fails at once instead of retrying with backoff. Dotted paths, so
# the DAG files do not import ``warehouse.errors`` just to name them.
NON_RETRYABLE = (
    "warehouse.errors.ContractViolationError",  # the partition breaks its contract: fix the data
    "warehouse.errors.PartitionNotFoundError",  # missing or incomplete partition: create it (prescore synth)
    "warehouse.errors.PartitionUnreadableError",  # a file of the partition is not Parquet: rewrite the partition
    "warehouse.errors.QualityGateError",  # drift above max_psi: a human decides (prescore publish --force)
    "warehouse.errors.ConfigError",  # invalid models file or settings
    "warehouse.errors.UnknownModelError",
    "warehouse.errors.RegistryError",  # missing or tampered model artifact
    "warehouse.errors.RestoreRefusedError",  # the live run's Parquet is gone: rescore (the next run tries again)
    "warehouse.errors.PromotionRefusedError",  # the gate is not met: more nightly comparisons, or --force
)
VERIFY_SAMPLE = 200
P = ParamSpec("P")
# (result key, how task_summary shows it), in the order shown; the first key of each group that is present wins
_ROWS = (
    ("rows_out", "{:,} rows"),
    ("rows", "{:,} rows"),
    ("records", "{:,} records"),
    ("checked", "{:,} online lookups checked"),
    ("train_rows", "{:,} training rows"),
    ("files", "{:,} files"),
)
_OUTPUT = ("output_path", "partition", "out_dir")


def task_summary(task: str, result: Mapping[str, Any], seconds: float) -> str:
    """The one line that ends a task's log, from the task's result: ``summary: <task> <model> <date>: run <id>,
    <n> rows, <s> s, output <path>`` (each part only when the result has it; a declined publish gives its reason)."""
    subject = " ".join(str(result[k]) for k in ("model", "date", "partition_date") if result.get(k))
    parts: list[str] = []
    if result.get("run_id"):
        parts.append(f"run {result['run_id']}" + (" (reused)" if result.get("reused") else ""))
    if result.get("published") is False:
        parts.append(str(result.get("reason", "not published")))
    elif result.get("published") is True:
        parts.append("published" + (" (already current)" if result.get("already_current") else ""))
    if isinstance(result.get("current"), Mapping) and result["current"].get("run_id"):
        parts.append(f"serving run {result['current']['run_id']}")
    parts += [fmt.format(result[key]) for key, fmt in _ROWS if isinstance(result.get(key), int)][:1]
    if isinstance(result.get("removed"), Mapping):
        parts.append(f"removed {sum(result['removed'].values()):,} items, {result.get('bytes_freed', 0):,} bytes")
    if result.get("promoted") is not None:
        parts.append(f"promoted {result['promoted'] or 'nothing'}")
    parts.append(f"{seconds:.1f} s")
    parts += [f"output {result[key]}" for key in _OUTPUT if result.get(key)][:1]
    return f"summary: {task}{' ' + subject if subject else ''}: {', '.join(parts)}"


def _summarized(task: str) -> Callable[[Callable[P, dict[str, Any]]], Callable[P, dict[str, Any]]]:
    """Log ``task_summary`` of the function's result, timed from its call, when it returns."""

    def decorate(fn: Callable[P, dict[str, Any]]) -> Callable[P, dict[str, Any]]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
            started = time.monotonic()
            result = fn(*args, **kwargs)
            log.info("%s", task_summary(task, result, time.monotonic() - started))
            return result

        return run

    return decorate


def project_config(settings: Settings | None = None) -> ProjectConfig:
    """The validated models file named by ``PRESCORE_MODELS_FILE``.

    The one read that DAG files do at parse time: a local YAML file, no database, Redis or network.
    """
    return load_config((settings or Settings()).models_file)


def partition_date(value: str | dt.date | dt.datetime) -> dt.date:
    """``YYYY-MM-DD`` (or a date, or an aware datetime, taken in UTC) → the partition date."""
    from warehouse.datasets.features import parse_date

    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return parse_date(value)


def manual_partition(schedule: str, run_after: dt.datetime) -> str:
    """The partition of a nightly run that has no data interval: in Airflow 3 a manual trigger without a logical
    date (the default of ``airflow dags trigger`` and of the REST API). It is the start date of the last interval
    of ``schedule`` that had closed by the run's ``run_after``: the interval Airflow infers for a manual run given a
    logical date, so both kinds of manual trigger score the same partition (normally yesterday's)."""
    from warehouse.errors import ConfigError
    from warehouse.schedule import last_interval

    interval = last_interval(schedule, run_after)
    if interval is None:
        raise ConfigError(f"schedule {schedule!r} has no interval that closed by {run_after:%Y-%m-%d %H:%M}: "
                          "trigger with a logical date, or score a date with prescore_rescore")  # fmt: skip
    return interval[0].date().isoformat()


# ---- nightly scoring ------------------------------------------------------------------------------------
def feature_partition_ready(model: str, day: str) -> bool:
    """True when the model's feature partition of ``day`` is complete (its ``_SUCCESS`` marker exists)."""
    from warehouse.datasets import features

    settings = Settings()
    config = project_config(settings)
    spec = config.model(model)
    fs = config.feature_set(spec.feature_set)
    directory = features.partition_dir(settings.root, spec.feature_set, partition_date(day), fs)
    ready = features.is_complete(directory, fs.success_marker)
    log.info("feature partition %s %s", directory, "is complete" if ready else "is not complete yet")
    return ready


@_summarized("validate_contract")
def validate_features(model: str, day: str) -> dict[str, Any]:
    """Check the partition against its feature-set contract; ``ContractViolationError`` lists every problem.

    The result carries the ``fingerprint`` of the input it checked (``jobs.fingerprint``), taken before the check:
    ``score`` passes it on, so the scoring job confirms it scores that input instead of validating it again.
    """
    from jobs.fingerprint import fingerprint
    from warehouse.datasets import contracts
    from warehouse.datasets import features as fstore

    settings = Settings()
    config = project_config(settings)
    spec = config.model(model)
    date = partition_date(day)
    fs = config.feature_set(spec.feature_set)
    files = fstore.partition_files(settings.root, spec.feature_set, date, fs)
    checked = fingerprint(files)
    contracts.require_valid(settings.root, spec.feature_set, date, fs)
    return {
        "model": model,
        "date": date.isoformat(),
        "feature_set": spec.feature_set,
        "partition": str(fstore.partition_dir(settings.root, spec.feature_set, date, fs)),
        "files": len(files),
        "fingerprint": checked,
    }


@_summarized("score")
def score(
    model: str, day: str, device: str = "auto", force: bool = False, validated: str | None = None
) -> dict[str, Any]:
    """Score the partition on Dask (``jobs.score.score_partition``: idempotent, reuses a committed run).

    ``validated``: the ``fingerprint`` that ``validate_features`` returned for this partition; the job then checks
    the contract only when the partition's input differs from it. ``contract`` in the result says which happened.
    """
    from jobs.runtime import open_runtime
    from jobs.score import score_partition

    with open_runtime() as rt:
        report = score_partition(rt, model, partition_date(day), device=device, force=force, validated=validated)
    keys = ("run_id", "model", "model_version", "partition_date", "output_path", "device", "cluster",
            "rows_out", "psi", "psi_against", "rows_per_s", "reused", "contract")  # fmt: skip
    return {k: getattr(report, k) for k in keys}


@_summarized("shadow")
def shadow(
    model: str, day: str, device: str = "auto", force: bool = False, validated: str | None = None
) -> dict[str, Any]:
    """Score every challenger of ``model`` on the partition and load each behind its challenger pointer
    (``jobs.shadow``). A challenger's failure is in its entry of ``challengers`` (logged), never the task's: the
    champion's publish does not wait for or depend on it."""
    from jobs.runtime import open_runtime
    from jobs.shadow import shadow as run_shadow

    with open_runtime() as rt:
        results = run_shadow(rt, model, partition_date(day), device=device, force=force, validated=validated)
    failed = [r["version"] for r in results if r["status"] == "failed"]
    return {"model": model, "date": day, "challengers": results, "failed": failed}


@_summarized("compare")
def compare(model: str, day: str) -> dict[str, Any]:
    """Compare every challenger with the champion on the partition, and again on earlier dates whose labels arrived
    since (``jobs.compare.compare_nightly``); stored in the catalog. A challenger whose run failed is a ``failed``
    comparison in the result, never the task's failure."""
    from jobs.compare import compare_nightly
    from jobs.runtime import open_runtime

    date = partition_date(day)
    with open_runtime() as rt:
        rows = compare_nightly(rt, model, date)
    failed = [r.challenger_version for r in rows if r.partition_date == date and r.status == "failed"]
    return {"model": model, "date": date.isoformat(), "comparisons": [r.to_dict() for r in rows], "failed": failed}


@_summarized("monitor")
def monitor(model: str, day: str) -> dict[str, Any]:
    """Monitor the partition (drift, realized quality, serving mix: ``jobs.monitor.monitor_nightly``), and again the
    earlier dates whose labels arrived since; stored in the catalog. ``{"monitored": False, "reason": ...}`` when
    the date has no committed run (its score failed: that task says why)."""
    from jobs.monitor import monitor_nightly
    from jobs.runtime import open_runtime

    date = partition_date(day)
    with open_runtime() as rt:
        rows = monitor_nightly(rt, model, date)
    mine = [r for r in rows if r.partition_date == date]
    out: dict[str, Any] = {"model": model, "date": date.isoformat(), "monitored": bool(mine),
                           "reports": [r.to_dict() for r in rows]}  # fmt: skip
    if not mine:
        out["reason"] = f"{model} has no committed run for {date} to monitor"
    else:
        out["drifted"] = [f.feature for f in mine[0].features if f.drifted]
        out["run_id"] = mine[0].run_id
    return out


@_summarized("publish")
def publish(model: str, run_id: str, force: bool = False) -> dict[str, Any]:
    """Verify, gate and publish a committed run (``jobs.publish.publish_run``), or decline a history run.

    Returns ``{"published": False, "reason": ...}`` without loading anything into Redis when the run's scores are
    older than the live run's (a backfill writes history, not the live store; ``publish_run`` decides); the DAG
    turns that into a skipped task. Otherwise ``{"published": True, ...PublishReport}``. ``QualityGateError``
    propagates. Safe to call again after a crash: a half-loaded namespace is reloaded, the current run is a no-op.
    """
    from jobs.publish import publish_run
    from jobs.runtime import open_runtime

    with open_runtime() as rt:
        report = publish_run(rt, model, run_id, force=force)
    if report.declined:
        return _declined(model, run_id, report.previous_run_id, report.declined)
    return {"published": True, **report.to_dict()}


def _declined(model: str, run_id: str, current_run_id: str | None, detail: str) -> dict[str, Any]:
    reason = f"not published: newer run is current ({detail}); the scores stay in Parquet as history"
    log.info("%s", reason)
    return {"published": False, "model": model, "run_id": run_id, "reason": reason, "current_run_id": current_run_id}


@_summarized("verify_online")
def verify_online(model: str, run_id: str, sample: int = VERIFY_SAMPLE) -> dict[str, Any]:
    """Read a random sample of the run through ``ScoreReader`` (what the online service uses) and compare it
    with the committed Parquet: same run id and bit-identical float32 scores. ``StoreError`` when not."""
    import numpy as np

    from jobs.runtime import open_runtime
    from warehouse.datasets.features import read_parquet
    from warehouse.datasets.score_files import require_parts
    from warehouse.errors import StoreError
    from warehouse.store import ScoreReader

    with open_runtime() as rt:
        run = rt.catalog.get_run(run_id)
        reader = ScoreReader.from_url(rt.redis_url)
        try:
            current = reader.current_run(model)
            if current is None or current.run_id != run_id:
                raise StoreError(
                    f"model {model!r} serves run {current.run_id if current else None!r}, not {run_id!r}: "
                    "another publication or a rollback happened in between; check `prescore status`"
                )
            parts = require_parts(run.output_path, f"run {run_id}")  # only the parts of its commit manifest
            if not parts:  # an empty partition: nothing to look up
                return {"model": model, "run_id": run_id, "checked": 0, "as_of": current.as_of.isoformat()}
            rng = np.random.default_rng()
            table = read_parquet(parts[int(rng.integers(len(parts)))], columns=["entity_id", "score"])
            idx = np.sort(rng.choice(table.num_rows, size=min(sample, table.num_rows), replace=False))
            ids = table.column("entity_id").take(idx).to_pylist()
            expected = table.column("score").take(idx).to_numpy().astype(np.float32)
            served = reader.get_many(model, ids)
        finally:
            reader.close()
    bad = [
        (eid, want, hit)
        for eid, want, hit in zip(ids, expected.tolist(), served, strict=True)
        if hit is None or hit.run_id != run_id or np.float32(hit.score) != np.float32(want)
    ]
    if bad:
        eid, want, hit = bad[0]
        raise StoreError(
            f"online check of run {run_id} failed: {len(bad)} of {len(ids)} sampled lookups differ from Parquet "
            f"(e.g. {eid}: served {hit}, expected {want}); roll back with `prescore rollback --model {model}`"
        )
    return {"model": model, "run_id": run_id, "checked": len(ids), "as_of": current.as_of.isoformat()}


@_summarized("retain_and_record")
def retain_and_record(model: str) -> dict[str, Any]:
    """Apply retention to the model's runs in Redis (keep the current run and ``keep_runs`` rollback targets)
    and return the store status (current run, age, retained runs) for the DAG run's record."""
    from jobs.publish import ORPHAN_AFTER_S, store_status
    from jobs.runtime import open_runtime
    from warehouse.store import ScoreStore

    with open_runtime() as rt:
        spec = rt.config.model(model)
        with ScoreStore.from_url(rt.redis_url) as store:
            cleaned = store.cleanup(model, keep_runs=spec.keep_runs, orphan_after_s=ORPHAN_AFTER_S)
        status = store_status(rt, model)
    return {"model": model, "removed_runs": dict(cleaned.removed), **status}


# ---- promotion ------------------------------------------------------------------------------------------
@_summarized("check_gate")
def promotion_gate(model: str, version: str) -> dict[str, Any]:
    """The promotion gate of challenger ``version`` (``jobs.promote.check_gate``): each check, its value and bound.
    Never fails on a gate that is not met: ``promote`` decides."""
    from jobs.promote import check_gate
    from jobs.runtime import open_runtime

    with open_runtime() as rt:
        gate = check_gate(rt, model, version)
    for check in gate.checks:
        log.info("%s %s: %s", check.name, "passed" if check.passed else "NOT MET", check.detail)
    return gate.to_dict()


@_summarized("promote")
def promote(model: str, version: str, force: bool = False) -> dict[str, Any]:
    """Promote challenger ``version`` through its gate (``jobs.promote.promote_challenger``);
    ``PromotionRefusedError`` (not retried) when a check fails and not ``force``."""
    from jobs.promote import promote_challenger
    from jobs.runtime import open_runtime

    with open_runtime() as rt:
        report = promote_challenger(rt, model, version, force=force)
    return {**report.to_dict(), "promoted": version}


# ---- reconcile ------------------------------------------------------------------------------------------
def reconcile_store() -> dict[str, Any]:
    """Restore every model whose scores Redis lost (``jobs.restore.restore_models`` with ``only_lost``: a healthy
    store costs a few Redis reads and one catalog query per model). Returns each model's status, run and seconds.
    ``RestoreRefusedError`` after every model was tried when one cannot be restored (its Parquet is gone), so the
    task fails visibly; the next scheduled run tries again."""
    from jobs.restore import restore_models
    from jobs.runtime import open_runtime
    from warehouse.errors import RestoreRefusedError

    with open_runtime() as rt:
        reports = restore_models(rt, rt.config.model_names, only_lost=True)
    for r in reports:
        if r.status != "ok":
            log.info("%s: %s (%s) in %.1f s", r.model, r.status, r.message, r.seconds)
    refused = [r for r in reports if r.status == "refused"]
    if refused:
        raise RestoreRefusedError("; ".join(r.message for r in refused))
    return {r.model: {"status": r.status, "run_id": r.run_id, "seconds": r.seconds} for r in reports}


# ---- retention ------------------------------------------------------------------------------------------
@_summarized("apply_retention")
def apply_retention(now: dt.datetime | None = None) -> dict[str, Any]:
    """Enforce every store's bound (``jobs.retention.apply_retention``) as of ``now``, by default the clock when
    the task runs (the edge that reads it). Returns the counts per store, the bytes freed and what was kept past
    its age (capped), for the DAG run's record; every removal is logged to the task log."""
    from jobs.retention import apply_retention as apply
    from jobs.runtime import open_runtime

    when = now or dt.datetime.now(dt.UTC)
    with open_runtime() as rt:
        report = apply(rt, now=when)
    for removal in report.removed:
        log.info("removed %s %s: %s", removal.store, removal.item, removal.reason)
    return {
        "now": report.now,
        "removed": report.counts(),
        "bytes_freed": report.bytes_freed,
        "kept": [f"{k.store} {k.item}: {k.reason}" for k in report.kept[:20]],
        "notes": report.notes[:20],
    }


# ---- training -------------------------------------------------------------------------------------------
@_summarized("train")
def train(model: str, end_day: str | None = None) -> dict[str, Any]:
    """Train, evaluate, register and conditionally promote (``jobs.train.train_model``); a summary per kind."""
    from jobs.runtime import open_runtime
    from jobs.train import train_model

    with open_runtime() as rt:
        report = train_model(rt, model, end_date=partition_date(end_day) if end_day else None)
    results = [
        {"kind": r.kind, "version": r.version, "auc": r.metrics.get("auc"), "promoted": r.promoted,
         "production_auc": (r.production_metrics or {}).get("auc"), "metrics": r.metrics,
         "production_metrics": r.production_metrics}
        for r in report.results
    ]  # fmt: skip
    return {
        "model": model,
        "train_dates": report.train_dates,
        "holdout_date": report.holdout_date,
        "train_rows": report.train_rows,
        "results": results,
    }


@_summarized("report")
def training_summary(trained: dict[str, Any]) -> dict[str, Any]:
    """What a training run changed: the promoted versions per kind (logged), for the DAG run's record."""
    promoted = {r["kind"]: r["version"] for r in trained["results"] if r["promoted"]}
    kept = [r["kind"] for r in trained["results"] if not r["promoted"]]
    log.info(
        "%s: promoted %s; kept production for %s. Nightly scoring uses a new primary on its next run; online "
        "readers load a new fallback on POST /v1/admin/reload",
        trained["model"], promoted or "nothing", kept or "no kind",
    )  # fmt: skip
    return {"model": trained["model"], "promoted": promoted, "kept_production": kept}


# ---- prediction log -------------------------------------------------------------------------------------
@_summarized("drain")
def drain_predictions() -> dict[str, Any]:
    """Move the online prediction log (a Redis stream) to ``$PRESCORE_HOME/prediction_logs/dt=…/*.parquet``.

    ``jobs.prediction_drain.drain_predictions`` is exactly-once and crash-safe, so a retried task is safe; a drain
    that finds another one holding the lock raises ``UserError`` (retried later by the task's retries).
    """
    from jobs.prediction_drain import LOG_DIR
    from jobs.prediction_drain import drain_predictions as drain
    from jobs.runtime import open_runtime

    with open_runtime() as rt:
        report = drain(rt.prediction_log_url, rt.home)
        out_dir = rt.home / LOG_DIR
    return {
        "entries": report.entries,
        "records": report.records,
        "files": len(report.files),
        "already_drained": report.already_drained,
        "lost_to_trimming": report.lost_to_trimming,
        "out_dir": str(out_dir),
        "last_file": str(report.files[-1]) if report.files else None,
    }
