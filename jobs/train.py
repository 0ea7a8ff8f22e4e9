"""Training: the primary and fallback models of one model, evaluated on a hold-out day, registered, promoted.

``train_model`` picks the newest complete feature partitions: the last one is the hold-out day, the
``train_days`` before it the training window. Both kinds are trained with ``training.objective`` (one of
``warehouse.objectives.TRAINABLE_OBJECTIVES``, ``binary:logistic`` by default). Before training, the labels are
checked against the objective (``warehouse.objectives.check_labels``: 0/1 for ``binary:logistic``, [0, 1] for
``reg:logistic``, >= 0 for ``count:poisson`` and ``reg:tweedie``, > 0 for ``reg:gamma``, finite for all); a
label the objective cannot learn from is a ``UserError`` naming the model, the objective and the values.

Each version is registered with its baseline (``training_baseline``, ``jobs.profile``): the profile of the training
sample it was fitted on and its scores there, what ``prescore monitor`` measures drift against.

Hold-out metrics and promotion, by objective (``holdout_metrics``, ``should_promote``). The production model is
evaluated on the same hold-out rows, with the same metrics; a new version is promoted when there is no
production version yet (or it cannot be loaded), or when:

- ``binary:logistic``: metrics ``auc`` and ``logloss``; promoted when ``auc >= production auc - promote_margin``
  (an absolute margin: AUC is already on a [0, 1] scale).
- every other objective: metrics ``rmse`` and ``mae`` (and ``logloss`` for ``reg:logistic``), in the label's
  units; promoted when ``rmse <= production rmse * (1 + promote_margin)``: a relative margin, so one
  ``promote_margin`` means the same whatever the labels' scale (the default 0.005 accepts an RMSE up to 0.5 %
  worse).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import profile, score_metrics
from jobs.feature_matrix import to_matrix
from jobs.runtime import Runtime
from warehouse.datasets import features as fstore
from warehouse.errors import RegistryError, UserError
from warehouse.objectives import check_labels
from warehouse.registry import KINDS, Registry
from warehouse.xgboost_loader import xgboost

if TYPE_CHECKING:
    import xgboost as xgb
else:
    xgb = xgboost()  # without scikit-learn (warehouse.xgboost_loader)

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
    """The day's feature rows that have a label, in feature-file order, with a ``label`` column.

    Matched by entity id with ``index_in`` rather than a hash join: the order (hence the sample, hence the model)
    is the same on every run over the same data."""
    fs = rt.config.feature_set(feature_set)
    entity = fs.entity_column
    feats = fstore.read_partition(rt.home, feature_set, day, columns=[entity, *columns], spec=fs)
    labels = fstore.read_labels(rt.home, feature_set, day)
    where = pc.index_in(feats.column(entity), value_set=labels.column(entity).combine_chunks())
    found = pc.is_valid(where)
    return feats.filter(found).append_column(
        fstore.LABEL_COLUMN, labels.column(fstore.LABEL_COLUMN).take(where.filter(found))
    )


def _sample(table: pa.Table, max_rows: int, seed: int) -> pa.Table:
    if table.num_rows <= max_rows:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=max_rows, replace=False))
    return table.take(pa.array(idx))


BINARY = "binary:logistic"


def holdout_metrics(objective: str, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """``auc`` and ``logloss`` for ``binary:logistic``; ``rmse`` and ``mae`` (plus ``logloss`` for ``reg:logistic``)
    for every other objective."""
    if objective == BINARY:
        area = score_metrics.auc(y, p)
        if area is None:
            raise UserError("the hold-out day's labels have a single class: its AUC is undefined; check the labels")
        return {"auc": area, "logloss": score_metrics.log_loss(y, p)}
    y64, p64 = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    err = p64 - y64
    metrics = {"rmse": float(np.sqrt(np.mean(err * err))), "mae": float(np.mean(np.abs(err)))}
    if objective == "reg:logistic":  # labels in [0, 1], not only 0/1: the cross-entropy by hand
        q = np.clip(p64, 1e-15, 1 - 1e-15)
        metrics["logloss"] = float(-np.mean(y64 * np.log(q) + (1 - y64) * np.log1p(-q)))
    return metrics


def should_promote(
    objective: str, metrics: dict[str, float], production: dict[str, float] | None, margin: float
) -> bool:
    """The promotion rule of the module docstring: AUC within ``margin`` (absolute) for ``binary:logistic``, RMSE
    within ``margin`` (relative) for every other objective; always when there is no production model."""
    if production is None:
        return True
    if objective == BINARY:
        return metrics["auc"] >= production["auc"] - margin
    return metrics["rmse"] <= production["rmse"] * (1.0 + margin)


def evaluate(booster: xgb.Booster, x: np.ndarray, y: np.ndarray, objective: str = BINARY) -> dict[str, float]:
    return holdout_metrics(objective, y, booster.inplace_predict(x))


def _params(
    depth: int, eta: float, seed: int, extra: dict[str, Any] | None = None, objective: str = BINARY
) -> dict[str, Any]:
    return {
        "objective": objective,
        "tree_method": "hist",
        "max_depth": depth,
        "eta": eta,
        "subsample": 0.8,
        "min_child_weight": 5,
        "eval_metric": "auc" if objective == BINARY else "rmse",
        "seed": seed,
        "nthread": 0,
        **(extra or {}),  # training.params of the models file (validated there; never the objective)
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
    registry: Registry,
    model: str,
    kind: str,
    features: list[str],
    test: pa.Table,
    coded: tuple[dict[str, list[str]], np.ndarray],
    y: np.ndarray,
    objective: str,
) -> dict[str, float] | None:
    """The production version's hold-out metrics; ``coded`` is (category orders, the hold-out matrix in them),
    reused when the production version codes its categories the same way."""
    if registry.production_version(model, kind) is None:
        return None
    try:
        current = registry.load(model, kind, features)
    except RegistryError as exc:
        log.warning("production %s model of %s cannot be loaded (%s); the new one replaces it", kind, model, exc)
        return None
    orders, x = coded
    if current.manifest.categories != orders:
        x = to_matrix(test, features, current.manifest.categories)
    return evaluate(current.booster, x, y, objective)


def category_orders(rt: Runtime, model: str, columns: list[str]) -> dict[str, list[str]]:
    """The code order of each category feature among ``columns``: its contract's ``categories`` (required)."""
    fs_name = rt.config.model(model).feature_set
    orders = {}
    for name, feature in rt.config.feature_set(fs_name).features.items():
        if name in columns and feature.dtype == "category":
            if feature.categories is None:
                raise UserError(
                    f"prescore train needs feature_sets.{fs_name}.features.{name}.categories: a category feature is "
                    "trained on codes in that order (or register a model trained elsewhere with prescore register)"
                )
            orders[name] = list(feature.categories)
    return orders


def _labels(table: pa.Table) -> np.ndarray:
    """The label column as float32 (a null becomes NaN, which ``check_labels`` refuses)."""
    column = table.column(fstore.LABEL_COLUMN)
    if column.null_count:
        column = column.cast(pa.float64()).fill_null(float("nan"))
    return column.to_numpy().astype(np.float32)


def _check_labels(model: str, feature_set: str, objective: str, y: np.ndarray, days: list[dt.date]) -> None:
    where = days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"
    problem = check_labels(y, objective, what=f"labels for {model} ({where})")
    if problem:
        raise UserError(f"{problem}; fix labels/{feature_set} or choose models.{model}.training.objective to fit them")


def training_baseline(
    train: pa.Table, cols: list[str], orders: dict[str, list[str]], scores: np.ndarray, dates: list[str]
) -> dict[str, Any]:
    """The baseline of a trained version (``jobs.profile``): its training sample's features and its scores on it."""
    builder = profile.ProfileBuilder(cols, {name: orders[name] for name in orders})
    builder.add(train.select(cols))
    return profile.baseline(builder.profile(), scores, {"kind": "training", "dates": dates, "rows": train.num_rows})


def train_model(rt: Runtime, model: str, end_date: dt.date | None = None, *, challenger: bool = False) -> TrainReport:
    """Train, evaluate, register and (conditionally) promote both kinds of ``model``.

    ``challenger``: the new primary version becomes a challenger (``warehouse.rollout``: scored in shadow every
    night, promoted only by ``prescore promote``) and neither kind is promoted; the model needs a champion."""
    spec = rt.config.model(model)
    fs = spec.feature_set
    if spec.training == "external":
        raise UserError(
            f"models.{model}.training is external: prescore does not train {model}; register its versions with "
            f"prescore register --model {model} --role primary|fallback FILE"
        )
    tspec = spec.training
    if challenger:
        rt.registry.require_room_for_challenger(model)
    dates = fstore.available_dates(rt.home, fs, rt.config.feature_set(fs))
    train_dates, holdout = choose_window(dates, tspec.train_days, end_date)
    kinds = {"primary": rt.config.model_features(model), "fallback": list(spec.fallback_features)}
    all_cols = kinds["primary"] + [f for f in kinds["fallback"] if f not in kinds["primary"]]
    per_day = max(1, tspec.max_train_rows // len(train_dates))
    train = pa.concat_tables(
        _sample(_labelled(rt, fs, d, all_cols), per_day, rt.settings.seed + i) for i, d in enumerate(train_dates)
    )
    test = _sample(_labelled(rt, fs, holdout, all_cols), 200_000, rt.settings.seed)
    objective = tspec.objective
    y_train, y_test = _labels(train), _labels(test)
    _check_labels(model, fs, objective, y_train, train_dates)
    _check_labels(model, fs, objective, y_test, [holdout])
    if objective == BINARY and len(np.unique(y_train)) < 2:
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
        orders = category_orders(rt, model, cols)
        types = ["c" if c in orders else "q" for c in cols]
        x_train = to_matrix(train, cols, orders)
        dtrain = xgb.DMatrix(x_train, label=y_train, feature_names=cols, feature_types=types,
                             enable_categorical=bool(orders))  # fmt: skip
        params = _params(depth, eta, rt.settings.seed, tspec.params, objective)
        booster = xgb.train(params, dtrain, num_boost_round=trees)
        booster.feature_names, booster.feature_types = None, None  # positional: the manifest holds names and orders
        x_test = to_matrix(test, cols, orders)
        metrics = evaluate(booster, x_test, y_test, objective)
        base = training_baseline(train, cols, orders, booster.inplace_predict(x_train), window["train"])
        manifest = rt.registry.register(model, kind, booster, cols, metrics, window, categories=orders,
                                        baseline=base)  # fmt: skip
        prod = _production_metrics(rt.registry, model, kind, cols, test, (orders, x_test), y_test, objective)
        promote = not challenger and should_promote(objective, metrics, prod, tspec.promote_margin)
        rt.add_model_version(manifest, promote=promote, challenger=challenger and kind == "primary")
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        log.info("%s %s %s %s %s promoted=%s", model, kind, manifest.version, objective, shown, promote)
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
