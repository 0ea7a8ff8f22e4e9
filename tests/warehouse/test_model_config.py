"""The models file and settings: validated at start-up, errors name the bad field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from warehouse.errors import ConfigError, UnknownFeatureSetError, UnknownModelError
from warehouse.model_config import StalenessPolicy, freshness, load_config
from warehouse.settings import DEFAULT_MODELS_FILE


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
    mutate(raw)
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_embedded_models_file_is_valid() -> None:
    config = load_config(DEFAULT_MODELS_FILE)
    assert config.model_names == ["churn"]
    assert config.model("churn").feature_set == "customer_daily"
    assert len(config.model_features("churn")) == 32


def test_unknown_model_and_feature_set() -> None:
    config = load_config(DEFAULT_MODELS_FILE)
    with pytest.raises(UnknownModelError, match=r"unknown model 'nope'.*churn"):
        config.model("nope")
    with pytest.raises(UnknownFeatureSetError, match="unknown feature set 'nope'"):
        config.feature_set("nope")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["models"]["churn"].pop("staleness"), r"models\.churn\.staleness: Field required"),
        (lambda r: r["models"]["churn"].update(default_score=float("nan")), r"models\.churn\.default_score"),
        (
            lambda r: r["models"]["churn"]["training"].update(params={"eta": 0.2, "booster": "dart"}),
            r"models\.churn\.training.*unknown XGBoost parameters \['booster'\]",
        ),
        (lambda r: r["models"]["churn"].update(training="sometimes"), r"models\.churn\.training"),
        (
            lambda r: r["feature_sets"]["customer_daily"].update(path="s3://lake/t/"),
            r"feature_sets\.customer_daily: path 's3://lake/t/' must hold \{date\} exactly once",
        ),
        (
            lambda r: r["feature_sets"]["customer_daily"].update(path="s3://lake/{date}/part/"),
            r"\{date\} must be in the last path segment",
        ),
        (
            lambda r: r["feature_sets"]["customer_daily"].update(path="/lake/d={date}", date_format="%Y-%m"),
            r"date_format '%Y-%m' does not write a whole date",
        ),
        (lambda r: r["models"]["churn"].update(feature_set="orders"), r"models\.churn\.feature_set: unknown"),
        (
            lambda r: r["models"]["churn"].update(fallback_features=["f00", "zz"]),
            r"fallback_features: \['zz'\]",
        ),
        (lambda r: r["models"]["churn"].update(colour="red"), r"models\.churn\.colour: Extra inputs"),
        (
            lambda r: r["models"]["churn"]["staleness"].update(hard_max_age_s=1),
            r"models\.churn\.staleness: hard_max_age_s must be >= max_age_s",
        ),
        (
            lambda r: r["feature_sets"]["customer_daily"]["features"]["f00"].update(dtype="text"),
            r"feature_sets\.customer_daily\.features\.f00\.dtype",
        ),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, mutate, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(_write(tmp_path, mutate))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad)


@pytest.mark.parametrize(
    ("age_s", "state"),
    [
        (0.0, "fresh"),
        (100.0, "fresh"),  # both limits are inclusive
        (100.5, "stale"),
        (1000.0, "stale"),
        (1000.5, "expired"),
        (float("nan"), "expired"),  # an age that cannot be computed is never served as fresh
    ],
)
def test_freshness_of_an_age_under_the_staleness_policy(age_s: float, state: str) -> None:
    """fresh up to max_age_s, stale up to hard_max_age_s, expired beyond: the function and the policy agree."""
    policy = StalenessPolicy(max_age_s=100, hard_max_age_s=1000)
    assert freshness(age_s, 100.0, 1000.0) == state
    assert policy.freshness(age_s) == state


def test_training_external_and_params(tmp_path: Path) -> None:
    """``training: external`` (only registered, never trained), training params, and any real default score."""
    raw = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
    raw["models"]["churn"].update(training="external", default_score=42.5)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_config(path).model("churn")
    assert spec.training == "external" and not spec.trained_here and spec.default_score == 42.5
    raw["models"]["churn"]["training"] = {"params": {"eta": 0.05, "grow_policy": "lossguide"}}
    path.write_text(yaml.safe_dump(raw))
    spec = load_config(path).model("churn")
    assert spec.trained_here and spec.training != "external" and spec.training.params["grow_policy"] == "lossguide"


@pytest.mark.parametrize(
    ("training", "expected"),
    [
        (
            {"objective": "rank:pairwise"},
            r"models\.churn\.training.*objective 'rank:pairwise' cannot be trained by prescore train; trainable: "
            r"binary:logistic, count:poisson, reg:absoluteerror, reg:gamma, reg:logistic, reg:pseudohubererror, "
            r"reg:squarederror, reg:tweedie \(a model with another objective: training: external",
        ),
        ({"objective": "multi:softprob"}, r"objective 'multi:softprob' cannot be trained"),
        (
            {"params": {"objective": "reg:squarederror"}},
            r"models\.churn\.training.*params: objective 'reg:squarederror' does not belong in params; set "
            r"training\.objective",
        ),
        (
            {"objective": "reg:squarederror", "params": {"tweedie_variance_power": 1.2}},
            r"params: tweedie_variance_power applies to objective reg:tweedie only, not reg:squarederror",
        ),
    ],
)
def test_the_training_objective_is_validated(tmp_path: Path, training: dict, expected: str) -> None:
    def mutate(raw: dict) -> None:
        raw["models"]["churn"]["training"].update(training)
        raw["models"]["churn"].pop("thresholds")

    with pytest.raises(ConfigError, match=expected):
        load_config(_write(tmp_path, mutate))


def test_the_training_objective_defaults_to_binary_and_takes_its_params(tmp_path: Path) -> None:
    assert load_config(DEFAULT_MODELS_FILE).model("churn").training.objective == "binary:logistic"

    def tweedie(raw: dict) -> None:
        raw["models"]["churn"]["training"].update(objective="reg:tweedie", params={"tweedie_variance_power": 1.3})

    training = load_config(_write(tmp_path, tweedie)).model("churn").training
    assert training.objective == "reg:tweedie" and training.params == {"tweedie_variance_power": 1.3}


@pytest.mark.parametrize(
    ("objective", "labels", "expected"),
    [
        (None, {"high_risk": 3.5}, r"high_risk = 3\.5 is outside the range of binary:logistic scores \[0, 1\]"),
        ("binary:logistic", {"ok": 0.4, "neg": -0.1}, r"neg = -0\.1 is outside the range of binary:logistic"),
        ("reg:logistic", {"high": 1.2}, r"high = 1\.2 is outside the range of reg:logistic scores \[0, 1\]"),
        ("count:poisson", {"none": -1.0}, r"none = -1\.0 is outside the range of count:poisson scores \[0, inf\)"),
    ],
)
def test_thresholds_outside_the_objectives_range_are_refused(
    tmp_path: Path, objective: str | None, labels: dict[str, float], expected: str
) -> None:
    def mutate(raw: dict) -> None:
        raw["models"]["churn"]["thresholds"] = {"labels": labels}
        if objective is not None:
            raw["models"]["churn"]["training"]["objective"] = objective

    with pytest.raises(ConfigError, match=r"models\.churn: thresholds\.labels: " + expected):
        load_config(_write(tmp_path, mutate))


def test_thresholds_of_real_valued_scores_are_accepted(tmp_path: Path) -> None:
    """3.5 is a fine threshold for a regression model, and for an external model (objective unknown here)."""

    def regression(raw: dict) -> None:
        raw["models"]["churn"].update(thresholds={"labels": {"big": 3.5, "small": -2.0}}, default_score=1.5)
        raw["models"]["churn"]["training"]["objective"] = "reg:squarederror"

    spec = load_config(_write(tmp_path, regression)).model("churn")
    assert spec.thresholds is not None and spec.thresholds.labels == {"big": 3.5, "small": -2.0}
    assert spec.training != "external" and spec.training.objective == "reg:squarederror"

    def external(raw: dict) -> None:
        raw["models"]["churn"].update(thresholds={"labels": {"big": 3.5}}, training="external")

    assert load_config(_write(tmp_path, external)).model("churn").thresholds.labels == {"big": 3.5}
