"""Training, evaluation, registration and promotion on the synthetic warehouse."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
import yaml

from jobs.feature_matrix import to_matrix
from jobs.runtime import Runtime
from jobs.train import KindResult, TrainReport, choose_window, should_promote, train_model
from tests.jobs.conftest import END
from warehouse.datasets import features as fstore
from warehouse.errors import UserError
from warehouse.settings import Settings


def test_template_models_are_registered_and_promoted(rt: Runtime) -> None:
    """The session's training registered both kinds with manifests that describe them, and promoted them."""
    for kind, n_features in (("primary", 32), ("fallback", 8)):
        version = rt.registry.production_version("churn", kind)
        assert version is not None
        manifest = rt.registry.manifest("churn", kind, version)
        assert len(manifest.features) == n_features
        assert manifest.training_window["holdout"] == END.isoformat()
        assert manifest.metrics["auc"] > 0.7  # the synthetic label is learnable
        assert 0 < manifest.metrics["logloss"] < 0.69
        assert set(manifest.library_versions) >= {"xgboost", "python"}
        loaded = rt.registry.load("churn", kind, manifest.features)
        assert loaded.booster.num_features() == n_features
    rows = rt.catalog.model_versions("churn")
    assert {r.kind for r in rows if r.promoted_at is not None} == {"primary", "fallback"}


def test_retraining_promotes_only_when_not_worse(rt: Runtime) -> None:
    """A retrain on the same data is within the margin (promoted); with an impossible margin it is kept out."""
    first = rt.registry.production_version("churn", "primary")
    report = train_model(rt, "churn")
    primary = next(r for r in report.results if r.kind == "primary")
    assert primary.production_metrics is not None
    assert primary.promoted and rt.registry.production_version("churn", "primary") == primary.version != first
    spec = rt.config.models["churn"]
    strict = spec.model_copy(update={"training": spec.training.model_copy(update={"promote_margin": -1.0})})
    rt.config = rt.config.model_copy(update={"models": {"churn": strict}})
    report = train_model(rt, "churn")
    assert not any(r.promoted for r in report.results)
    assert rt.registry.production_version("churn", "primary") == primary.version
    assert json.loads((rt.registry.kind_dir("churn", "primary") / "production.json").read_text())


def test_too_few_partitions_is_a_user_error() -> None:
    days = [dt.date(2026, 11, d) for d in (1, 2)]
    with pytest.raises(UserError, match="training needs 4 daily feature partitions"):
        choose_window(days, 3, None)
    train, holdout = choose_window([dt.date(2026, 11, d) for d in range(1, 6)], 3, dt.date(2026, 11, 4))
    assert holdout == dt.date(2026, 11, 4) and train[0] == dt.date(2026, 11, 1)


def test_unknown_model(rt: Runtime) -> None:
    with pytest.raises(UserError, match="unknown model 'nope'"):
        train_model(rt, "nope")


def _with_training(rt: Runtime, training: object) -> Runtime:
    import yaml

    from warehouse.settings import Settings

    raw = yaml.safe_load(rt.settings.models_file.read_text())
    raw["models"]["churn"]["training"] = training
    path = rt.home / "models-variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Runtime.from_settings(Settings(home=rt.home, models_file=path, redis_url=rt.redis_url))


def test_an_external_model_is_never_trained(rt: Runtime) -> None:
    external = _with_training(rt, "external")
    try:
        with pytest.raises(UserError, match="training is external: prescore does not train churn; register"):
            train_model(external, "churn")
    finally:
        external.close()


def test_training_params_reach_xgboost(rt: Runtime) -> None:
    """gamma this large forbids every split: each tree is one leaf, so every hold-out row gets the same score."""
    raw_training = {"max_train_rows": 30_000, "primary_trees": 5, "params": {"gamma": 1e9}}
    stumps = _with_training(rt, raw_training)
    try:
        report = train_model(stumps, "churn")
        primary = next(k for k in report.results if k.kind == "primary")
        booster = stumps.registry.load("churn", "primary", stumps.config.model_features("churn"),
                                       version=primary.version).booster  # fmt: skip
        assert all('"split"' not in tree for tree in booster.get_dump(dump_format="json"))
        assert primary.metrics["auc"] == pytest.approx(0.5)
    finally:
        stumps.close()


# ---- objectives other than binary:logistic ------------------------------------------------------------------
def runtime_with_model(rt: Runtime, name: str, training: dict[str, Any], **fields: Any) -> Runtime:
    """A Runtime on ``rt``'s home whose models file also declares model ``name`` (churn's feature set, fallback
    features and staleness) trained as ``training`` says, with small tree counts; ``fields`` override the rest."""
    raw = yaml.safe_load(rt.settings.models_file.read_text())
    churn = raw["models"]["churn"]
    shape = {"max_train_rows": 30_000, "primary_trees": 40, "primary_depth": 6, "fallback_trees": 15}
    raw["models"][name] = {
        "feature_set": churn["feature_set"],
        "fallback_features": churn["fallback_features"],
        "staleness": churn["staleness"],
        "default_score": 0.0,
        "training": {**shape, **training},
        **fields,
    }
    path = rt.home / f"models-{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Runtime.from_settings(Settings(home=rt.home, models_file=path, redis_url=rt.redis_url))


def relabel(rt: Runtime, make: Callable[[dt.date, np.ndarray], np.ndarray], days: list[dt.date] | None = None) -> None:
    """Rewrite label partitions (every day, or ``days``) with ``make(day, current labels)`` (0/1 as synthesised)
    as float32 labels, atomically, the way ``prescore synth`` writes them."""
    (fs,) = rt.config.feature_sets
    for day in days or fstore.available_label_dates(rt.home, fs):
        table = fstore.read_labels(rt.home, fs, day)
        binary = table.column(fstore.LABEL_COLUMN).to_numpy().astype(np.float64)
        labels = pa.array(np.asarray(make(day, binary), dtype=np.float32))
        table = table.set_column(table.schema.get_field_index(fstore.LABEL_COLUMN), fstore.LABEL_COLUMN, labels)
        with fstore.staged_partition(fstore.label_partition_dir(rt.home, fs, day)) as staging:
            pq.write_table(table, staging / "part-00000.parquet")


def spend_labels(day: dt.date, binary: np.ndarray) -> np.ndarray:
    """A real-valued target on a scale far from [0, 1]: 400 + 100 × the synthetic label + N(0, 10) noise."""
    noise = np.random.default_rng(day.toordinal()).normal(scale=10.0, size=len(binary))
    return 400.0 + 100.0 * binary + noise


def count_labels(day: dt.date, binary: np.ndarray) -> np.ndarray:
    """Counts: Poisson with mean 1 (label 0) or 4 (label 1)."""
    return np.random.default_rng(day.toordinal()).poisson(1.0 + 3.0 * binary).astype(np.float64)


def _objective_of(booster: xgb.Booster) -> str:
    return json.loads(booster.save_config())["learner"]["objective"]["name"]


def _kind(report: TrainReport, kind: str) -> KindResult:
    return next(r for r in report.results if r.kind == kind)


@pytest.mark.parametrize(
    ("objective", "make", "thresholds"),
    [("reg:squarederror", spend_labels, {"big": 450.0}), ("count:poisson", count_labels, {"many": 3.5})],
)
def test_a_regression_objective_trains_registers_and_promotes_both_kinds(
    rt: Runtime, objective: str, make: Callable[[dt.date, np.ndarray], np.ndarray], thresholds: dict[str, float]
) -> None:
    relabel(rt, make)
    churn_before = rt.registry.production_version("churn", "primary")
    spend = runtime_with_model(rt, "spend", {"objective": objective}, thresholds={"labels": thresholds})
    try:
        report = train_model(spend, "spend")
        fs = spend.config.model("spend").feature_set
        y = fstore.read_labels(spend.home, fs, END).column(fstore.LABEL_COLUMN).to_numpy()
        for kind in ("primary", "fallback"):
            result = _kind(report, kind)
            assert result.promoted and result.production_metrics is None
            assert set(result.metrics) == {"rmse", "mae"}
            assert 0 < result.metrics["mae"] <= result.metrics["rmse"] < float(np.std(y))  # better than the mean
            assert spend.registry.production_version("spend", kind) == result.version
            manifest = spend.registry.manifest("spend", kind, result.version)
            assert manifest.metrics == result.metrics
            booster = spend.registry.load("spend", kind, result.features).booster
            assert _objective_of(booster) == objective
            x = to_matrix(fstore.read_partition(spend.home, fs, END, columns=result.features), result.features)
            p = booster.inplace_predict(x)
            assert p.max() > 1.5  # real-valued scores, not probabilities
            if objective == "count:poisson":
                assert p.min() >= 0.0
        rows = spend.catalog.model_versions("spend")
        assert {r.kind for r in rows if r.promoted_at is not None} == {"primary", "fallback"}
        assert spend.registry.production_version("churn", "primary") == churn_before  # another model: untouched
    finally:
        spend.close()


def test_a_regression_model_is_promoted_when_its_rmse_is_within_a_relative_margin(rt: Runtime) -> None:
    """rmse <= production rmse × (1 + promote_margin): a margin that is relative, so a worse model passes only
    with a margin larger than its relative loss, however small that margin is next to the labels' scale."""
    relabel(rt, spend_labels)

    def train(**training: Any) -> TrainReport:
        spend = runtime_with_model(rt, "spend", {"objective": "reg:squarederror", **training})
        try:
            return train_model(spend, "spend")
        finally:
            spend.close()

    first = _kind(train(), "primary")
    again = _kind(train(), "primary")  # the same data and seed: the same model, hence the same RMSE
    assert again.production_metrics == first.metrics and again.metrics == first.metrics and again.promoted
    worse = _kind(train(primary_trees=3, promote_margin=0.0), "primary")
    assert worse.production_metrics == again.metrics and worse.metrics["rmse"] > again.metrics["rmse"]
    assert not worse.promoted and rt.registry.production_version("spend", "primary") == again.version

    relative_loss = worse.metrics["rmse"] / again.metrics["rmse"] - 1.0
    margin = relative_loss * 1.01
    assert worse.metrics["rmse"] > again.metrics["rmse"] + margin  # as an absolute margin it would not promote
    tolerated = _kind(train(primary_trees=3, promote_margin=margin), "primary")
    assert tolerated.metrics == worse.metrics and tolerated.promoted
    assert rt.registry.production_version("spend", "primary") == tolerated.version
    short = _kind(train(primary_trees=40, promote_margin=0.0), "primary")
    assert short.production_metrics == worse.metrics and short.promoted  # better than production: promoted


@pytest.mark.parametrize(
    ("model", "training", "make", "day", "words"),
    [
        (
            "spend",
            {"objective": "count:poisson"},
            lambda d, b: np.where(np.arange(len(b)) % 7 == 0, -1.0, b),
            "holdout",
            r"labels for spend \({holdout}\) include -1\.0 \(\d+ of \d+ rows\); count:poisson needs counts >= 0; "
            r"fix labels/customer_daily or choose models\.spend\.training\.objective",
        ),
        (
            "spend",
            {"objective": "reg:gamma"},
            None,
            "train",
            r"include 0\.0 \(\d+ of \d+ rows\); reg:gamma needs labels > 0",
        ),
        (
            "spend",
            {"objective": "reg:logistic"},
            lambda d, b: b * 1.5,
            "train",
            r"labels for spend \({train}\) include 1\.5 .*reg:logistic needs labels in \[0, 1\]",
        ),
        (
            "spend",
            {"objective": "reg:squarederror"},
            lambda d, b: np.where(b > 0, np.nan, b),
            "train",
            r"include nan .*reg:squarederror needs finite labels",
        ),
        (
            "churn",
            None,
            lambda d, b: b * 2,
            "train",
            r"labels for churn \({train}\) include 2\.0 .*binary:logistic needs 0/1",
        ),
    ],
    ids=["poisson-negative-holdout", "gamma-zero", "logistic-above-1", "squared-nan", "binary-2"],
)
def test_labels_the_objective_cannot_learn_are_refused_before_training(
    rt: Runtime, model: str, training: dict[str, Any] | None, make: Any, day: str, words: str
) -> None:
    dates = fstore.available_dates(rt.home, "customer_daily")
    train_days, holdout = dates[-4:-1], dates[-1]
    if make is not None:
        relabel(rt, make, [holdout] if day == "holdout" else train_days)
    runtime = runtime_with_model(rt, "spend", training or {})
    before = runtime.registry.versions(model, "primary")
    try:
        with pytest.raises(UserError, match=words.format(holdout=holdout, train=f"{train_days[0]}..{train_days[-1]}")):
            train_model(runtime, model)
        assert runtime.registry.versions(model, "primary") == before  # nothing registered
    finally:
        runtime.close()


def test_the_single_class_check_is_binary_only(rt: Runtime) -> None:
    relabel(rt, lambda d, b: np.ones(len(b)) if d < END else b)  # one class in the training window
    with pytest.raises(UserError, match="training labels for churn have a single class"):
        train_model(rt, "churn")
    constant = runtime_with_model(rt, "spend", {"objective": "reg:squarederror", "primary_trees": 5})
    try:
        assert all(r.promoted for r in train_model(constant, "spend").results)  # a constant is a fine regression
    finally:
        constant.close()


@pytest.mark.parametrize(
    ("objective", "metrics", "production", "margin", "promoted"),
    [
        ("binary:logistic", {"auc": 0.80}, None, 0.0, True),
        ("binary:logistic", {"auc": 0.796}, {"auc": 0.80}, 0.005, True),  # absolute: within 0.005 of AUC
        ("binary:logistic", {"auc": 0.794}, {"auc": 0.80}, 0.005, False),
        ("reg:squarederror", {"rmse": 5.0}, None, 0.0, True),
        ("reg:squarederror", {"rmse": 100.4}, {"rmse": 100.0}, 0.005, True),  # relative: 0.4 % worse
        ("reg:squarederror", {"rmse": 100.6}, {"rmse": 100.0}, 0.005, False),  # 0.6 % worse
        ("count:poisson", {"rmse": 0.9}, {"rmse": 1.0}, 0.0, True),  # better
        ("reg:logistic", {"rmse": 0.2011}, {"rmse": 0.2}, 0.005, False),  # 0.55 % worse, 0.0011 absolute
    ],
)
def test_the_promotion_rule(
    objective: str, metrics: dict[str, float], production: dict[str, float] | None, margin: float, promoted: bool
) -> None:
    assert should_promote(objective, metrics, production, margin) is promoted
