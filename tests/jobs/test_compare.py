"""Champion/challenger comparisons: the pure metrics against independent implementations, and ``compare_date`` on
real runs of the synthetic warehouse (Dask, Parquet, the catalog, labels)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import log_loss, roc_auc_score

from jobs import score_metrics
from jobs.compare import champion_run, compare_date, compare_nightly, objective_of
from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition
from jobs.shadow import score_challengers
from tests.support.challenger import register_challenger
from tests.support.clock import day
from warehouse.catalog import COMPARED, FAILED
from warehouse.datasets import features as fstore
from warehouse.datasets.score_files import read_run
from warehouse.errors import UserError
from warehouse.rollout import challenger_key

FIXED = dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC)


# ---- the pure core ------------------------------------------------------------------------------------------------
def test_average_ranks_share_ties() -> None:
    assert score_metrics.average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert score_metrics.average_ranks(np.array([])).tolist() == []


@pytest.mark.parametrize("ties", [False, True])
def test_rank_correlation_and_auc_equal_scipy_and_sklearn(ties: bool) -> None:
    """Spearman's rho and the AUC equal scipy's and scikit-learn's, with and without ties (rounded scores)."""
    rng = np.random.default_rng(3)
    a = rng.random(5000)
    b = a + rng.normal(0, 0.3, 5000)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    y = (rng.random(5000) < a).astype(np.int8)
    assert score_metrics.rank_correlation(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert score_metrics.auc(y, b) == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    p = np.clip(a, 0.01, 0.99)
    assert score_metrics.log_loss(y, p) == pytest.approx(log_loss(y, p), abs=1e-12)


def test_undefined_metrics_are_none() -> None:
    assert score_metrics.rank_correlation(np.ones(4), np.arange(4.0)) is None
    assert score_metrics.rank_correlation(np.ones(1), np.ones(1)) is None
    assert score_metrics.auc(np.ones(3), np.arange(3.0)) is None
    assert score_metrics.quality("binary:logistic", np.array([0.0, 0.5]), np.array([0.1, 0.2])) == {}
    assert score_metrics.decision_change(np.ones(3), np.zeros(3), {}) is None


def test_decisions_follow_the_api_threshold_rule() -> None:
    """A decision is the highest threshold reached (score >= value): 0.4 and 0.69 are both medium, 0.7 is high."""
    cuts = {"high_risk": 0.7, "medium_risk": 0.4}
    a = np.array([0.1, 0.4, 0.69, 0.7, 0.9])
    assert score_metrics.decision_levels(a, cuts).tolist() == [0, 1, 1, 2, 2]
    assert score_metrics.decision_change(a, np.array([0.41, 0.5, 0.41, 0.69, 0.2]), cuts) == pytest.approx(0.6)


def test_quality_and_its_loss_by_objective() -> None:
    y = np.array([0, 1, 1, 0, 1], dtype=np.float64)
    good, bad = np.array([0.1, 0.9, 0.8, 0.3, 0.7]), np.array([0.9, 0.1, 0.8, 0.3, 0.2])
    champion, challenger = (score_metrics.quality("binary:logistic", y, s) for s in (good, bad))
    assert set(champion) == {"auc", "logloss"} and champion["auc"] == 1.0
    assert score_metrics.quality_loss("binary:logistic", champion, challenger) == pytest.approx(1.0 - challenger["auc"])
    assert set(score_metrics.quality("binary:logitraw", y, good)) == {"auc"}  # margins: no log loss
    reg = score_metrics.quality("reg:squarederror", np.array([1.0, 2.0]), np.array([1.5, 2.5]))
    assert reg == {"rmse": 0.5, "mae": 0.5}
    assert score_metrics.quality_loss("reg:squarederror", {"rmse": 0.5}, {"rmse": 0.55}) == pytest.approx(0.1)


# ---- on real runs ---------------------------------------------------------------------------------------------
def _joined_scores(champion_path: str, challenger_path: str) -> pa.Table:
    a = read_run(champion_path, columns=["entity_id", "score"]).rename_columns(["entity_id", "a"])
    b = read_run(challenger_path, columns=["entity_id", "score"]).rename_columns(["entity_id", "b"])
    return a.join(b, "entity_id", join_type="inner")


def test_compare_date_measures_the_challenger_against_the_published_champion(rt: Runtime) -> None:
    """Both runs of a date are joined on entity id; PSI, rank correlation, changed decisions and the realized AUC
    and log loss of both (labels exist) are stored, equal to an independent computation. The champion is the
    published run of the date even when a newer committed one exists."""
    version = register_challenger(rt)
    published = score_partition(rt, "churn", day(0), device="cpu")
    publish_run(rt, "churn", published.run_id)
    newer = score_partition(rt, "churn", day(0), device="cpu", force=True)  # committed, never published
    [shadowed] = score_challengers(rt, "churn", day(0), device="cpu")
    assert champion_run(rt, "churn", day(0)).run_id == published.run_id != newer.run_id  # type: ignore[union-attr]

    [row] = compare_date(rt, "churn", day(0), clock=lambda: FIXED)
    assert (row.status, row.challenger_version, row.partition_date) == (COMPARED, version, day(0))
    assert row.compared_at == FIXED
    assert (row.champion_run_id, row.challenger_run_id) == (published.run_id, shadowed["run_id"])
    assert row.champion_version == rt.registry.production_version("churn", "primary")
    assert row.n_champion == row.n_challenger == row.n_joined == published.rows_out == 20_000
    assert row.objective == "binary:logistic"
    joined = _joined_scores(published.output_path or "", shadowed["output_path"])
    a, b = (joined.column(c).to_numpy().astype(np.float64) for c in ("a", "b"))
    assert row.rank_correlation == pytest.approx(spearmanr(a, b).statistic, abs=1e-6)
    assert 0 < row.rank_correlation < 1  # type: ignore[operator]
    levels = [np.digitize(s, [0.4, 0.7]) for s in (a, b)]
    assert row.decision_change == pytest.approx(np.mean(levels[0] != levels[1]), abs=1e-6)
    assert row.psi is not None and row.psi >= 0
    labels = fstore.read_labels(rt.home, "customer_daily", day(0))
    labelled = joined.join(labels, "entity_id", join_type="inner")
    y = labelled.column("label").to_numpy()
    assert row.n_labelled == 20_000
    for quality, column in ((row.champion_quality, "a"), (row.challenger_quality, "b")):
        s = labelled.column(column).to_numpy().astype(np.float64)
        assert quality == pytest.approx({"auc": roc_auc_score(y, s), "logloss": log_loss(y, s)}, abs=1e-6)
    assert row.champion_quality["auc"] > row.challenger_quality["auc"]  # type: ignore[index]  # 15 small trees
    # a rerun replaces the row; the catalog holds one per (model, version, date)
    again = compare_date(rt, "churn", day(0))
    assert len(rt.catalog.comparisons("churn")) == 1 and dataclasses.replace(again[0], compared_at=FIXED) == row


def test_a_failed_or_missing_challenger_run_is_a_failed_comparison_until_it_commits(rt: Runtime) -> None:
    """No challenger run: failed, "not shadow-scored"; a failed run (blocked by its checks): failed with its error;
    once a run commits, comparing the date again replaces the row with a comparison."""
    version = register_challenger(rt)
    score_partition(rt, "churn", day(0), device="cpu")
    [missing] = compare_date(rt, "churn", day(0))
    assert missing.status == FAILED and "no run for" in (missing.reason or "") and missing.psi is None
    key = challenger_key("churn", version)
    run_id = rt.catalog.start_run(model=key, model_version=version, partition_date=day(0))
    rt.catalog.finish_run(run_id, status=FAILED, error="quality gate blocked run: PSI 0.9")
    [failed] = compare_date(rt, "churn", day(0))
    assert failed.status == FAILED and failed.challenger_run_id is None
    assert f"its run {run_id}" in (failed.reason or "") and "PSI 0.9" in (failed.reason or "")
    score_challengers(rt, "churn", day(0), device="cpu")
    [ok] = compare_date(rt, "churn", day(0))
    assert ok.status == COMPARED and ok.reason is None and len(rt.catalog.comparisons("churn")) == 1


def test_labels_that_arrive_later_are_filled_in_by_the_next_nightly_comparison(rt: Runtime) -> None:
    """Compared before its labels exist: no quality. The labels arrive; the next night's ``compare_nightly``
    compares that date again and fills them in."""
    register_challenger(rt)
    labels = Path(str(fstore.label_partition_dir(rt.home, "customer_daily", day(-1))))
    shutil.move(labels, labels.with_name("aside"))
    for offset in (-1, 0):
        score_partition(rt, "churn", day(offset), device="cpu")
        score_challengers(rt, "churn", day(offset), device="cpu")
    [early] = compare_nightly(rt, "churn", day(-1))
    assert early.status == COMPARED and early.champion_quality is None and early.n_labelled is None
    shutil.move(labels.with_name("aside"), labels)
    rows = compare_nightly(rt, "churn", day(0))
    assert [r.partition_date for r in rows] == [day(0), day(-1)]
    assert all(r.champion_quality and r.challenger_quality for r in rows)


def test_nothing_to_compare(rt: Runtime) -> None:
    """No challengers: nothing, not even a champion run is needed. A challenger but no champion run: one line."""
    assert compare_date(rt, "churn", day(0)) == []
    register_challenger(rt)
    with pytest.raises(UserError, match=r"no committed run for .* score the date first"):
        compare_date(rt, "churn", day(0))


def test_objective_of_a_version(rt: Runtime) -> None:
    """The manifest's lineage names it for a registered model; else the models file's training.objective."""
    version = register_challenger(rt)
    assert objective_of(rt, "churn", version) == "binary:logistic"
    path = rt.registry.kind_dir("churn", "primary") / version / "manifest.json"
    path.write_text(path.read_text().replace('"lineage": {}', '"lineage": {"objective": "reg:squarederror"}'))
    assert objective_of(rt, "churn", version) == "reg:squarederror"
