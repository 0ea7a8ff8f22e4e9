"""``prescore register``: import an XGBoost model trained elsewhere into the hash-checked registry.

``register_model`` reads a model file (UBJSON ``.ubj``, JSON ``.json``), or an MLflow model (a registered version,
a run's artifact, a local model directory: ``jobs.mlflow_source``), checks it, and
registers it as a new version of the model's primary or fallback role; ``promote`` also makes it production. Checks,
each a ``RegistryError`` naming the problem and the fix, before anything is written:

1. the file exists, is an XGBoost model this xgboost can read (not truncated, not another format; the legacy
   binary format is not readable by xgboost 3: re-save it as ``.ubj`` with xgboost 2.x), and was not saved by a
   newer xgboost (major.minor) than the installed one — xgboost itself would load that without a word;
2. its objective is one prescore can serve (``SERVABLE_OBJECTIVES``, ``rank:*``); multiclass models are refused
   (the store holds one score per entity: register one binary model per class instead); a fallback model must be
   one the online API compiles (``online.fallback``: single-output ``gbtree``, ``FALLBACK_OBJECTIVES``);
3. its features: the names stored in the model (or, for a model without names, an explicit ``features`` list
   matched by position) equal the model's features in the models file — primary: ``models.<m>.features`` or every
   feature of its feature set; fallback: ``fallback_features`` — same names, same order;
   their types: a feature the model treats as categorical must be ``dtype: category`` in the contract and the
   other way round, and the categories must agree — the ones the model stores (xgboost >= 3.1 keeps a pandas or
   Arrow column's categories) equal the contract's ``categories`` as a set; a model trained on category codes
   stores none, and then the contract's ``categories`` list is the code order (code ``i`` is ``categories[i]``).
   The version's manifest records each category feature's code order (``Manifest.categories``);
4. a probe: the model predicts on up to ``PROBE_ROWS`` rows of the newest feature partition, and every value is
   finite (skipped, and said so, when the feature set has no partition yet).

5. a baseline (``reference_baseline``, ``jobs.profile``): the features of a reference partition — the newest one,
   the one the probe read, or ``reference_date`` — and the model's scores on them, profiled on a sample of up to
   ``BASELINE_ROWS`` rows (each row group sampled at the same rate, seeded), stored with the version
   (``baseline.json``). No partition yet: the version is registered without one (monitoring then reports drift as
   unavailable); a ``reference_date`` without a complete partition is a ``RegistryError``.

The version records its lineage in the manifest (source path, the source file's sha256, who registered it and when).
Registration is atomic (``warehouse.registry``): an interrupted one leaves no listed version and the production
version unchanged; without ``promote`` the new version is registered but not production (``prescore status``).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from jobs.feature_matrix import to_matrix
from jobs.runtime import Runtime
from warehouse import ubjson
from warehouse.datasets import features as fstore
from warehouse.datasets.storage import sha256_file
from warehouse.errors import RegistryError
from warehouse.objectives import check_thresholds
from warehouse.registry import KINDS
from warehouse.xgboost_loader import xgboost

if TYPE_CHECKING:
    import xgboost as xgb
else:
    xgb = xgboost()  # without scikit-learn (warehouse.xgboost_loader)

log = logging.getLogger(__name__)
PROBE_ROWS = 1000
BASELINE_ROWS = 200_000
SERVABLE_OBJECTIVES = frozenset({
    "binary:logistic", "binary:logitraw", "binary:hinge",
    "reg:squarederror", "reg:squaredlogerror", "reg:absoluteerror", "reg:pseudohubererror", "reg:logistic",
    "reg:quantileerror", "count:poisson", "reg:gamma", "reg:tweedie",
})  # fmt: skip


@dataclass(frozen=True)
class RegisterReport:
    model: str
    role: str
    version: str
    objective: str
    features: list[str]
    promoted: bool
    previous_production: str | None
    lineage: dict[str, Any]
    probe: dict[str, Any] | None = field(default=None)  # rows, min, max of the probe prediction; None: no partition
    challenger: bool = False  # registered as a challenger of the production version (``warehouse.rollout``)
    baseline: dict[str, Any] | None = field(default=None)  # the reference partition's date and rows; None: none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def saved_version(path: Path) -> tuple[int, ...] | None:
    """The xgboost version a JSON or UBJSON model file says it was saved by (its top-level ``version``), or None
    when the file does not say (or is not one of those formats)."""
    data = path.read_bytes()
    try:
        if data[:1] == b"{" and b'"version"' in data:
            version = json.loads(data).get("version")
        else:
            at = data.rfind(b"\x07version[")  # UBJSON: the key (length 7), then its array of integers
            version = ubjson.value_at(data, at + len(b"\x07version")) if at >= 0 else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(version, list) or not all(isinstance(v, int) for v in version):
        return None
    return tuple(version)


def _installed_version() -> tuple[int, ...]:
    return tuple(int(part) for part in xgb.__version__.split(".")[:3] if part.isdigit())


def read_model(path: Path) -> xgb.Booster:
    """The booster in ``path``, or ``RegistryError`` saying why it cannot be one."""
    if not path.is_file():
        raise RegistryError(f"model file {path} does not exist (or is not a file); give the path of a saved model")
    saved = saved_version(path)
    if saved is not None and saved[:2] > _installed_version()[:2]:
        shown = ".".join(map(str, saved))
        raise RegistryError(
            f"{path} was saved by xgboost {shown}, newer than the installed {xgb.__version__}: models may use what "
            f"this version does not know; save it with xgboost <= {xgb.__version__} or upgrade prescore's xgboost"
        )
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except xgb.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        with path.open("rb") as fh:
            head = fh.read(1)
        if head not in (b"{", b"["):  # neither JSON nor UBJSON
            raise RegistryError(
                f"{path} is neither JSON nor UBJSON: if it is a model in the legacy binary format, xgboost "
                f"{xgb.__version__} cannot read it; load it with xgboost 2.x and save_model('model.ubj'), then "
                "register that file"
            ) from None
        raise RegistryError(
            f"{path} is not an XGBoost model this xgboost {xgb.__version__} can read ({first}); save it with "
            "booster.save_model('model.ubj') (or .json) from xgboost <= this version, and check the file is complete"
        ) from None
    if booster.num_boosted_rounds() == 0:
        raise RegistryError(f"{path} holds a model without trees; train it before registering")
    return booster


def objective_of(booster: xgb.Booster) -> str:
    """The objective from the booster's own configuration, e.g. ``binary:logistic``."""
    return str(json.loads(booster.save_config())["learner"]["objective"]["name"])


def check_objective(objective: str, path: Path) -> None:
    if objective in SERVABLE_OBJECTIVES or objective.startswith("rank:"):
        return
    if objective.startswith("multi:"):
        raise RegistryError(
            f"{path}: objective {objective} (multiclass) is not supported: prescore stores and serves one score per "
            "entity; register one binary:logistic model per class (one-vs-rest) instead"
        )
    raise RegistryError(
        f"{path}: objective {objective} is not one prescore can serve; supported: "
        f"{', '.join(sorted(SERVABLE_OBJECTIVES))} and rank:*"
    )


def check_fallback_runs(booster: xgb.Booster, names: list[str], path: Path) -> None:
    """The online API compiles the fallback model (``online.fallback``): it must be one that runtime accepts."""
    from online.fallback import FALLBACK_OBJECTIVES, FallbackModel

    try:
        FallbackModel.from_booster(booster, names, str(path))
    except ValueError as exc:
        raise RegistryError(
            f"{path} cannot be the online fallback ({exc}); the fallback runs single-output gbtree models with "
            f"{', '.join(sorted(FALLBACK_OBJECTIVES))}: register it as the primary, or retrain the fallback that way"
        ) from None


def categorical_columns(booster: xgb.Booster) -> dict[int, list[str] | None]:
    """Column index → the categories the model stores for it (None: trained on codes), for every column the model
    treats as categorical (its feature types, or a categorical split in a tree)."""
    columns = {i for i, t in enumerate(booster.feature_types or []) if t == "c"}
    model = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"].get("model", {})
    for tree in model.get("trees", []):
        columns.update(tree["split_indices"][n] for n in tree.get("categories_nodes", []))
    if not columns:
        return {}
    stored: dict[int, list[str] | None] = dict.fromkeys(columns)
    try:
        exported = booster.get_categories(export_to_arrow=True).to_arrow() or []
    except (AttributeError, ValueError, xgb.core.XGBoostError):  # a model without a category container
        exported = []
    for i, (_, values) in enumerate(exported):
        if i in stored and values is not None:
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                raise RegistryError(
                    f"column {i} of the model holds {values.type} categories: category features hold strings; "
                    "retrain on a string (or pandas category of strings) column"
                )
            stored[i] = [str(v) for v in values.to_pylist()]
    return stored


def category_orders(
    rt: Runtime, model: str, booster: xgb.Booster, names: list[str], path: Path
) -> dict[str, list[str]]:
    """Each category feature's code order, after checking the model's feature types against the contract."""
    fs_name = rt.config.model(model).feature_set
    contract = rt.config.feature_set(fs_name).features
    columns = categorical_columns(booster)
    orders: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        spec = contract[name]
        where = f"feature_sets.{fs_name}.features.{name}"
        if i not in columns:
            if spec.dtype == "category":
                raise RegistryError(
                    f"{path} treats {name} as a number but {where} is dtype: category; train on a categorical "
                    "column (xgb.DMatrix(..., enable_categorical=True)) or change the contract"
                )
            continue
        if spec.dtype != "category":
            raise RegistryError(
                f"{path} treats {name} as categorical but {where} is dtype: {spec.dtype}; declare it dtype: "
                "category (with its categories) or retrain with it numeric"
            )
        stored, declared = columns[i], spec.categories
        if stored is not None and declared is not None and set(stored) != set(declared):
            only_model = sorted(set(stored) - set(declared))
            only_contract = sorted(set(declared) - set(stored))
            raise RegistryError(
                f"the categories of {name} differ: the model knows {only_model} that {where}.categories lacks, and "
                f"the contract allows {only_contract} that the model never saw; make them the same set"
            )
        if stored is None and declared is None:
            raise RegistryError(
                f"{path} stores no categories for {name} (trained on category codes): list them in {where}."
                "categories in code order (code i is the i-th value)"
            )
        orders[name] = list(stored if stored is not None else declared)  # type: ignore[arg-type]
    return orders


def model_feature_names(booster: xgb.Booster, given: list[str] | None, path: Path) -> list[str]:
    """The model's features in column order: the names it stores, or ``given`` for a model without names."""
    stored = list(booster.feature_names) if booster.feature_names else None
    count = booster.num_features()
    if stored is None:
        if given is None:
            raise RegistryError(
                f"{path} stores no feature names: pass --features with its {count} features in the order it was "
                "trained on (matched by position)"
            )
        if len(given) != count:
            raise RegistryError(f"--features lists {len(given)} names but {path} has {count} features")
        return list(given)
    if given is not None and list(given) != stored:
        raise RegistryError(f"--features {given} disagrees with the names stored in {path} ({stored}); drop --features")
    return stored


def check_features(names: list[str], expected: list[str], model: str, role: str, path: Path) -> None:
    """``names`` must equal ``expected`` (names and order); the error says which differ and what to change."""
    if names == expected:
        return
    missing = [f for f in expected if f not in names]
    extra = [f for f in names if f not in expected]
    where = f"models.{model}.{'fallback_features' if role == 'fallback' else 'features'}"
    if not missing and not extra:
        raise RegistryError(
            f"{path} takes the features of {where} in another order ({names}); set {where} to that order in the "
            "models file, or retrain with the columns in the contract's order"
        )
    if role == "fallback" and extra:
        raise RegistryError(
            f"{path} uses features outside {where}: {extra}; a fallback model may use only the features a request "
            "brings (add them to fallback_features, at most 8, or retrain without them)"
        )
    raise RegistryError(
        f"{path} does not take the features of {where}: missing {missing}, unexpected {extra}; retrain on "
        f"{expected} or change {where} in the models file"
    )


def probe(
    rt: Runtime, model: str, booster: xgb.Booster, names: list[str], categories: dict[str, list[str]]
) -> dict[str, Any] | None:
    """Predict on up to ``PROBE_ROWS`` rows of the newest feature partition; ``RegistryError`` on non-finite values."""
    spec = rt.config.model(model)
    fs = rt.config.feature_set(spec.feature_set)
    dates = fstore.available_dates(rt.home, spec.feature_set, fs)
    if not dates:
        log.info("no %s partition yet: registering %s without a probe prediction", spec.feature_set, model)
        return None
    day = dates[-1]
    files = fstore.partition_files(rt.home, spec.feature_set, day, fs)
    first = next((b for f in files for b in fstore.parquet_file(f).iter_batches(batch_size=PROBE_ROWS, columns=names)
                  if b.num_rows), None)  # fmt: skip  # the first rows only: a probe, not a scoring run
    if first is None:
        log.info("the newest %s partition (%s) has no rows: registering %s without a probe", spec.feature_set, day,
                 model)  # fmt: skip
        return None
    sample = pa.Table.from_batches([first])
    values = np.asarray(booster.inplace_predict(to_matrix(sample, names, categories)), dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise RegistryError(
            f"the model predicts {bad} non-finite values on {sample.num_rows} rows of {spec.feature_set} "
            f"dt={day}; check it was trained on these features and their units"
        )
    return {"date": day.isoformat(), "rows": sample.num_rows, "min": float(values.min()), "max": float(values.max())}


def reference_baseline(
    rt: Runtime,
    model: str,
    booster: xgb.Booster,
    names: list[str],
    categories: dict[str, list[str]],
    day: dt.date | None = None,
) -> dict[str, Any] | None:
    """The baseline of a registered version on a reference partition (module docstring, step 5); None when the
    feature set has no partition (and no ``day`` was asked for) or it has no rows."""
    from jobs import profile

    spec = rt.config.model(model)
    fs = rt.config.feature_set(spec.feature_set)
    dates = fstore.available_dates(rt.home, spec.feature_set, fs)
    if day is not None and day not in dates:
        raise RegistryError(f"--reference-date {day}: {spec.feature_set} has no complete feature partition of that "
                            f"date (newest: {dates[-1] if dates else 'none'}); choose one that exists")  # fmt: skip
    if day is None:
        if not dates:
            log.info("no %s partition yet: registering %s without a baseline", spec.feature_set, model)
            return None
        day = dates[-1]
    files = fstore.partition_files(rt.home, spec.feature_set, day, fs)
    total = sum(fstore.parquet_file(f).metadata.num_rows for f in files)
    if not total:
        return None
    rate = min(1.0, BASELINE_ROWS / total)
    rng = np.random.default_rng(rt.settings.seed)
    known = {name: categories.get(name) or fs.features[name].categories for name in names
             if name in categories or (name in fs.features and fs.features[name].dtype == "category")}  # fmt: skip
    builder = profile.ProfileBuilder(names, known)
    scores = []
    for chunk in fstore.iter_partition(rt.home, spec.feature_set, day, columns=names, spec=fs):
        if rate < 1.0:
            chunk = chunk.filter(pa.array(rng.random(chunk.num_rows) < rate))
        if not chunk.num_rows:
            continue
        builder.add(chunk)
        scores.append(np.asarray(booster.inplace_predict(to_matrix(chunk, names, categories)), dtype=np.float64))
    if not builder.rows:
        return None
    source = {"kind": "reference", "dates": [day.isoformat()], "rows": builder.rows, "partition_rows": total}
    return profile.baseline(builder.profile(), np.concatenate(scores), source)


def register_model(
    rt: Runtime,
    model: str,
    role: str,
    path: Path | None = None,
    *,
    from_mlflow: str | None = None,
    features: list[str] | None = None,
    promote: bool = False,
    now: dt.datetime | None = None,
    challenger: bool = False,
    reference_date: dt.date | None = None,
) -> RegisterReport:
    """Check and register the model file ``path``, or the MLflow model ``from_mlflow`` (``jobs.mlflow_source``), as
    a new ``role`` version of ``model`` (see the module docstring). ``challenger``: a primary version that becomes
    a challenger of the production one (``warehouse.rollout``), never promoted here."""
    if (path is None) == (from_mlflow is None):
        raise RegistryError("give either a model file or --from-mlflow URI, not both or neither")
    if challenger and (promote or role != "primary"):
        raise RegistryError("--challenger registers a primary version without --promote (promote it later with "
                            "prescore promote)")  # fmt: skip
    if challenger:
        rt.registry.require_room_for_challenger(model)  # checked before any work
    if from_mlflow is None:
        assert path is not None
        return _register(rt, model, role, Path(path), {}, features, promote, now, challenger, reference_date)
    from jobs.mlflow_source import fetch

    with tempfile.TemporaryDirectory(prefix="prescore-mlflow-") as tmp:
        fetched = fetch(from_mlflow, Path(tmp))
        return _register(rt, model, role, fetched.path, fetched.lineage, features, promote, now, challenger,
                         reference_date)  # fmt: skip


def _register(
    rt: Runtime,
    model: str,
    role: str,
    path: Path,
    origin: dict[str, Any],
    features: list[str] | None,
    promote: bool,
    now: dt.datetime | None,
    challenger: bool = False,
    reference_date: dt.date | None = None,
) -> RegisterReport:
    if role not in KINDS:
        raise RegistryError(f"unknown role {role!r}; use one of {list(KINDS)}")
    spec = rt.config.model(model)
    expected = rt.config.model_features(model) if role == "primary" else list(spec.fallback_features)
    booster = read_model(path)
    objective = objective_of(booster)
    check_objective(objective, path)
    if spec.thresholds is not None and spec.thresholds.labels:
        problem = check_thresholds(spec.thresholds.labels, objective)
        if problem:
            raise RegistryError(f"{path} is a {objective} model, but models.{model}.{problem}")
    names = model_feature_names(booster, features, path)
    check_features(names, expected, model, role, path)
    if role == "fallback":
        check_fallback_runs(booster, names, path)
    categories = category_orders(rt, model, booster, names, path)
    probed = probe(rt, model, booster, names, categories)
    base = reference_baseline(rt, model, booster, names, categories, reference_date)
    lineage = {
        "source": origin.get("mlflow_uri") or str(path.resolve()),
        "source_sha256": sha256_file(path),
        "objective": objective,
        "registered_by": getpass.getuser(),
        "registered_at": (now or dt.datetime.now(dt.UTC)).isoformat(),
        **{k: v for k, v in origin.items() if v is not None},
    }
    booster.feature_names, booster.feature_types = None, None  # artifacts are positional: the manifest names them
    before = rt.registry.production_version(model, role)
    manifest = rt.registry.register(model, role, booster, names, {}, {}, lineage=lineage, categories=categories,
                                    baseline=base)  # fmt: skip
    rt.add_model_version(manifest, promote=promote, challenger=challenger)
    log.info("registered %s %s %s from %s (promoted: %s, challenger: %s)", model, role, manifest.version,
             lineage["source"], promote, challenger)  # fmt: skip
    return RegisterReport(model=model, role=role, version=manifest.version, objective=objective, features=names,
                          promoted=promote, previous_production=before, lineage=lineage, probe=probed,
                          challenger=challenger, baseline=base and base["source"])  # fmt: skip
