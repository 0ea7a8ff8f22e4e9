"""Champion against challengers: each challenger version's run of a date compared with the champion's, persisted.

``compare_date(rt, model, day)`` compares every challenger of ``Registry.challengers(model)`` with the champion on
partition ``day`` and stores one ``comparisons`` row per (model, challenger version, date) in the catalog
(``Catalog.upsert_comparison``: a rerun replaces it). Per challenger:

1. the champion's run: the committed run of ``model`` for ``day`` that was published (the newest such), else the
   newest committed one; none is a ``UserError`` (score the date first). Its version is recorded: the promotion gate
   (``jobs.promote``) counts only comparisons with the champion it would replace;
2. the challenger's run: the newest committed run under ``warehouse.rollout.challenger_key(model, version)``. A
   challenger whose run failed (its contract or quality checks, a broken artifact) or is missing is recorded with
   status ``failed`` and the reason, and the next one goes on;
3. the two score lists joined on ``entity_id``: counts of each and of the join, the PSI of the challenger's scores
   against the champion's (``jobs.scoring.run_psi`` over their quantile summaries: the publish gate's measure),
   Spearman's rank correlation and, for a model with ``thresholds``, the share of entities whose decision changes
   (``jobs.score_metrics``);
4. when the label partition of ``day`` exists (``warehouse.datasets.features.read_labels``), the realized quality
   of both on the same labelled entities under the challenger's objective (its manifest's lineage, else the
   models file's ``training.objective``, else what its hold-out metrics say): AUC and log loss, or RMSE and MAE.
   Labels that arrive later are filled in by comparing the date again: ``compare_nightly`` does it for every stored
   comparison still without quality whose labels now exist.

Both runs are read whole into this process (two columns each): fine for tens of millions of entities.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pyarrow as pa

from jobs import score_metrics, scoring
from jobs.runtime import Runtime
from warehouse.catalog import COMMITTED, COMPARED, FAILED, ComparisonRecord, RunRecord, utcnow
from warehouse.datasets import features as fstore
from warehouse.datasets.score_files import read_run
from warehouse.errors import PartitionNotFoundError, RegistryError, UserError
from warehouse.rollout import challenger_key

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]


def champion_run(rt: Runtime, model: str, day: dt.date) -> RunRecord | None:
    """The champion's run of ``day``: the newest committed one that was published, else the newest committed."""
    committed = rt.catalog.runs(model, partition_date=day, status=COMMITTED, limit=None)
    published = {p.run_id for p in rt.catalog.pointer_records(model)}
    return next((r for r in committed if r.run_id in published), committed[0] if committed else None)


def challenger_run(rt: Runtime, model: str, version: str, day: dt.date) -> tuple[RunRecord | None, str | None]:
    """The challenger's newest committed run of ``day``, or ``(None, why there is none)``."""
    runs = rt.catalog.runs(challenger_key(model, version), partition_date=day, limit=None)
    committed = [r for r in runs if r.status == COMMITTED]
    if committed:
        return committed[0], None
    if runs:
        last = runs[0]
        return None, f"its run {last.run_id} for {day} is {last.status}: {last.error or 'no reason recorded'}"
    return None, f"it has no run for {day} (it was not shadow-scored that day)"


def objective_of(rt: Runtime, model: str, version: str) -> str:
    """The objective of a primary ``version`` (module docstring, step 4)."""
    spec = rt.config.model(model)
    try:
        manifest = rt.registry.manifest(model, "primary", version)
    except RegistryError:
        manifest = None
    if manifest is not None and manifest.lineage.get("objective"):
        return str(manifest.lineage["objective"])
    if spec.training != "external":
        return spec.training.objective
    return "binary:logistic" if manifest is not None and "auc" in manifest.metrics else "reg:squarederror"


def _scores(run: RunRecord, name: str) -> pa.Table:
    table = read_run(run.output_path or "", columns=["entity_id", "score"])
    return table.rename_columns(["entity_id", name])


def _labels(rt: Runtime, feature_set: str, day: dt.date) -> pa.Table | None:
    if day not in fstore.available_label_dates(rt.home, feature_set):
        return None
    table = fstore.read_labels(rt.home, feature_set, day)
    ids, labels = table.column(0), table.column(fstore.LABEL_COLUMN)
    if pa.types.is_integer(ids.type):  # a lake's int64 ids are served (and scored) as their decimal text
        ids = ids.cast(pa.string())
    return pa.table({"entity_id": ids, "label": labels.cast(pa.float64())})


def _psi(champion: np.ndarray, challenger: np.ndarray) -> float | None:
    if len(champion) == 0:
        return None
    value = scoring.run_psi({"quantiles": scoring.quantile_summary(champion)},
                            {"quantiles": scoring.quantile_summary(challenger)})  # fmt: skip
    return None if value is None else round(value, 6)


def compare_one(
    rt: Runtime, model: str, version: str, day: dt.date, champion: RunRecord, clock: Clock = utcnow
) -> ComparisonRecord:
    """Compare challenger ``version`` with the ``champion`` run on ``day`` and store the comparison."""
    spec = rt.config.model(model)
    base = ComparisonRecord(model=model, challenger_version=version, partition_date=day, status=FAILED,
                            compared_at=clock(), champion_version=champion.model_version,
                            champion_run_id=champion.run_id, n_champion=champion.rows_out)  # fmt: skip
    run, why = challenger_run(rt, model, version, day)
    if run is None:
        log.warning("%s challenger %s on %s: not compared: %s", model, version, day, why)
        return rt.catalog.upsert_comparison(_with(base, reason=f"challenger {version}: {why}"))
    try:
        challenger_scores = _scores(run, "challenger")
    except PartitionNotFoundError as exc:
        return rt.catalog.upsert_comparison(_with(base, challenger_run_id=run.run_id, reason=str(exc)))
    champion_scores = _scores(champion, "champion")
    joined = champion_scores.join(challenger_scores, "entity_id", join_type="inner")
    a = joined.column("champion").to_numpy().astype(np.float64)
    b = joined.column("challenger").to_numpy().astype(np.float64)
    thresholds = dict(spec.thresholds.labels) if spec.thresholds else {}
    objective = objective_of(rt, model, version)
    record = _with(
        base, status=COMPARED, challenger_run_id=run.run_id, n_champion=champion_scores.num_rows,
        n_challenger=challenger_scores.num_rows, n_joined=joined.num_rows, psi=_psi(a, b),
        rank_correlation=_rounded(score_metrics.rank_correlation(a, b)),
        decision_change=_rounded(score_metrics.decision_change(a, b, thresholds)), objective=objective,
    )  # fmt: skip
    labels = _labels(rt, spec.feature_set, day)
    if labels is not None:
        labelled = joined.join(labels, "entity_id", join_type="inner")
        y = labelled.column("label").to_numpy()
        mine = labelled.column("champion").to_numpy().astype(np.float64)
        theirs = labelled.column("challenger").to_numpy().astype(np.float64)
        record = _with(record, n_labelled=labelled.num_rows,
                       champion_quality=_rounded_all(score_metrics.quality(objective, y, mine)),
                       challenger_quality=_rounded_all(score_metrics.quality(objective, y, theirs)))  # fmt: skip
    log.info("%s challenger %s on %s: %s joined, psi %s, rho %s, decisions changed %s, quality %s vs %s", model,
             version, day, record.n_joined, record.psi, record.rank_correlation, record.decision_change,
             record.challenger_quality, record.champion_quality)  # fmt: skip
    return rt.catalog.upsert_comparison(record)


def compare_date(rt: Runtime, model: str, day: dt.date, clock: Clock = utcnow) -> list[ComparisonRecord]:
    """Compare every challenger of ``model`` with the champion on ``day`` (module docstring); the stored rows, one
    per challenger ([] without challengers). ``UserError`` when the champion has no committed run of ``day``."""
    versions = rt.registry.challengers(model)
    if not versions:
        return []
    champion = champion_run(rt, model, day)
    if champion is None:
        raise UserError(f"{model} has no committed run for {day} to compare its challengers with; score the date "
                        f"first (prescore score --model {model} --date {day})")  # fmt: skip
    return [compare_one(rt, model, version, day, champion, clock) for version in versions]


def compare_nightly(rt: Runtime, model: str, day: dt.date, clock: Clock = utcnow) -> list[ComparisonRecord]:
    """``compare_date`` of ``day``, then again of every earlier date whose stored comparison of a current challenger
    has no quality yet while its labels now exist (what the nightly DAG's ``compare`` task runs). Returns the rows
    written, ``day``'s first."""
    out = compare_date(rt, model, day, clock)
    challengers = set(rt.registry.challengers(model))
    labelled = set(fstore.available_label_dates(rt.home, rt.config.model(model).feature_set))
    pending = sorted({c.partition_date for c in rt.catalog.comparisons(model)
                      if c.challenger_version in challengers and c.partition_date != day and c.status == COMPARED
                      and c.champion_quality is None and c.partition_date in labelled}, reverse=True)  # fmt: skip
    for earlier in pending:
        log.info("%s: labels of %s arrived since it was compared; comparing it again", model, earlier)
        out += compare_date(rt, model, earlier, clock)
    return out


def _with(record: ComparisonRecord, **changes: object) -> ComparisonRecord:
    return replace(record, **changes)  # type: ignore[arg-type]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _rounded_all(metrics: dict[str, float]) -> dict[str, float] | None:
    return {k: round(v, 6) for k, v in metrics.items()} or None
