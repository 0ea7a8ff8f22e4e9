"""Categorical splits compile to xgboost's decisions on category codes: in the set goes right, NaN to the default
child, anything else (unseen, negative, fractional-but-truncated, huge) as xgboost decides."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from online import fallback
from online.fallback import FallbackModel, load_fallback
from tests.online.test_fallback_objectives import assert_all_paths_match
from warehouse.registry import Registry

FEATURES = ["amount", "colour", "tenure", "region"]
N = 3000


def _frame(seed: int, n_colour: int, n_region: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Two numeric and two pd.Categorical columns (with missing values); the label depends on both categories."""
    rng = np.random.default_rng(seed)
    colour, region = rng.integers(0, n_colour, N), rng.integers(0, n_region, N)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=N),
            "colour": pd.Categorical.from_codes(colour, categories=[f"c{i}" for i in range(n_colour)]),
            "tenure": rng.normal(size=N),
            "region": pd.Categorical.from_codes(region, categories=[f"r{i}" for i in range(n_region)]),
        }
    )
    for column in FEATURES:
        frame.loc[rng.random(N) < 0.1, column] = np.nan
    effect = rng.normal(size=n_colour)[colour] + rng.normal(size=n_region)[region]
    y = (effect + frame["amount"].fillna(0.0) + rng.normal(scale=0.3, size=N) > 0).astype(np.float64)
    return frame, y


def _train(n_colour: int, n_region: int, objective: str = "binary:logistic", **params: Any) -> xgb.Booster:
    frame, y = _frame(0, n_colour, n_region)
    if objective == "reg:squarederror":
        y = y + frame["tenure"].fillna(0.0).to_numpy()
    params = {"objective": objective, "tree_method": "hist", "max_depth": 4, "nthread": 1, **params}
    booster = xgb.train(params, xgb.DMatrix(frame, label=y, enable_categorical=True), num_boost_round=20)
    return booster


def _stripped(booster: xgb.Booster) -> xgb.Booster:
    """How artifacts are stored: no feature names or types, the categorical splits still in the trees."""
    out = booster.copy()
    out.feature_names = None
    out.feature_types = None
    return out


def _category_sets(booster: xgb.Booster) -> list[list[int]]:
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    out = []
    for tree in trees:
        for s, z in zip(tree["categories_segments"], tree["categories_sizes"], strict=True):
            out.append(tree["categories"][s : s + z])
    return out


def _code_rows(n_colour: int, n_region: int, seed: int = 1) -> np.ndarray:
    """Rows of codes: every seen code, NaN, the first unseen code (= number of categories), far unseen, negative,
    fractional, near-integer, huge and infinite values, with NaNs and random numeric columns."""
    rng = np.random.default_rng(seed)
    specials = [math.nan, -1.0, -0.5, -0.0, 2.5, 0.9999999999, 1e30, math.inf, -math.inf, 2.0**24, 2.0**24 - 1]
    rows = []
    for colour in [*range(n_colour + 3), *specials]:
        for region in [*range(n_region + 2), *specials]:
            rows.append([rng.normal(), colour, rng.normal(), region])
    x = np.array(rows * 3, dtype=np.float64)
    x[len(rows) :, 0] = rng.normal(size=len(x) - len(rows))
    x[rng.random(len(x)) < 0.1, 0] = np.nan
    x[rng.random(len(x)) < 0.1, 2] = np.nan
    return x


MODELS = {
    # max_cat_to_onehot=1: partition splits (a set of several codes goes right)
    "partition": lambda: _train(9, 5, max_cat_to_onehot=1),
    # few categories, default max_cat_to_onehot: one-hot style splits (one code goes right)
    "onehot": lambda: _train(3, 2),
    "partition_regression": lambda: _train(9, 5, objective="reg:squarederror", max_cat_to_onehot=1),
    "partition_poisson": lambda: _train(9, 5, objective="count:poisson", max_cat_to_onehot=1),
}
SIZES = {"partition": (9, 5), "onehot": (3, 2), "partition_regression": (9, 5), "partition_poisson": (9, 5)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def trained(request: pytest.FixtureRequest) -> tuple[str, xgb.Booster]:
    return request.param, MODELS[request.param]()


def test_models_have_the_intended_splits(trained: tuple[str, xgb.Booster]) -> None:
    name, booster = trained
    sizes = [len(s) for s in _category_sets(booster)]
    assert sizes, "no categorical split"
    assert max(sizes) > 1 if name.startswith("partition") else set(sizes) == {1}


@pytest.mark.parametrize("strip", [True, False], ids=["stripped", "with_types"])
def test_categorical_matches_inplace_predict(trained: tuple[str, xgb.Booster], strip: bool) -> None:
    """Codes incl. NaN, unseen, negative and out-of-range values score as inplace_predict on every path, float64
    rows and float32 rows alike; the stored (stripped) artifact predicts as the trained booster."""
    name, booster = trained
    if strip:
        booster = _stripped(booster)
    model = FallbackModel.from_booster(booster, FEATURES, "v1")
    assert model._walk is not None and model._walk.in_set is not None
    x = _code_rows(*SIZES[name])
    assert_all_paths_match(model, booster, x)
    x32 = x.astype(np.float32)
    assert_all_paths_match(model, booster, x32.astype(np.float64))
    rows32 = np.array([model.predict_row(r) for r in x32])  # numpy float32 scalars
    assert np.max(np.abs(rows32 - booster.inplace_predict(x32))) <= 1e-6
    assert np.array_equal(_stripped(booster).inplace_predict(x), booster.inplace_predict(x))


def test_compiled_source_uses_set_membership() -> None:
    """Each categorical node is a frozenset test on the feature's code; numeric nodes stay comparisons."""
    model = FallbackModel.from_booster(_stripped(MODELS["partition"]()), FEATURES, "v1")
    assert " in _S0" in model.source and "c1 = x1 if x1 in _U1 or x1 != x1 else _code(x1, _U1)" in model.source
    assert "x0 < " in model.source or "x0 >= " in model.source or "x0 <= " in model.source


def test_trained_on_numpy_codes() -> None:
    """A model trained on a numpy code matrix with feature_types=['c', ...] compiles the same way."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 4))
    x[:, 1] = rng.integers(0, 12, N)
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.isin(x[:, 1], [1, 4, 5, 9]) ^ (x[:, 0] > 0)).astype(np.float64)
    dm = xgb.DMatrix(x, label=y, feature_types=["q", "c", "q", "q"], enable_categorical=True)
    params = {"objective": "binary:logistic", "max_depth": 3, "max_cat_to_onehot": 1, "nthread": 1}
    booster = _stripped(xgb.train(params, dm, num_boost_round=10))
    assert _category_sets(booster)
    assert_all_paths_match(FallbackModel.from_booster(booster, FEATURES, "v1"), booster, _code_rows(12, 1))


def test_without_walk_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """A category table over MAX_WALK_CATEGORY_CELLS leaves no walk; batches use predict_row and inplace_predict."""
    monkeypatch.setattr(fallback, "MAX_WALK_CATEGORY_CELLS", 0)
    booster = _stripped(MODELS["partition"]())
    model = FallbackModel.from_booster(booster, FEATURES, "v1")
    assert model._walk is None
    assert_all_paths_match(model, booster, _code_rows(9, 5))


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (3.0, 3.0),
        (2.5, 2.0),
        (0.9999999999, 1.0),  # float32 rounds it to 1 before truncation
        (-0.0, 0.0),
        (-1e-50, 0.0),  # float32 -0.0
        (-0.5, -1.0),
        (7.0, -1.0),  # not a known code
        (1e30, -1.0),
        (math.inf, -1.0),
        (-math.inf, -1.0),
    ],
)
def test_category_code(value: float, code: float) -> None:
    """A value that is not a known code maps to xgboost's category, or to -1.0 (left at every node)."""
    assert fallback._category_code(value, frozenset({0.0, 1.0, 2.0, 3.0})) == code


def test_registry_round_trip(tmp_path: Path) -> None:
    """A categorical fallback registered and loaded through the registry predicts as the booster."""
    booster = _stripped(MODELS["partition"]())
    registry = Registry(tmp_path)
    manifest = registry.register("churn", "fallback", booster, FEATURES, metrics={}, training_window={})
    registry.promote("churn", "fallback", manifest.version)
    model = load_fallback(tmp_path, "churn", FEATURES)
    assert_all_paths_match(model, booster, _code_rows(9, 5))
