"""The declarative models file: feature sets (contracts) and models, validated at start-up.

Format (YAML)::

    feature_sets:
      customer_daily:
        entity_column: entity_id
        timestamp_column: as_of
        features:
          f00: {dtype: float32, min: -100, max: 100, max_null_fraction: 0.05}
    models:
      churn:
        feature_set: customer_daily
        schedule: "0 2 * * *"
        fallback_features: [f00, f01]
        staleness: {max_age_s: 129600, hard_max_age_s: 604800}
        default_score: 0.05
        training: {objective: binary:logistic, train_days: 3, params: {eta: 0.1}}   # or: training: external

Errors name the offending field, e.g. ``models.churn.staleness.max_age_s: must be > 0``.
"""

from __future__ import annotations

import datetime as dt
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from warehouse.errors import ConfigError, UnknownFeatureSetError, UnknownModelError
from warehouse.objectives import TRAINABLE_OBJECTIVES, check_thresholds

FeatureDtype = Literal["float32", "float64", "int8", "int16", "int32", "int64", "bool", "category"]
UnknownCategory = Literal["missing", "reject"]
MAX_CATEGORIES = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One feature column of a contract: its dtype, allowed range and null policy.

    A ``category`` feature is a string column (``string``, ``large_string`` or a dictionary of strings) fed to
    XGBoost's native categorical support. ``categories`` lists the allowed values (optional; at most
    ``MAX_CATEGORIES``); ``unknown`` says what a value outside them is: ``missing`` (scored as a null, and counted
    with the nulls against ``max_null_fraction``) or ``reject`` (a contract violation, a 422 online).
    """

    dtype: FeatureDtype = "float32"
    min: float | None = None
    max: float | None = None
    max_null_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    categories: list[str] | None = Field(default=None, min_length=1, max_length=MAX_CATEGORIES)
    unknown: UnknownCategory = "missing"

    @model_validator(mode="after")
    def _range_ordered(self) -> FeatureSpec:
        if self.dtype in ("bool", "category") and (self.min is not None or self.max is not None):
            raise ValueError(f"a {self.dtype} feature takes no min or max")
        if self.dtype != "category" and (self.categories is not None or self.unknown != "missing"):
            raise ValueError(f"categories and unknown apply to dtype category only, not {self.dtype}")
        if self.categories is not None:
            if len(set(self.categories)) != len(self.categories):
                twice = sorted({c for c in self.categories if self.categories.count(c) > 1})
                raise ValueError(f"categories lists {twice} more than once")
            if any(not c for c in self.categories):
                raise ValueError("categories holds an empty string; list non-empty values")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class FeatureSetSpec(_Strict):
    """A feature-set contract: the columns every partition must have, in order.

    ``path``: where the partitions are when they are not under ``PRESCORE_HOME/features/<name>/dt=YYYY-MM-DD/`` —
    a local path or fsspec URL with one ``{date}`` in its last segment, e.g. ``s3://lake/customers/ds={date}/``,
    the date written with ``date_format``. Nothing is copied: readiness, validation, scoring, training and
    backfills read there. ``success_marker``: whether a partition is complete only once its ``_SUCCESS`` file
    exists (the default), or as soon as it holds a Parquet file (a lake whose writer leaves no marker).
    ``entity_dtype``: ``string`` or ``int64`` ids in the source (served as their decimal text).
    """

    entity_column: str = "entity_id"
    entity_dtype: Literal["string", "int64"] = "string"
    timestamp_column: str = "as_of"
    path: str | None = None
    date_format: str = "%Y-%m-%d"
    success_marker: bool = True
    features: dict[str, FeatureSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _path_template(self) -> FeatureSetSpec:
        if self.path is None:
            return self
        if self.path.count("{date}") != 1:
            raise ValueError(f"path {self.path!r} must hold {{date}} exactly once, e.g. s3://lake/table/ds={{date}}/")
        if "/" in self.path.split("{date}", 1)[1].rstrip("/"):
            raise ValueError(f"path {self.path!r}: {{date}} must be in the last path segment")
        probe = dt.date(2026, 1, 31)
        try:
            text = probe.strftime(self.date_format)
            back = dt.datetime.strptime(text, self.date_format).date()
        except ValueError as exc:
            raise ValueError(f"date_format {self.date_format!r} is not a strftime date format: {exc}") from None
        if back != probe or "/" in text:
            raise ValueError(f"date_format {self.date_format!r} does not write a whole date in one path segment")
        return self

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)


Freshness = Literal["fresh", "stale", "expired"]


def freshness(age_s: float, max_age_s: float, hard_max_age_s: float) -> Freshness:
    """How a score of age ``age_s`` counts: ``fresh`` up to ``max_age_s``, ``stale`` up to ``hard_max_age_s``
    (both inclusive), ``expired`` beyond (and for a NaN age). Pure; the one home of this rule."""
    return "fresh" if age_s <= max_age_s else "stale" if age_s <= hard_max_age_s else "expired"


class StalenessPolicy(_Strict):
    """How old a served score may be: fresh up to ``max_age_s``, stale-but-served up to ``hard_max_age_s``."""

    max_age_s: float = Field(gt=0)
    hard_max_age_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _hard_after_soft(self) -> StalenessPolicy:
        if self.hard_max_age_s < self.max_age_s:
            raise ValueError("hard_max_age_s must be >= max_age_s")
        return self

    def freshness(self, age_s: float) -> Freshness:
        """``freshness(age_s, max_age_s, hard_max_age_s)`` under this policy."""
        return freshness(age_s, self.max_age_s, self.hard_max_age_s)


class Thresholds(_Strict):
    """Optional decision thresholds: score >= value → label (checked from the highest value down).

    Each value must lie in the range of the model's scores (``warehouse.objectives.output_range`` of
    ``training.objective``: [0, 1] for a probability); ``ModelSpec`` checks it."""

    labels: dict[str, float] = Field(default_factory=dict)


# XGBoost parameters ``training.params`` may set for ``prescore train``. The objective is not one of them: it is
# ``training.objective`` (one of ``warehouse.objectives.TRAINABLE_OBJECTIVES``; any other objective comes in through
# ``prescore register``). Depth and tree counts have their own fields. ``OBJECTIVE_PARAMS`` apply to one objective
# each and are refused with any other.
OBJECTIVE_PARAMS = {"huber_slope": "reg:pseudohubererror", "tweedie_variance_power": "reg:tweedie"}
TRAINING_PARAMS = frozenset({
    "eta", "subsample", "colsample_bytree", "colsample_bylevel", "colsample_bynode", "min_child_weight", "gamma",
    "lambda", "alpha", "max_bin", "max_delta_step", "scale_pos_weight", "grow_policy", "max_leaves",
    *OBJECTIVE_PARAMS,
})  # fmt: skip


class TrainingSpec(_Strict):
    """How ``prescore train`` trains the model (``training: external`` instead: only registered, never trained).

    ``objective``: the XGBoost objective of both the primary and the fallback model, one of ``TRAINABLE_OBJECTIVES``
    (``binary:logistic`` by default); it decides the hold-out metrics and the promotion rule (``jobs.train``) and
    the range thresholds must lie in (``warehouse.objectives``)."""

    objective: str = "binary:logistic"
    params: dict[str, float | int | str] = Field(default_factory=dict)
    train_days: int = Field(default=3, ge=1)
    holdout_days: int = Field(default=1, ge=1)
    max_train_rows: int = Field(default=400_000, ge=1000)
    primary_trees: int = Field(default=200, ge=1)
    primary_depth: int = Field(default=8, ge=1, le=16)
    fallback_trees: int = Field(default=30, ge=1)
    fallback_depth: int = Field(default=4, ge=1, le=4)
    promote_margin: float = Field(default=0.005, ge=0.0)

    @model_validator(mode="after")
    def _known_params(self) -> TrainingSpec:
        if self.objective not in TRAINABLE_OBJECTIVES:
            raise ValueError(
                f"objective {self.objective!r} cannot be trained by prescore train; trainable: "
                f"{', '.join(sorted(TRAINABLE_OBJECTIVES))} (a model with another objective: training: external, "
                "then prescore register)"
            )
        if "objective" in self.params:
            raise ValueError(
                f"params: objective {self.params['objective']!r} does not belong in params; set training.objective"
            )
        unknown = sorted(set(self.params) - TRAINING_PARAMS)
        if unknown:
            raise ValueError(f"params: unknown XGBoost parameters {unknown}; allowed: {sorted(TRAINING_PARAMS)}")
        for param, objective in OBJECTIVE_PARAMS.items():
            if param in self.params and self.objective != objective:
                raise ValueError(f"params: {param} applies to objective {objective} only, not {self.objective}")
        return self


RolloutMode = Literal["canary", "shadow"]


class RolloutSpec(_Strict):
    """How the online reader serves a challenger version (``prescore register|train --challenger``).

    ``canary``: a stable ``percent`` of entities (``warehouse.rollout.in_canary``: a hash of model name and entity id,
    so an entity always gets the same variant) is answered from the challenger's precomputed run, the rest from the
    champion's. ``shadow``: everyone gets the champion; the challenger's score is read in the same Redis round trip
    and written to the prediction log only. ``percent: 0`` (or ``prescore rollout abort``) stops a canary."""

    challenger: str = Field(min_length=1, max_length=64)
    percent: float = Field(default=0.0, ge=0.0, le=100.0, allow_inf_nan=False)
    mode: RolloutMode = "canary"


class PromotionGate(_Strict):
    """What ``prescore promote`` requires of a challenger's nightly comparisons with the champion (``jobs.compare``).

    ``min_days``: dates compared (each with both runs committed); ``max_psi``: the challenger's score PSI against
    the champion's on every one of them; ``max_decision_change``: the share of entities whose threshold decision
    would change (models with ``thresholds``); ``min_rank_correlation``: Spearman's rho of the two score lists;
    ``min_labelled_days``: dates whose labels arrived, on which the realized quality (AUC for binary, RMSE for
    regression) of the challenger is not worse than the champion's by more than ``max_quality_loss`` (AUC points
    for binary objectives, the relative RMSE increase otherwise, as ``training.promote_margin``)."""

    min_days: int = Field(default=3, ge=1, le=365)
    max_psi: float = Field(default=0.25, gt=0)
    max_decision_change: float = Field(default=0.1, ge=0.0, le=1.0)
    min_rank_correlation: float = Field(default=0.0, ge=-1.0, le=1.0)
    min_labelled_days: int = Field(default=0, ge=0, le=365)
    max_quality_loss: float = Field(default=0.01, ge=0.0)


class ModelSpec(_Strict):
    """One scored model: its features, schedule, staleness policy, safe default and retention.

    ``restore_fallback_to_older_run``: when Redis lost the model's scores and the live run's Parquet is gone (or no
    longer matches its manifest), ``prescore restore`` and the reconcile loop may serve the next older run of its
    published history whose Parquet is intact (older scores instead of the default for every entity). Off by
    default: the restore then refuses, saying so, and the model answers from its fallback and default until a new
    run is published.
    """

    feature_set: str
    features: list[str] | None = None  # None: every feature of the feature set, in contract order
    fallback_features: list[str] = Field(min_length=1, max_length=8)
    schedule: str = "0 2 * * *"
    staleness: StalenessPolicy
    default_score: float = Field(allow_inf_nan=False)  # any real score (a probability for binary models)
    thresholds: Thresholds | None = None
    keep_runs: int = Field(default=2, ge=1, le=20)
    max_psi: float = Field(default=0.25, gt=0)
    restore_fallback_to_older_run: bool = False
    training: TrainingSpec | Literal["external"] = Field(default_factory=TrainingSpec)
    rollout: RolloutSpec | None = None
    promotion: PromotionGate = Field(default_factory=PromotionGate)

    @model_validator(mode="after")
    def _thresholds_in_range(self) -> ModelSpec:
        # training: external: the objective is known only when a version is registered (checked there)
        if isinstance(self.training, TrainingSpec) and self.thresholds is not None and self.thresholds.labels:
            problem = check_thresholds(self.thresholds.labels, self.training.objective)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def trained_here(self) -> bool:
        """False for ``training: external``: versions come from ``prescore register``; no training DAG."""
        return self.training != "external"


class ProjectConfig(_Strict):
    """The whole models file. Cross-references (feature set names, feature names) are checked too."""

    feature_sets: dict[str, FeatureSetSpec] = Field(min_length=1)
    models: dict[str, ModelSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _references_resolve(self) -> ProjectConfig:
        for name, model in self.models.items():
            if model.feature_set not in self.feature_sets:
                raise ValueError(
                    f"models.{name}.feature_set: unknown feature set {model.feature_set!r} "
                    f"(declared: {sorted(self.feature_sets)})"
                )
            known = set(self.feature_sets[model.feature_set].features)
            for field_name in ("features", "fallback_features"):
                listed = getattr(model, field_name) or []
                missing = [f for f in listed if f not in known]
                if missing:
                    raise ValueError(f"models.{name}.{field_name}: {missing} not in feature set {model.feature_set!r}")
                if len(set(listed)) != len(listed):
                    raise ValueError(f"models.{name}.{field_name}: duplicate feature names")
        return self

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(f"unknown model {name!r}; the models file declares {sorted(self.models)}") from None

    def feature_set(self, name: str) -> FeatureSetSpec:
        try:
            return self.feature_sets[name]
        except KeyError:
            raise UnknownFeatureSetError(
                f"unknown feature set {name!r}; the models file declares {sorted(self.feature_sets)}"
            ) from None

    def model_features(self, name: str) -> list[str]:
        """The primary model's ordered feature list."""
        spec = self.model(name)
        return list(spec.features) if spec.features else self.feature_set(spec.feature_set).feature_names

    @cached_property
    def model_names(self) -> list[str]:
        return sorted(self.models)


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid models file {path}: " + "; ".join(parts)


def load_config(path: Path) -> ProjectConfig:
    """Read and validate a models file. Raises ``ConfigError`` naming the bad field and the file."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"models file {path} does not exist; set PRESCORE_MODELS_FILE") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"models file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"models file {path} must be a mapping with 'feature_sets' and 'models'")
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None
