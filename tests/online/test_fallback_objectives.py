"""Every objective in FALLBACK_OBJECTIVES compiles to what xgboost's inplace_predict returns, on every path."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from online import fallback
from online.fallback import FALLBACK_OBJECTIVES, FallbackModel

FEATURES = [f"f{i}" for i in range(6)]
N = 2000


def _x(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, len(FEATURES)))
    x[:, 1] = np.round(x[:, 1] * 3)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def _signal(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) - 0.3 * np.nan_to_num(x[:, 2])


def _labels(objective: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    s = _signal(x)
    if objective.startswith("binary:"):
        return (s + rng.normal(scale=0.5, size=N) > 0).astype(np.float64)
    if objective == "reg:logistic":
        return 1.0 / (1.0 + np.exp(-s))
    if objective == "count:poisson":
        return rng.poisson(np.exp(0.5 * s)).astype(np.float64)
    if objective == "reg:gamma":
        return rng.gamma(2.0, np.exp(0.5 * s))
    if objective == "reg:tweedie":
        return rng.gamma(2.0, np.exp(0.5 * s)) * (rng.random(N) > 0.3)  # zeros and positive amounts
    if objective == "rank:map":
        return (s > 0.5).astype(np.float64)
    if objective.startswith("rank:"):
        return np.clip(np.round(s + 1.5), 0, 4)
    # reg:* on the real line; margins of this size keep xgboost's float32 sums well inside 1e-6 (see below)
    return s + 0.5 + rng.normal(scale=0.3, size=N)


def _train(objective: str, seed: int = 0, rounds: int = 25, **params: Any) -> xgb.Booster:
    x = _x(seed)
    dm = xgb.DMatrix(x, label=_labels(objective, x, np.random.default_rng(seed + 100)))
    if objective.startswith("rank:"):
        dm.set_group([20] * (N // 20))
    if objective == "reg:quantileerror":
        params.setdefault("quantile_alpha", 0.3)
    params = {"objective": objective, "tree_method": "hist", "max_depth": 4, "nthread": 1, **params}
    return xgb.train(params, dm, num_boost_round=rounds)


def _close(got: np.ndarray, expected: np.ndarray) -> bool:
    """Within 1e-6, relative where |expected| >= 1; infinities must match exactly."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    finite = np.isfinite(expected)
    if not np.array_equal(got[~finite], expected[~finite]):
        return False
    scale = np.maximum(1.0, np.abs(expected[finite]))
    return bool(np.all(np.abs(got[finite] - expected[finite]) <= 1e-6 * scale))


def assert_all_paths_match(model: FallbackModel, booster: xgb.Booster, x: np.ndarray) -> None:
    """predict_row, predict_dict, the walk and predict_many at 1, 33 and 300 rows all equal inplace_predict."""
    expected = booster.inplace_predict(x).astype(np.float64)
    rows = np.array([model.predict_row(r) for r in x.tolist()])
    assert _close(rows, expected)
    dicts = np.array([model.predict_dict(dict(zip(model.features, r, strict=True))) for r in x[:200].tolist()])
    assert _close(dicts, expected[:200])
    if model._walk is not None:
        assert _close(model._walk(np.ascontiguousarray(x, dtype=np.float32)), expected)
    start = 0
    for n in (1, fallback.SMALL_BATCH + 1, 300):  # row loop, numpy walk, xgboost's batch predictor
        got = model.predict_many(x[start : start + n])
        assert got.dtype == np.float64 and got.shape == (n,)
        assert _close(got, expected[start : start + n]), n
        start += n


def test_fallback_objectives_are_exactly_these() -> None:
    expected = {
        "binary:logistic",
        "reg:logistic",
        "binary:logitraw",
        "reg:squarederror",
        "reg:absoluteerror",
        "reg:pseudohubererror",
        "reg:quantileerror",
        "rank:pairwise",
        "rank:ndcg",
        "rank:map",
        "count:poisson",
        "reg:gamma",
        "reg:tweedie",
    }
    assert expected == FALLBACK_OBJECTIVES


@pytest.fixture(scope="module", params=sorted(FALLBACK_OBJECTIVES))
def trained(request: pytest.FixtureRequest) -> tuple[str, xgb.Booster]:
    return request.param, _train(request.param)


def test_objective_matches_inplace_predict(trained: tuple[str, xgb.Booster]) -> None:
    """A 25-round depth-4 model per objective, scored on held-out rows with NaNs, on every path."""
    objective, booster = trained
    model = FallbackModel.from_booster(booster, FEATURES, "v1")
    assert model.objective == objective and model._walk is not None
    x = _x(seed=1)
    x[:5] = np.nan  # all missing: every node's default child
    assert_all_paths_match(model, booster, x)
    model.warm()


@pytest.mark.parametrize(
    ("objective", "params"),
    [
        ("binary:logistic", {"base_score": 0.9}),
        ("reg:logistic", {"base_score": 0.2}),
        ("binary:logitraw", {"base_score": -1.5}),
        ("reg:squarederror", {"base_score": 1234.5}),
        ("count:poisson", {"base_score": 40.0}),
        ("reg:gamma", {"base_score": 0.01}),
        ("reg:tweedie", {"base_score": 7.0, "tweedie_variance_power": 1.8}),
    ],
)
def test_explicit_base_score(objective: str, params: dict[str, Any]) -> None:
    """base_score is in output space: logit for sigmoid, log for exp, as is otherwise, even far from the data."""
    booster = _train(objective, seed=2, rounds=3, **params)
    assert_all_paths_match(FallbackModel.from_booster(booster, FEATURES, "v1"), booster, _x(seed=3))


def test_one_tree_depth_one() -> None:
    """The smallest model: one stump."""
    booster = _train("reg:gamma", seed=4, rounds=1, max_depth=1)
    assert_all_paths_match(FallbackModel.from_booster(booster, FEATURES, "v1"), booster, _x(seed=5))


def _float32_sums(booster: xgb.Booster, x: np.ndarray, base_margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(xgboost's margin: float32 sums tree by tree, bound on its distance from the float64 sum of the same
    leaves: each float32 addition is off by at most 2**-24 of its result)."""
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    leaves = booster.predict(xgb.DMatrix(x), pred_leaf=True).astype(np.intp)
    margin = np.full(len(x), np.float32(base_margin))
    bound = np.full(len(x), abs(base_margin - float(np.float32(base_margin))))
    for t, tree in enumerate(trees):
        margin = margin + np.asarray(tree["split_conditions"], np.float32)[leaves[:, t]]
        bound += 2.0**-24 * np.abs(margin.astype(np.float64))
    return margin, bound


def test_large_margins_differ_by_xgboost_float32_sums_only() -> None:
    """Labels around 1000: xgboost's float32 margin is off by more than 1e-6 relative; the runtime's output is
    the float64 sum of the same leaves, and inplace_predict is exactly the float32 sum, within the rounding bound."""
    x = _x(seed=7)
    params = {"objective": "reg:squarederror", "max_depth": 4, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=1000.0 + 300.0 * _signal(x)), num_boost_round=40)
    model = FallbackModel.from_booster(booster, FEATURES, "v1")
    expected = booster.inplace_predict(x).astype(np.float64)
    margin32, bound = _float32_sums(booster, x, _base_margin(booster))
    assert np.array_equal(margin32, expected)
    rows = np.array([model.predict_row(r) for r in x.tolist()])
    for got in (rows, model.predict_many(x[:200]), model.predict_many(x[:300])):
        n = len(got)
        assert np.all(np.abs(got - expected[:n]) <= bound[:n] + 1e-9 * np.abs(expected[:n]))


def _base_margin(booster: xgb.Booster) -> float:
    learner = json.loads(booster.save_raw("json"))["learner"]
    return fallback._parse_base_score(learner["learner_model_param"]["base_score"])


def test_exp_overflow_is_inf_as_in_xgboost() -> None:
    """Margins beyond log(FLT_MAX) give inf on every path, as xgboost's float32 expf does; finite outputs near
    there differ by xgboost's float32 margin rounding (relative error of exp = error of the margin)."""
    x = _x(seed=6)
    y = np.where(_signal(x) > 0, 3e38, 1e37)
    params = {"objective": "reg:gamma", "base_score": 1e38, "max_depth": 2, "eta": 1.0, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=4)
    model = FallbackModel.from_booster(booster, FEATURES, "v1")
    expected = booster.inplace_predict(x).astype(np.float64)
    _, bound = _float32_sums(booster, x, math.log(np.float32(1e38)))
    assert np.isinf(expected).any() and np.isfinite(expected).any()
    assert model._walk is not None
    rows = np.array([model.predict_row(r) for r in x.tolist()])
    paths = [rows, model._walk(np.ascontiguousarray(x, np.float32)), model.predict_many(x[:33]), model.predict_many(x)]
    for got in paths:
        n, want = len(got), expected[: len(got)]
        assert np.array_equal(np.isinf(got), np.isinf(want))
        finite = np.isfinite(want)
        assert np.all(np.abs(got[finite] / want[finite] - 1.0) <= 2.0 * bound[:n][finite] + 1e-6)


@pytest.mark.parametrize(
    ("transform", "margin", "expected"),
    [
        ("exp", 0.0, 1.0),
        ("exp", -800.0, 0.0),
        ("exp", 88.0, math.exp(88.0)),
        ("exp", 89.0, math.inf),
        ("exp", 1000.0, math.inf),
        ("sigmoid", -800.0, 0.0),
        ("sigmoid", 800.0, 1.0),
        ("identity", -3.5, -3.5),
    ],
)
def test_transforms_at_extreme_margins(transform: str, margin: float, expected: float) -> None:
    """The compiled return and the walk's numpy transform agree at margins where exp overflows."""
    namespace: dict[str, Callable[..., float] | float] = {"_exp": math.exp, "_inf": math.inf}
    exec("def out(m):\n" + fallback._OUTPUT[transform][0], namespace)
    out = namespace["out"]
    assert callable(out)
    assert out(margin) == pytest.approx(expected, rel=1e-12)
    array = fallback._OUTPUT[transform][1](np.array([margin]))
    assert array[0] == pytest.approx(expected, rel=1e-12)
