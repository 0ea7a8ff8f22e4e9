"""``prescore monitor``: how a model did on one partition date — drift, realized quality, serving — persisted.

``monitor_date(rt, model, day)`` measures, for the model's champion run of ``day`` (``jobs.compare.champion_run``:
the newest committed run that was published, else the newest committed one; none is a ``UserError``, one line):

1. **Feature drift** of ``day``'s feature partition (the one that run scored, read whole, row group by row group)
   against the production primary version's baseline (``warehouse.registry.Registry.baseline``, ``jobs.profile``):
   per feature the PSI, the null rate and its change, and for category features the share of values the model does
   not know. A version without a baseline (registered before baselines existed) gives ``drift_status``
   ``unavailable`` and no figures — never zeros. **Score drift**: the PSI of the run's scores against the previous
   published run (the newest pointer change to a run of an earlier date: ``jobs.scoring.run_psi`` over the runs'
   reports) and against the baseline's score distribution.
2. **Realized quality** when the label partition of ``day`` exists (``warehouse.datasets.features``); otherwise
   ``quality_status`` ``no labels yet`` and nothing else is affected. The labels must keep their contract (an entity
   id column and a numeric ``label`` column, no null or non-finite label, labels the objective allows —
   ``warehouse.objectives.check_labels`` — and each entity once); a partition that breaks it gives
   ``quality_status`` ``error`` with a note naming the partition and the problem, and every other figure is still
   computed (the monitor is not refused: drift and serving do not depend on labels). Quality is measured twice:
   - ``published_quality``: the run's scores joined with the labels on entity id;
   - ``served_quality``: per answer source (precomputed, fallback, default), what the API answered on UTC day
     ``day`` (the drained prediction log, ``<home>/prediction_logs/dt=day/``, answers of this model, either rollout
     variant) joined with the labels: every answer counts once (an entity asked twice counts twice), so a fallback
     much worse than the precomputed scores shows up.
   Metrics by objective (``jobs.score_metrics``): binary — AUC, log loss, reliability in 10 bins and the expected
   calibration error (the last three for probabilities only); otherwise RMSE, MAE and bias. Labels of entities the
   run never scored are counted (``n_labels_unscored``), not joined.
3. **Serving mix** from the same log: per hour (UTC) and in all, the share of answers that were precomputed (fresh),
   stale (precomputed, older than ``staleness.max_age_s`` by the run's ``as_of``), fallback and default, and the
   miss rate (answers without a precomputed score: fallback or default). Answers the stream trimmed before a drain
   reached them are missing from the log; the drain records each such gap (``jobs.prediction_drain``) and
   ``lost_to_trimming`` sums the gaps that touch ``day`` (a gap spanning days counts on each: an upper bound). No log
   for ``day``: ``serving_status`` ``no log``.

The result is one ``monitor_reports`` row and one ``monitor_features`` row per feature (``Catalog.upsert_monitor``):
a rerun of a date replaces them. ``monitor_range`` runs ``monitor_date`` over consecutive dates (``--days N``);
``monitor_nightly`` (the nightly DAG's ``monitor`` task) monitors the night's date and again every earlier one whose
labels arrived since.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import profile, score_metrics, scoring
from jobs.compare import champion_run, objective_of
from jobs.prediction_drain import GAP_GLOB, LOG_DIR
from jobs.runtime import Runtime
from warehouse.catalog import MonitorFeatureRecord, MonitorRecord, RunRecord, utcnow
from warehouse.datasets import features as fstore
from warehouse.datasets.score_files import read_run
from warehouse.datasets.storage import StoragePath
from warehouse.errors import CatalogError, PartitionNotFoundError, RegistryError, UserError
from warehouse.objectives import check_labels, is_probability
from warehouse.prediction_stream import parse_entry_id

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]
MEASURED, UNAVAILABLE, NO_LABELS, NO_LOG, ERROR = "measured", "unavailable", "no labels yet", "no log", "error"
SOURCES = ("precomputed", "fallback", "default")


class LabelContractError(UserError):
    """A label partition that breaks its contract (module docstring, step 2)."""


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


# ---- drift ---------------------------------------------------------------------------------------------------
def partition_profile(rt: Runtime, model: str, day: dt.date, baseline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The profile of ``day``'s feature partition over the baseline's features (row group by row group)."""
    spec = rt.config.model(model)
    fs = rt.config.feature_set(spec.feature_set)
    entries: dict[str, Any] = baseline.get("features") or {}
    names = list(entries)
    known = {n: e.get("known") for n, e in entries.items() if e.get("kind") == "category"}
    builder = profile.ProfileBuilder(names, known)
    for chunk in fstore.iter_partition(rt.home, spec.feature_set, day, columns=names, spec=fs):
        builder.add(chunk)
    return builder.profile()


def previous_published(rt: Runtime, model: str, day: dt.date) -> RunRecord | None:
    """The newest run of a date before ``day`` that a pointer change made live."""
    seen: set[str] = set()
    for pointer in rt.catalog.pointer_records(model):
        if pointer.run_id in seen:
            continue
        seen.add(pointer.run_id)
        try:
            run = rt.catalog.get_run(pointer.run_id)
        except CatalogError:
            continue  # removed by retention
        if run.partition_date < day and run.status == "committed":
            return run
    return None


# ---- labels and quality --------------------------------------------------------------------------------------
def read_checked_labels(rt: Runtime, feature_set: str, day: dt.date, objective: str) -> pa.Table:
    """``entity_id`` (string) and ``label`` (float64) of ``day``'s label partition; ``LabelContractError`` naming
    the partition when it breaks its contract."""
    where = fstore.label_partition_dir(rt.home, feature_set, day)
    try:
        table = fstore.read_labels(rt.home, feature_set, day)
    except (PartitionNotFoundError, OSError, pa.ArrowException) as exc:
        raise LabelContractError(f"label partition {where} cannot be read: {exc}") from None
    if fstore.LABEL_COLUMN not in table.column_names or table.num_columns < 2:
        raise LabelContractError(f"label partition {where} has columns {table.column_names}: it needs an entity id "
                                 f"column first and a {fstore.LABEL_COLUMN!r} column")  # fmt: skip
    ids, labels = table.column(0), table.column(fstore.LABEL_COLUMN)
    if not (pa.types.is_integer(labels.type) or pa.types.is_floating(labels.type) or pa.types.is_boolean(labels.type)):
        raise LabelContractError(f"label partition {where}: {fstore.LABEL_COLUMN!r} is {labels.type}, not numeric")
    if labels.null_count or ids.null_count:
        raise LabelContractError(f"label partition {where} has {labels.null_count} null labels and {ids.null_count} "
                                 "null entity ids")  # fmt: skip
    if pa.types.is_integer(ids.type):  # a lake's int64 ids are served (and scored) as their decimal text
        ids = ids.cast(pa.string())
    y = labels.cast(pa.float64())
    problem = check_labels(y.to_numpy(), objective, what=f"label partition {where}")
    if problem:
        raise LabelContractError(problem)
    if pc.count_distinct(ids).as_py() != len(ids):
        raise LabelContractError(f"label partition {where} lists {len(ids) - pc.count_distinct(ids).as_py()} entity "
                                 "ids more than once")  # fmt: skip
    return pa.table({"entity_id": ids, "label": y})


def measure(objective: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """The monitor's metrics of ``scores`` on ``labels`` (module docstring, step 2), with their row count."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    out: dict[str, Any] = {"rows": len(y)}
    if not len(y):
        return out
    metrics = score_metrics.quality(objective, y, s)
    out.update({k: round(v, 6) for k, v in metrics.items()})
    if score_metrics.is_binary(objective):
        if is_probability(objective):
            out["calibration"] = score_metrics.calibration(y, s)
            out["ece"] = out["calibration"].get("ece")
    else:
        out["bias"] = _rounded(score_metrics.bias(y, s))
    return out


# ---- the prediction log --------------------------------------------------------------------------------------
def read_log(rt: Runtime, model: str, day: dt.date) -> pa.Table | None:
    """The drained answers of ``model`` on UTC day ``day``; None when the day has no log files."""
    directory = rt.home / LOG_DIR / f"dt={day.isoformat()}"
    files: list[StoragePath] = (
        sorted(directory.glob("part-*.parquet"), key=lambda p: p.name) if directory.is_dir() else []
    )
    if not files:
        return None
    columns = ["entity_id", "model", "run_id", "source", "score", "ts"]
    table = pa.concat_tables(fstore.read_parquet(f, columns) for f in files)
    return table.filter(pc.equal(table.column("model"), model))


def lost_answers(root: StoragePath, day: dt.date) -> int:
    """Answers trimmed before a drain whose gap touches ``day`` (``jobs.prediction_drain``'s gap files)."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000
    end = start + 86_400_000
    lost = 0
    for path in root.glob(GAP_GLOB):
        try:
            doc = json.loads(path.read_text())
            after = parse_entry_id(doc["after"])[0] if doc.get("after") else None
            before = parse_entry_id(doc["before"])[0] if doc.get("before") else None
        except (ValueError, KeyError, OSError):
            continue
        if (after is None or after < end) and (before is None or before >= start):
            lost += int(doc.get("lost", 0))
    return lost


def _run_as_of(rt: Runtime, run_ids: list[str]) -> dict[str, float]:
    out = {}
    for run_id in run_ids:
        try:
            run = rt.catalog.get_run(run_id)
            table = read_run(run.output_path or "", columns=["as_of"])
            latest = pc.max(table.column("as_of")).as_py()
        except (CatalogError, PartitionNotFoundError, OSError, pa.ArrowException):
            continue
        if latest is not None:
            out[run_id] = latest.timestamp() if isinstance(latest, dt.datetime) else float(latest)
    return out


def serving_mix(rt: Runtime, model: str, answers: pa.Table) -> dict[str, Any]:
    """Shares of precomputed, stale, fallback and default answers and the miss rate, in all and per UTC hour."""
    spec = rt.config.model(model)
    source = np.asarray(answers.column("source").to_pylist(), dtype=object)
    ts = answers.column("ts").cast(pa.int64()).to_numpy() / 1e6  # µs → s
    run_ids = answers.column("run_id").to_pylist()
    as_of = _run_as_of(rt, sorted({r for r, s in zip(run_ids, source, strict=True) if r and s == "precomputed"}))
    ages = np.asarray([ts[i] - as_of[r] if r in as_of else np.nan for i, r in enumerate(run_ids)], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        stale = (source == "precomputed") & (ages > spec.staleness.max_age_s)
    hours = ((ts % 86_400) // 3600).astype(np.int64)

    def shares(mask: np.ndarray) -> dict[str, Any]:
        n = int(mask.sum())
        if not n:
            return {"answers": 0}
        counts = {s: int(((source == s) & mask).sum()) for s in SOURCES}
        n_stale = int((stale & mask).sum())
        out: dict[str, Any] = {"answers": n}
        out["precomputed"] = round((counts["precomputed"] - n_stale) / n, 6)
        out["stale"] = round(n_stale / n, 6)
        out["fallback"] = round(counts["fallback"] / n, 6)
        out["default"] = round(counts["default"] / n, 6)
        out["miss_rate"] = round((counts["fallback"] + counts["default"]) / n, 6)
        return out

    everything = np.ones(len(source), dtype=bool)
    return {"all": shares(everything),
            "by_hour": {f"{h:02d}": shares(hours == h) for h in sorted(set(hours.tolist()))},
            "stale_known": len(as_of) > 0 or not bool((source == "precomputed").any())}  # fmt: skip


# ---- the report ----------------------------------------------------------------------------------------------
def monitor_date(rt: Runtime, model: str, day: dt.date, clock: Clock = utcnow) -> MonitorRecord:
    """Monitor ``model`` on ``day`` (module docstring) and store the report; returns it as stored."""
    spec = rt.config.model(model)
    run = champion_run(rt, model, day)
    if run is None:
        raise UserError(f"{model} has no committed run for {day} to monitor; score the date first "
                        f"(prescore score --model {model} --date {day})")  # fmt: skip
    version = rt.registry.production_version(model, "primary") or run.model_version
    notes: list[str] = []
    if version != run.model_version:
        notes.append(f"the run of {day} was scored by {run.model_version}; drift is measured against production "
                     f"{version}'s baseline")  # fmt: skip
    fields: dict[str, Any] = {"model_version": version, "run_id": run.run_id}

    # 1. drift
    try:
        base = rt.registry.baseline(model, "primary", version)
    except RegistryError as exc:
        base = None
        notes.append(f"drift unavailable: {exc}")
    features: list[MonitorFeatureRecord] = []
    if base is None:
        drift_status = UNAVAILABLE
        if not any(n.startswith("drift unavailable") for n in notes):
            notes.append(f"drift unavailable: {model} {version} has no baseline (registered before baselines; "
                         "retrain or register it again to get one)")  # fmt: skip
    else:
        try:
            drifts = profile.drift(base, partition_profile(rt, model, day, base))
            features = [MonitorFeatureRecord(feature=name, kind=d["kind"], psi=d["psi"], null_rate=d["null_rate"],
                                             baseline_null_rate=d["baseline_null_rate"],
                                             null_rate_change=d["null_rate_change"], unknown_share=d["unknown_share"],
                                             drifted=d["drifted"]) for name, d in drifts.items()]  # fmt: skip
            drift_status = MEASURED
            fields["n_drifted"] = sum(f.drifted for f in features)
            for name, d in drifts.items():
                if d["drifted"]:
                    notes.append(f"feature {name} drifted: {', '.join(d['reasons'])}")
        except (PartitionNotFoundError, KeyError) as exc:
            drift_status = ERROR
            notes.append(f"feature drift not measured: {exc}")
        score_q = (base.get("score") or {}).get("quantiles")
        if score_q:
            fields["score_psi_baseline"] = _rounded(scoring.run_psi({"quantiles": score_q}, run.report))
    previous = previous_published(rt, model, day)
    if previous is not None:
        fields["previous_run_id"] = previous.run_id
        fields["score_psi_previous"] = _rounded(scoring.run_psi(previous.report, run.report))

    # 2. quality
    objective = objective_of(rt, model, version)
    fields["objective"] = objective
    quality_status = NO_LABELS
    labels = None
    if day in fstore.available_label_dates(rt.home, spec.feature_set):
        try:
            labels = read_checked_labels(rt, spec.feature_set, day, objective)
        except LabelContractError as exc:
            quality_status = ERROR
            notes.append(f"quality not measured: {exc}")
    answers = read_log(rt, model, day)
    if labels is not None:
        quality_status = MEASURED
        scores = read_run(run.output_path or "", columns=["entity_id", "score"])
        joined = labels.join(scores, "entity_id", join_type="inner")
        fields["n_labels"] = labels.num_rows
        fields["n_labels_unscored"] = labels.num_rows - joined.num_rows
        fields["published_quality"] = measure(objective, joined.column("label").to_numpy(),
                                              joined.column("score").to_numpy())  # fmt: skip
        if answers is not None and answers.num_rows:
            served = answers.select(["entity_id", "source", "score"]).join(labels, "entity_id", join_type="inner")
            fields["served_quality"] = {
                s: measure(objective, part.column("label").to_numpy(), part.column("score").to_numpy())
                for s in SOURCES if (part := served.filter(pc.equal(served.column("source"), s))).num_rows
            }  # fmt: skip

    # 3. serving
    serving_status = NO_LOG
    fields["lost_to_trimming"] = lost_answers(rt.home / LOG_DIR, day)
    if answers is not None:
        serving_status = MEASURED
        fields["answers"] = answers.num_rows
        fields["serving"] = serving_mix(rt, model, answers)
    if fields["lost_to_trimming"]:
        notes.append(f"{fields['lost_to_trimming']} answers were trimmed from the prediction log before a drain "
                     f"reached them (a gap touching {day}): serving and served quality miss them")  # fmt: skip

    record = MonitorRecord(model=model, partition_date=day, monitored_at=clock(), drift_status=drift_status,
                           quality_status=quality_status, serving_status=serving_status, notes=notes,
                           features=tuple(features), **fields)  # fmt: skip
    log.info("%s on %s: drift %s (%s drifted), score psi %s vs previous, quality %s, serving %s", model, day,
             drift_status, record.n_drifted, record.score_psi_previous, quality_status, serving_status)  # fmt: skip
    return rt.catalog.upsert_monitor(record)


def monitor_range(rt: Runtime, model: str, end: dt.date, days: int, clock: Clock = utcnow) -> list[MonitorRecord]:
    """``monitor_date`` of the ``days`` dates up to ``end`` (oldest first); a date without a committed run is
    skipped with a warning. ``UserError`` when none of them could be monitored."""
    if days < 1:
        raise UserError(f"--days must be >= 1, got {days}")
    out, skipped = [], []
    for offset in range(days - 1, -1, -1):
        day = end - dt.timedelta(days=offset)
        if champion_run(rt, model, day) is None:
            log.warning("%s: no committed run for %s; not monitored", model, day)
            skipped.append(day.isoformat())
            continue
        out.append(monitor_date(rt, model, day, clock))
    if not out:
        raise UserError(f"{model} has no committed run for any of {', '.join(skipped)}; score those dates first")
    return out


def monitor_nightly(rt: Runtime, model: str, day: dt.date, clock: Clock = utcnow) -> list[MonitorRecord]:
    """What the nightly DAG's ``monitor`` task runs: ``monitor_date`` of ``day`` (none when ``day`` has no committed
    run: a failed score is reported by its own task), then again of every earlier stored date whose report said
    ``no labels yet`` while its labels now exist. Returns the reports written, ``day``'s first."""
    out = [monitor_date(rt, model, day, clock)] if champion_run(rt, model, day) is not None else []
    labelled = set(fstore.available_label_dates(rt.home, rt.config.model(model).feature_set))
    pending = sorted({r.partition_date for r in rt.catalog.monitor_reports(model)
                      if r.partition_date != day and r.quality_status == NO_LABELS
                      and r.partition_date in labelled}, reverse=True)  # fmt: skip
    for earlier in pending:
        log.info("%s: labels of %s arrived since it was monitored; monitoring it again", model, earlier)
        out.append(monitor_date(rt, model, earlier, clock))
    return out
