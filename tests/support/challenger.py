"""Challenger versions for the comparison and promotion tests: a small XGBoost primary trained in a second on one
fixture day of the synthetic warehouse and registered as a challenger of the trained champion."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from jobs.feature_matrix import to_matrix
from jobs.runtime import Runtime
from tests.support.clock import day
from warehouse.datasets import features as fstore


def register_challenger(
    rt: Runtime, model: str = "churn", *, rounds: int = 15, depth: int = 4, noise: bool = False, seed: int = 1
) -> str:
    """Train a primary on the fixture day ``day(-3)`` and make it a challenger of ``model``; returns its version.
    ``noise``: trained on shuffled labels, so its scores barely agree with the champion's (a challenger the gate
    refuses)."""
    spec = rt.config.model(model)
    fs = rt.config.feature_set(spec.feature_set)
    features = rt.config.model_features(model)
    table = fstore.read_partition(rt.home, spec.feature_set, day(-3), columns=features, spec=fs)
    y = fstore.read_labels(rt.home, spec.feature_set, day(-3)).column(fstore.LABEL_COLUMN).to_numpy()
    if noise:
        y = np.random.default_rng(seed).permutation(y)
    params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.3, "seed": seed, "nthread": 2}
    booster = xgb.train(params, xgb.DMatrix(to_matrix(table, features), label=y, feature_names=features), rounds)
    manifest = rt.registry.register(model, "primary", booster, features, {}, {"train": [day(-3).isoformat()]})
    rt.add_model_version(manifest, promote=False, challenger=True)
    return manifest.version
