"""Training: the primary and fallback models of one model, evaluated on a hold-out day, registered, promoted.

``train_model`` picks the newest complete feature partitions: the last one is the hold-out day, the
``train_days`` before it the training window. A new version is promoted when there is no production
version yet, or when its hold-out AUC is not worse than the production model's (evaluated on the same
hold-out rows) by more than ``training.promote_margin``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb
from sklearn.metrics import log_loss, roc_auc_score

from jobs.feature_matrix import to_matrix
from jobs.runtime import Runtime
from warehouse.datasets import features as fstore
from warehouse.errors import RegistryError, UserError
from warehouse.registry import KINDS, Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KindResult:
    kind: str
    version: str
    features: list[str]
    metrics: dict[str, float]
    promoted: bool
    production_metrics: dict[str, float] | None
    seconds: float


@dataclass(frozen=True)
class TrainReport:
    model: str
    train_dates: list[str]
    holdout_date: str
    train_rows: int
    holdout_rows: int
    results: list[KindResult]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labelled(rt: Runtime, feature_set: str, day: dt.date, columns: list[str]) -> pa.Table:
    fs = rt.config.feature_set(feature_set)
    entity = fs.entity_column
    feats = fstore.read_partition(rt.home, feature_set, day, columns=[entity, *columns], spec=fs)
    labels = fstore.read_labels(rt.home, feature_set, day)
    return feats.join(labels, keys=entity, join_type="inner")


def _sample(table: pa.Table, max_rows: int, seed: int) -> pa.Table:
    if table.num_rows <= max_rows:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=max_rows, replace=False))
    return table.take(pa.array(idx))


def evaluate(booster: xgb.Booster, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p = booster.inplace_predict(x)
    return {"auc": float(roc_auc_score(y, p)), "logloss": float(log_loss(y, p, labels=[0, 1]))}


def _params(depth: int, eta: float, seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": depth,
        "eta": eta,
        "subsample": 0.8,
        "min_child_weight": 5,
        "eval_metric": "auc",
        "seed": seed,
        "nthread": 0,
        **(extra or {}),  # training.params of the models file (validated there)
    }


def choose_window(dates: list[dt.date], train_days: int, end: dt.date | None) -> tuple[list[dt.date], dt.date]:
    usable = [d for d in dates if end is None or d <= end]
    if len(usable) < train_days + 1:
        raise UserError(
            f"training needs {train_days + 1} daily feature partitions (train {train_days} + 1 hold-out) "
            f"up to {end or 'now'}, found {len(usable)}; run `prescore synth --days {train_days + 1}` "
            "or lower training.train_days"
        )
    return usable[-(train_days + 1) : -1], usable[-1]


def _production_metrics(
    registry: Registry, model: str, kind: str, features: list[str], x: np.ndarray, y: np.ndarray
) -> dict[str, float] | None:
    if registry.production_version(model, kind) is None:
        return None
    try:
        current = registry.load(model, kind, features)
    except RegistryError as exc:
        log.warning("production %s model of %s cannot be loaded (%s); the new one replaces it", kind, model, exc)
        return None
    return evaluate(current.booster, x, y)


def train_model(rt: Runtime, model: str, end_date: dt.date | None = None) -> TrainReport:
    """Train, evaluate, register and (conditionally) promote both kinds of ``model``."""
    spec = rt.config.model(model)
    fs = spec.feature_set
    if spec.training == "external":
        raise UserError(
            f"models.{model}.training is external: prescore does not train {model}; register its versions with "
            f"prescore register --model {model} --role primary|fallback FILE"
        )
    tspec = spec.training
    dates = fstore.available_dates(rt.home, fs, rt.config.feature_set(fs))
    train_dates, holdout = choose_window(dates, tspec.train_days, end_date)
    kinds = {"primary": rt.config.model_features(model), "fallback": list(spec.fallback_features)}
    all_cols = kinds["primary"] + [f for f in kinds["fallback"] if f not in kinds["primary"]]
    per_day = max(1, tspec.max_train_rows // len(train_dates))
    train = pa.concat_tables(
        _sample(_labelled(rt, fs, d, all_cols), per_day, rt.settings.seed + i) for i, d in enumerate(train_dates)
    )
    test = _sample(_labelled(rt, fs, holdout, all_cols), 200_000, rt.settings.seed)
    y_train = train.column("label").to_numpy().astype(np.float32)
    y_test = test.column("label").to_numpy().astype(np.float32)
    if len(np.unique(y_train)) < 2:
        raise UserError(f"training labels for {model} have a single class; check labels/{fs}")
    window: dict[str, Any] = {"train": [d.isoformat() for d in train_dates], "holdout": holdout.isoformat()}
    shapes = {
        "primary": (tspec.primary_depth, tspec.primary_trees, 0.1),
        "fallback": (tspec.fallback_depth, tspec.fallback_trees, 0.3),
    }
    results = []
    for kind in KINDS:
        start = time.perf_counter()
        cols = kinds[kind]
        depth, trees, eta = shapes[kind]
        dtrain = xgb.DMatrix(to_matrix(train, cols), label=y_train, feature_names=cols)
        booster = xgb.train(_params(depth, eta, rt.settings.seed, tspec.params), dtrain, num_boost_round=trees)
        booster.feature_names = None  # artifacts are positional; the manifest holds the ordered names
        x_test = to_matrix(test, cols)
        metrics = evaluate(booster, x_test, y_test)
        manifest = rt.registry.register(model, kind, booster, cols, metrics, window)
        prod = _production_metrics(rt.registry, model, kind, cols, x_test, y_test)
        promote = prod is None or metrics["auc"] >= prod["auc"] - tspec.promote_margin
        rt.add_model_version(manifest, promote=promote)
        log.info("%s %s %s auc=%.4f promoted=%s", model, kind, manifest.version, metrics["auc"], promote)
        results.append(
            KindResult(kind, manifest.version, cols, metrics, promote, prod, round(time.perf_counter() - start, 2))
        )
    return TrainReport(
        model=model,
        train_dates=window["train"],
        holdout_date=window["holdout"],
        train_rows=train.num_rows,
        holdout_rows=test.num_rows,
        results=results,
    )
