"""The compiled fallback model predicts what xgboost predicts, on awkward inputs too, and refuses what it cannot run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from online import fallback
from online.fallback import FallbackModel, load_fallback
from warehouse.errors import RegistryError
from warehouse.registry import ARTIFACT, Registry

FEATURES = [f"f{i}" for i in range(8)]
TOL = 1e-6


def _data(n: int, seed: int, n_features: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    x[:, 1] = np.round(x[:, 1] * 3)  # a few repeated values, so thresholds fall between them
    y = (np.sum(x[:, :3], axis=1) + rng.normal(scale=0.5, size=n) > 0).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan  # xgboost learns a default direction per node
    return x, y


def _train(rounds: int, depth: int, seed: int = 0, **params: Any) -> xgb.Booster:
    x, y = _data(3000, seed)
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": depth, "nthread": 1, **params}
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=rounds)


BOOSTERS = {
    "30x4": lambda: _train(30, 4),
    "depth1": lambda: _train(20, 1, seed=1),
    "one_tree": lambda: _train(1, 4, seed=2),
    "base_score_0.3": lambda: _train(30, 4, seed=3, base_score=0.3),
}


@pytest.fixture(scope="module", params=sorted(BOOSTERS))
def booster(request: pytest.FixtureRequest) -> xgb.Booster:
    return BOOSTERS[request.param]()


def _thresholds(booster: xgb.Booster) -> dict[int, list[float]]:
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    out: dict[int, list[float]] = {}
    for tree in trees:
        for f, c, lc in zip(tree["split_indices"], tree["split_conditions"], tree["left_children"], strict=True):
            if lc != -1:
                out.setdefault(f, []).append(float(np.float32(c)))
    return out


def _awkward_rows(booster: xgb.Booster, n: int = 20_000, seed: int = 7) -> np.ndarray:
    """float64 rows: random values with NaNs, extremes, and values on, beside and between float32 thresholds."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8))
    x[rng.random(x.shape) < 0.1] = np.nan
    extremes = np.array([1e30, -1e30, 0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, -1e-45])
    mask = rng.random(x.shape) < 0.05
    x[mask] = rng.choice(extremes, size=mask.sum())
    near: list[tuple[int, float]] = []
    for f, ts in _thresholds(booster).items():
        for t in ts:
            t32 = np.float32(t)
            down = float(np.nextafter(t32, np.float32(-np.inf)))
            up = float(np.nextafter(t32, np.float32(np.inf)))
            mids = [(down + t) / 2, (t + up) / 2]  # float64 values that float32 rounding resolves half-to-even
            candidates = [t, down, up, *mids, *(np.nextafter(m, s) for m in mids for s in (-np.inf, np.inf))]
            near += [(f, float(c)) for c in candidates]
    if near:
        rows = rng.integers(0, n, size=(len(near), 3))  # each value lands in three random rows
        for (f, value), targets in zip(near, rows, strict=True):
            x[targets, f] = value
    return x


def test_predict_row_and_many_match_inplace_predict(booster: xgb.Booster) -> None:
    """20,000 awkward rows: every prediction path agrees with xgboost's inplace_predict within 1e-6."""
    model = FallbackModel.from_booster(booster, FEATURES, "v1")
    x = _awkward_rows(booster)
    expected = booster.inplace_predict(x).astype(np.float64)

    rows = np.array([model.predict_row(r) for r in x.tolist()])
    assert np.max(np.abs(rows - expected)) <= TOL

    # predict_many in chunks that hit the row loop, the numpy walk and xgboost's batch predictor
    sizes = [1, fallback.SMALL_BATCH, fallback.SMALL_BATCH + 1, 100, fallback.WALK_MAX_ROWS, 5000]
    start = 0
    for size in sizes:
        got = model.predict_many(x[start : start + size])
        assert got.dtype == np.float64 and got.shape == (size,)
        assert np.max(np.abs(got - expected[start : start + size])) <= TOL, size
        start += size


def test_predict_row_accepts_numpy_rows() -> None:
    """A row of numpy float32 scalars (sliced from an array) scores like the same row as Python floats."""
    booster = BOOSTERS["30x4"]()
    model = FallbackModel.from_booster(booster, FEATURES, "v1")
    x = _awkward_rows(booster, n=2000).astype(np.float32)
    expected = booster.inplace_predict(x)
    got = np.array([model.predict_row(row) for row in x])  # rows of np.float32
    assert np.max(np.abs(got - expected)) <= TOL


@pytest.mark.parametrize(
    "threshold",
    [0.0, -0.0, 1.0, -1.0, 0.1, -2.5e-3, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38, 16777217.0],
)
def test_left_test_equals_float32_comparison(threshold: float) -> None:
    """The float64 bound decides exactly like ``float32(x) < threshold`` around the threshold."""
    t = np.float32(threshold)
    op, bound_text = fallback._left_test(float(t))
    bound = float(bound_text)
    with np.errstate(over="ignore"):  # nextafter(FLT_MAX, inf) is inf
        neighbours = {float(np.nextafter(t, np.float32(-np.inf))), float(np.nextafter(t, np.float32(np.inf)))}
    candidates = {bound, float(t), *neighbours}
    candidates |= {float(np.nextafter(c, s)) for c in list(candidates) for s in (-np.inf, np.inf)}
    for x in candidates:
        with np.errstate(over="ignore"):
            expected = bool(np.float32(x) < t)
        assert (x < bound if op == "<" else x <= bound) == expected, (x, op, bound)


def test_predict_dict_maps_names() -> None:
    """Features are taken by name (order and extra names do not matter); a missing one is named."""
    model = FallbackModel.from_booster(BOOSTERS["30x4"](), FEATURES, "v1")
    values = [0.5, -1.0, math.nan, 2.0, 0.0, 1.5, -0.25, 3.0]
    by_name = dict(reversed(list(zip(FEATURES, values, strict=True))))
    assert model.predict_dict({**by_name, "unused": 1.0}) == model.predict_row(values)
    del by_name["f3"]
    with pytest.raises(ValueError, match="missing feature 'f3'"):
        model.predict_dict(by_name)


def test_bad_inputs_raise_value_error() -> None:
    """Wrong row length, a non-number, or a wrongly shaped matrix is a ValueError that says what was expected."""
    model = FallbackModel.from_booster(BOOSTERS["one_tree"](), FEATURES, "v1")
    with pytest.raises(ValueError, match="expected 8 feature values"):
        model.predict_row([1.0, 2.0])
    with pytest.raises(ValueError, match="feature 'f2' is not a number"):
        model.predict_row([1.0, 2.0, None, 0, 0, 0, 0, 0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"expected an \(n, 8\) matrix"):
        model.predict_many(np.zeros((3, 7)))
    with pytest.raises(ValueError, match="features"):
        FallbackModel.from_booster(BOOSTERS["one_tree"](), FEATURES[:7], "v1")


def test_warm_and_metadata() -> None:
    model = FallbackModel.from_booster(BOOSTERS["depth1"](), FEATURES, "v7")
    model.warm()
    assert model.features == FEATURES and model.version == "v7"
    assert 0.0 < model.predict_row([math.nan] * 8) < 1.0


def _registered(tmp_path: Path, booster: xgb.Booster) -> tuple[Registry, str]:
    registry = Registry(tmp_path)
    manifest = registry.register("churn", "fallback", booster, FEATURES, metrics={}, training_window={})
    registry.promote("churn", "fallback", manifest.version)
    return registry, manifest.version


def test_load_fallback_round_trip(tmp_path: Path) -> None:
    """The promoted registry artifact loads into a model with its version and xgboost's predictions."""
    booster = BOOSTERS["30x4"]()
    _, version = _registered(tmp_path, booster)
    model = load_fallback(tmp_path, "churn", FEATURES)
    assert model.version == version and model.features == FEATURES
    x = _awkward_rows(booster, n=500)
    expected = booster.inplace_predict(x)
    assert np.max(np.abs(np.array([model.predict_row(r) for r in x.tolist()]) - expected)) <= TOL
    assert np.max(np.abs(model.predict_many(x) - expected)) <= TOL


def test_load_fallback_refuses_corrupted_artifact(tmp_path: Path) -> None:
    """One flipped byte in model.ubj fails the sha256 check."""
    registry, version = _registered(tmp_path, BOOSTERS["one_tree"]())
    artifact = registry.kind_dir("churn", "fallback") / version / ARTIFACT
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="does not match its manifest"):
        load_fallback(tmp_path, "churn", FEATURES)


def test_load_fallback_refuses_other_features(tmp_path: Path) -> None:
    _registered(tmp_path, BOOSTERS["one_tree"]())
    with pytest.raises(RegistryError, match="do not match"):
        load_fallback(tmp_path, "churn", list(reversed(FEATURES)))


def _gblinear_booster() -> xgb.Booster:
    x, y = _data(300, 5)
    params = {"objective": "binary:logistic", "booster": "gblinear", "nthread": 1}
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=2)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _train(3, 3, objective="binary:hinge"), "objective 'binary:hinge' is not supported; supported: "),
        (lambda: _train(3, 3, objective="reg:squaredlogerror"), "objective 'reg:squaredlogerror'"),
        (lambda: _train(3, 3, objective="survival:cox"), "objective 'survival:cox'"),
        (lambda: _train(3, 3, objective="reg:quantileerror", quantile_alpha=[0.2, 0.8]), "multi-quantile"),
        (_gblinear_booster, "booster 'gblinear'"),
        (lambda: _train(3, 3, booster="dart", rate_drop=0.3), "booster 'dart'"),
    ],
    ids=["hinge", "squaredlogerror", "cox", "two_quantiles", "gblinear", "dart"],
)
def test_unsupported_models_are_refused(make: Any, message: str) -> None:
    """Objectives outside FALLBACK_OBJECTIVES, two outputs, and non-gbtree boosters (dart weighs its trees, which
    the compiled sum does not) are refused by name."""
    with pytest.raises(ValueError, match=message):
        FallbackModel.from_booster(make(), FEATURES, "v1")


@pytest.mark.parametrize("objective", ["multi:softprob", "multi:softmax"])
def test_multiclass_is_refused(objective: str) -> None:
    x, y = _data(300, 6)
    params = {"objective": objective, "num_class": 3, "max_depth": 2, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=(y * 2)), num_boost_round=2)
    with pytest.raises(ValueError, match=f"objective '{objective}'"):
        FallbackModel.from_booster(booster, FEATURES, "v1")


def test_booster_without_trees_is_refused() -> None:
    """xgboost predicts an untrained base_score as a margin for a 0-round booster; we refuse such a model."""
    with pytest.raises(ValueError, match="no trees"):
        FallbackModel.from_booster(_train(0, 4), FEATURES, "v1")


def test_base_score_formats() -> None:
    """xgboost 3.x writes "[3E-1]"; older models a plain number; multi-target vectors are refused."""
    assert fallback._parse_base_score("[3E-1]") == pytest.approx(0.3)
    assert fallback._parse_base_score("0.5") == 0.5
    assert fallback._parse_base_score(0.25) == 0.25
    with pytest.raises(ValueError, match="multi-target"):
        fallback._parse_base_score("[5E-1,4E-1]")
