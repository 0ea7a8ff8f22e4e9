"""The fallback model runtime: a fast, in-process predictor for the small per-model fallback booster.

The online reader scores one request's features with the fallback model when the precomputed score is missing
or too stale. xgboost's ``inplace_predict`` costs hundreds of microseconds for one row (thread start-up, data
adapters), so ``FallbackModel`` compiles the trees once into plain Python (nested ``if``/``else`` per tree) and
runs that per request. It is built from the model's document (what ``booster.save_raw("json")`` holds; the
registry decodes the stored UBJSON without xgboost: ``Registry.load_document``), so serving needs no xgboost,
SciPy or scikit-learn. Batches beyond ``SMALL_BATCH`` rows use the vectorised walk (or, for trees too deep or
category tables too large for it, ``predict_row`` row by row).

Contract:
- Accepted: ``gbtree`` boosters with one output whose objective is in ``FALLBACK_OBJECTIVES``: output
  ``sigmoid(margin)`` for ``binary:logistic`` and ``reg:logistic``; ``exp(margin)`` for ``count:poisson``,
  ``reg:gamma`` and ``reg:tweedie`` (``inf`` beyond float32's range, as xgboost); the margin itself for
  ``binary:logitraw``, ``reg:squarederror``, ``reg:absoluteerror``, ``reg:pseudohubererror``, single-quantile
  ``reg:quantileerror`` and ``rank:pairwise`` / ``rank:ndcg`` / ``rank:map``. The base margin is ``base_score``
  mapped through the inverse (logit, log, identity). Numerical and categorical splits are both accepted. Anything
  else (``multi:*``, ``binary:hinge``, ``gblinear``, ``dart`` (its trees are weighted), multi-target or
  multi-quantile, no trees) raises ``ValueError`` naming what is unsupported.
- Outputs equal ``booster.inplace_predict`` on the same artifact within 1e-6 (relative; absolute below 1) as far
  as xgboost's own rounding allows: split decisions are identical (see below), but xgboost sums the margin tree
  by tree in float32 (each addition off by up to 2**-24 of the running sum) where this runtime sums in float64.
  Tens of trees with margins within about ±8 stay inside 1e-6; larger margins (labels in the thousands, exp
  outputs near float32's limit) differ by that float32 rounding (about 5e-6 relative for labels near 1000).
- Numerical splits are xgboost's exactly: the value is rounded to float32, then ``value < threshold`` goes left;
  NaN goes to the node's default child. Instead of rounding every input at run time, each float32 threshold is
  replaced by the float64 midpoint to its float32 predecessor, with ``<`` or ``<=`` picked by the
  round-half-to-even rule, so a float64 comparison gives the float32 answer (and a float32 one too: the bound
  rounds to the threshold or its predecessor, with the operator that still matches). Inputs go through ``float()``.
- Categorical splits take category codes (0.0, 1.0, ...; NaN = missing) and are xgboost's exactly: NaN goes to
  the default child; otherwise the code is float32(value) truncated toward zero, and a code in the node's set goes
  right, anything else (unseen, negative, 2**24 or more) left. Each node compiles to a set-membership test
  (``c3 in _S0``); a value that is not one of the model's known codes for that feature is mapped once per row.
- ``predict_row`` / ``predict_dict`` take real numbers (NaN = missing); validating request features (names,
  types, finiteness) and mapping category strings to codes is the API layer's job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import xgboost as xgb

from warehouse.datasets.storage import StoragePath
from warehouse.registry import Registry

_IDENTITY = ("binary:logitraw", "reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror", "reg:quantileerror")
_RANK = ("rank:pairwise", "rank:ndcg", "rank:map")  # inplace_predict returns their margin
# objective → output transform
_TRANSFORMS = {
    **dict.fromkeys(("binary:logistic", "reg:logistic"), "sigmoid"),
    **dict.fromkeys(("count:poisson", "reg:gamma", "reg:tweedie"), "exp"),
    **dict.fromkeys((*_IDENTITY, *_RANK), "identity"),
}
FALLBACK_OBJECTIVES = frozenset(_TRANSFORMS)
# Nested ``if`` blocks: the tokenizer allows 100 indentation levels.
MAX_DEPTH = 64
# The vectorised walk pads every tree to a complete binary tree (2**depth leaves).
MAX_WALK_DEPTH = 10
# The walk's category table has (categorical nodes + 1) * (largest code + 2) cells; beyond this, no walk.
MAX_WALK_CATEGORY_CELLS = 1 << 22
# predict_many: up to SMALL_BATCH rows loop over predict_row, beyond that the numpy walk, WALK_MAX_ROWS rows
# at a time (bench/bench_fallback.py --sweep measures the crossover); no xgboost on the serving path.
SMALL_BATCH = 32
WALK_MAX_ROWS = 256

_NEGATE = {"<": ">=", "<=": ">"}
_F32_MAX = float(np.finfo(np.float32).max)
_EXP_MAX = math.log(_F32_MAX)  # exp of a larger margin is beyond float32: xgboost's expf gives inf
_OUT_OF_RANGE_CAT = 16777216.0  # xgboost's OutOfRangeCat(): codes from 2**24 up are invalid and go left


@dataclass(frozen=True)
class _Tree:
    """One regression tree in xgboost's array layout (node 0 is the root; ``left[i] == -1`` marks a leaf)."""

    left: list[int]
    right: list[int]
    feature: list[int]
    condition: list[float]  # float32 split threshold, or the leaf value for a leaf
    default_left: list[bool]
    categories: dict[int, frozenset[float]] = field(default_factory=dict)  # categorical node → codes going right

    def depth(self, node: int = 0) -> int:
        stack, deepest = [(node, 0)], 0
        while stack:
            i, d = stack.pop()
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                break
            if self.left[i] != -1:
                stack.extend(((self.left[i], d + 1), (self.right[i], d + 1)))
        return deepest


@dataclass(frozen=True)
class _Model:
    objective: str
    transform: str  # "sigmoid", "exp" or "identity"
    base_margin: float
    trees: list[_Tree]
    n_features: int

    def known_codes(self) -> dict[int, frozenset[float]]:
        """Categorical feature → every code in any of its nodes' sets (other codes go left everywhere)."""
        out: dict[int, frozenset[float]] = {}
        for tree in self.trees:
            for node, codes in tree.categories.items():
                out[tree.feature[node]] = out.get(tree.feature[node], frozenset()) | codes
        return out


def _f32(value: float) -> float:
    """The float32 nearest to ``value``, as an exact Python float."""
    return float(np.float32(value))


def _left_test(threshold: float) -> tuple[str, str]:
    """(operator, float64 bound) such that ``x <op> bound`` iff ``float32(x) < threshold`` for any real x.

    float32 rounding is monotone, so ``float32(x) < t`` iff x lies below the midpoint between t and its float32
    predecessor; at the midpoint itself round-half-to-even decides, which ``np.float32`` tells us.
    """
    t = np.float32(threshold)
    with np.errstate(over="ignore"):
        below = np.nextafter(t, np.float32(-np.inf))
        # exact in float64; for t == -FLT_MAX (below is -inf) the bound is where values start rounding to -inf
        mid = -(_F32_MAX + 2.0**103) if np.isinf(below) else (float(below) + float(t)) / 2.0
        op = "<=" if np.float32(mid) < t else "<"
    return op, repr(mid)


def _category_code(value: float, known: frozenset[float]) -> float:
    """xgboost's category for a non-NaN ``value`` that is not in ``known``: float32(value) truncated toward zero
    if that is a known code, else -1.0 (in no node's set, so left at every node, as an invalid or unseen code)."""
    if not -1.0 < value < _OUT_OF_RANGE_CAT + 1.0:
        return -1.0
    v = _f32(value)
    code = float(int(v)) if 0.0 <= v < _OUT_OF_RANGE_CAT else -1.0
    return code if code in known else -1.0


def _parse_base_score(raw: Any) -> float:
    """xgboost 3.x writes ``"[5E-1]"`` (a vector, one entry per target); older versions a plain number."""
    text = str(raw).strip()
    if text.startswith("[") and text.endswith("]"):
        parts = [p for p in text[1:-1].split(",") if p.strip()]
        if len(parts) != 1:
            raise ValueError(f"fallback model has {len(parts)} base scores (multi-target); only one is supported")
        text = parts[0]
    return float(text)


def _base_margin(transform: str, base_score: float) -> float:
    """The margin xgboost starts every row from: ``base_score`` (output space) through the inverse transform."""
    p = _f32(base_score)
    if transform == "sigmoid" and 0.0 < p < 1.0:
        return math.log(p / (1.0 - p))
    if transform == "exp" and 0.0 < p <= _F32_MAX:
        return math.log(p)
    if transform == "identity" and math.isfinite(p):
        return p
    raise ValueError(f"fallback model base_score {base_score} is out of range for its {transform} output")


def _tree_categories(raw: dict[str, Any], k: int) -> dict[int, frozenset[float]]:
    """Categorical node → its set of codes (they go right), checked against the tree's ``split_type``."""
    nodes = [int(i) for i in raw.get("categories_nodes", [])]
    segments, sizes, codes = raw.get("categories_segments", []), raw.get("categories_sizes", []), raw["categories"]
    sets = {n: frozenset(float(c) for c in codes[s : s + z]) for n, s, z in zip(nodes, segments, sizes, strict=True)}
    split_type = [int(t) for t in raw.get("split_type", [])]
    if any(t not in (0, 1) for t in split_type):
        raise ValueError(f"fallback model tree {k} has split types {sorted(set(split_type))}; only 0 and 1 exist")
    flagged = {i for i, t in enumerate(split_type) if t == 1 and int(raw["left_children"][i]) != -1}
    if flagged != set(sets):
        raise ValueError(f"fallback model tree {k}: categorical split nodes and category sets disagree")
    return sets


def _parse_model(doc: dict[str, Any]) -> _Model:
    """The objective's transform, base margin, trees and feature count from the model document, refusing what we
    cannot run."""
    learner = doc["learner"]
    objective = learner["objective"]["name"]
    if objective not in _TRANSFORMS:
        raise ValueError(
            f"fallback model objective {objective!r} is not supported; "
            f"supported: {', '.join(sorted(FALLBACK_OBJECTIVES))}"
        )
    gb = learner["gradient_booster"]
    if gb["name"] != "gbtree":
        raise ValueError(f"fallback model booster {gb['name']!r} is not supported; train it with booster='gbtree'")
    params = learner["learner_model_param"]
    if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) > 1:
        raise ValueError("fallback model is multi-class, multi-target or multi-quantile; only one output is supported")
    transform = _TRANSFORMS[objective]
    base_margin = _base_margin(transform, _parse_base_score(params["base_score"]))
    n_features = int(params["num_feature"])

    model = gb["model"]
    if any(int(g) != 0 for g in model.get("tree_info", [])):
        raise ValueError("fallback model has trees for more than one output group; only one is supported")
    if not model["trees"]:
        # xgboost itself is inconsistent here (an untrained base_score is used as a margin): refuse
        raise ValueError("fallback model has no trees; train at least one boosting round")
    trees = []
    for k, raw in enumerate(model["trees"]):
        if int(raw["tree_param"].get("size_leaf_vector", 1)) > 1:
            raise ValueError(f"fallback model tree {k} has vector leaves (multi-target); not supported")
        tree = _Tree(
            left=[int(i) for i in raw["left_children"]],
            right=[int(i) for i in raw["right_children"]],
            feature=[int(i) for i in raw["split_indices"]],
            condition=[_f32(float(c)) for c in raw["split_conditions"]],
            default_left=[bool(d) for d in raw["default_left"]],
            categories=_tree_categories(raw, k),
        )
        bad = [f for f, lc in zip(tree.feature, tree.left, strict=True) if lc != -1 and not 0 <= f < n_features]
        if bad:
            raise ValueError(f"fallback model tree {k} splits on feature index {bad[0]} of {n_features}")
        if tree.depth() > MAX_DEPTH:
            raise ValueError(f"fallback model tree {k} is deeper than {MAX_DEPTH}; use a smaller fallback model")
        trees.append(tree)
    return _Model(objective, transform, base_margin, trees, n_features)


def _tree_source(tree: _Tree, node: int, indent: str, out: list[str], sets: dict[frozenset[float], str]) -> None:
    if tree.left[node] == -1:
        out.append(f"{indent}m += {tree.condition[node]!r}\n")
        return
    left, right = tree.left[node], tree.right[node]
    if node in tree.categories:  # in the set goes right; NaN is in no set, so it needs its own test to go right
        c = f"c{tree.feature[node]}"
        name = sets.setdefault(tree.categories[node], f"_S{len(sets)}")
        nan_right = "" if tree.default_left[node] else f" or {c} != {c}"
        out.append(f"{indent}if {c} in {name}{nan_right}:\n")
        first, second = right, left
    else:
        x = f"x{tree.feature[node]}"
        op, bound = _left_test(tree.condition[node])
        if tree.default_left[node]:  # NaN fails every comparison: test "goes right" so that NaN lands left
            out.append(f"{indent}if {x} {_NEGATE[op]} {bound}:\n")
            first, second = right, left
        else:
            out.append(f"{indent}if {x} {op} {bound}:\n")
            first, second = left, right
    _tree_source(tree, first, indent + "    ", out, sets)
    out.append(f"{indent}else:\n")
    _tree_source(tree, second, indent + "    ", out, sets)


def _row_source(model: _Model) -> tuple[str, dict[str, frozenset[float]]]:
    """The source of ``predict_row`` and the constants it reads (``_S<i>``: category sets; ``_U<f>``: the known
    codes of categorical feature f, each other value mapped by ``_code``)."""
    names = ", ".join(f"x{i}" for i in range(model.n_features)) + ("," if model.n_features == 1 else "")
    out = [
        "def predict_row(values):\n",
        "    try:\n",
        f"        {names} = map(float, values)\n",
        "    except (TypeError, ValueError):\n",
        "        _bad_row(values)\n",
        "        raise\n",
        f"    m = {model.base_margin!r}\n",
    ]
    constants: dict[str, frozenset[float]] = {}
    for f, codes in sorted(model.known_codes().items()):
        constants[f"_U{f}"] = codes
        out.append(f"    c{f} = x{f} if x{f} in _U{f} or x{f} != x{f} else _code(x{f}, _U{f})\n")
    sets: dict[frozenset[float], str] = {}
    for tree in model.trees:
        _tree_source(tree, 0, "    ", out, sets)
    constants.update({name: codes for codes, name in sets.items()})
    return "".join(out) + _OUTPUT[model.transform][0], constants


class _Walk:
    """Vectorised batch predictor: every tree padded to a complete binary tree, all trees walked level by level.

    Padding replicates a shallow leaf's value over its whole bottom range, so the direction taken below it does
    not matter. Comparisons are done in float32, as xgboost does. A categorical node looks its code up in a
    (node's set × code) table; codes outside [0, largest known code] use the last, all-False column.
    """

    def __init__(self, model: _Model, depth: int) -> None:
        trees = model.trees
        n_trees, inner = len(trees), 2**depth - 1
        self.base_margin, self.depth, self.transform = model.base_margin, depth, _OUTPUT[model.transform][1]
        feature = np.zeros((n_trees, inner), np.intp)
        threshold = np.zeros((n_trees, inner), np.float32)
        default_right = np.zeros((n_trees, inner), bool)
        leaf = np.zeros((n_trees, inner + 1), np.float64)
        cat_row = np.zeros((n_trees, inner), np.intp)  # 0: not categorical; else row of self.in_set
        sets: list[frozenset[float]] = []
        for t, tree in enumerate(trees):
            stack = [(0, 0, 0)]  # (node, position in the complete tree, level)
            while stack:
                node, pos, level = stack.pop()
                if tree.left[node] == -1:
                    lo = hi = pos
                    for _ in range(depth - level):
                        lo, hi = 2 * lo + 1, 2 * hi + 2
                    leaf[t, lo - inner : hi - inner + 1] = tree.condition[node]
                    continue
                feature[t, pos] = tree.feature[node]
                threshold[t, pos] = tree.condition[node]
                default_right[t, pos] = not tree.default_left[node]
                if node in tree.categories:
                    sets.append(tree.categories[node])
                    cat_row[t, pos] = len(sets)
                stack += [(tree.left[node], 2 * pos + 1, level + 1), (tree.right[node], 2 * pos + 2, level + 1)]
        self.feature, self.threshold = feature.ravel(), threshold.ravel()
        self.default_right, self.leaf = default_right.ravel(), leaf.ravel()
        self.is_cat, self.cat_row = (cat_row.ravel() > 0), cat_row.ravel()
        self.n_codes = int(max((max(s, default=-1.0) for s in sets), default=-1.0)) + 1
        self.in_set: npt.NDArray[np.bool_] | None = None
        if sets:
            self.in_set = np.zeros((len(sets) + 1, self.n_codes + 1), bool)
            for row, codes in enumerate(sets, start=1):
                self.in_set[row, [int(c) for c in codes]] = True
        tree_ids = np.arange(n_trees, dtype=np.intp)
        self.roots = tree_ids * inner  # global index of each root
        self.child_offset = 1 - self.roots  # child(g) = 2 * g + child_offset + went_right
        self.leaf_offset = tree_ids - inner  # leaf slot of a bottom node g = g + leaf_offset

    @staticmethod
    def cells(model: _Model) -> int:
        """Size of the category table a walk of ``model`` would build."""
        sets = [codes for tree in model.trees for codes in tree.categories.values()]
        return (len(sets) + 1) * (int(max((max(s, default=0.0) for s in sets), default=-2.0)) + 2)

    def __call__(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        n, k = matrix.shape
        flat = matrix.ravel()
        row_base = (np.arange(n, dtype=np.intp) * k)[:, None]
        g = np.broadcast_to(self.roots, (n, self.roots.size))
        for _ in range(self.depth):
            v = flat[row_base + self.feature[g]]
            right = v >= self.threshold[g]
            if self.in_set is not None:  # NaN, negative and large codes → the all-False column
                code = np.where((v >= 0) & (v < self.n_codes), v, self.n_codes).astype(np.intp)
                right = np.where(self.is_cat[g], self.in_set[self.cat_row[g], code], right)
            right |= np.isnan(v) & self.default_right[g]
            g = 2 * g + self.child_offset + right
        margin = self.base_margin + self.leaf[g + self.leaf_offset].sum(axis=1)
        return self.transform(margin)


def _sigmoid(margin: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(-np.abs(margin))
    return np.where(margin >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _exp(margin: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where(margin <= _EXP_MAX, np.exp(np.minimum(margin, _EXP_MAX)), np.inf)


# transform → (the end of predict_row's source, the walk's numpy version)
_OUTPUT: dict[str, tuple[str, Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]]] = {
    "sigmoid": (
        "    if m >= 0.0:\n        return 1.0 / (1.0 + _exp(-m))\n    e = _exp(m)\n    return e / (1.0 + e)\n",
        _sigmoid,
    ),
    "exp": (f"    return _exp(m) if m <= {_EXP_MAX!r} else _inf\n", _exp),
    "identity": ("    return m\n", lambda margin: margin),
}


def _explain_bad_row(features: list[str], version: str, values: Any) -> None:
    """Raise the ValueError that says why ``values`` cannot be unpacked into floats (called on failure only)."""
    try:
        n = len(values)
    except TypeError:
        raise ValueError(f"fallback model {version}: expected a sequence of feature values") from None
    if n != len(features):
        raise ValueError(
            f"fallback model {version}: expected {len(features)} feature values ordered as {features}, got {n}"
        ) from None
    for name, value in zip(features, values, strict=True):
        try:
            float(value)
        except (TypeError, ValueError):
            raise ValueError(f"fallback model {version}: feature {name!r} is not a number") from None


class FallbackModel:
    """A compiled gbtree booster (an objective in ``FALLBACK_OBJECTIVES``); see the module docstring for the contract.

    ``predict_row(values)`` takes the feature values ordered as ``features`` (category codes for categorical
    features) and returns what ``inplace_predict`` returns: a probability, a positive mean or a margin, per
    ``objective``.
    """

    predict_row: Callable[[Sequence[float]], float]

    def __init__(
        self, doc: dict[str, Any], features: list[str], version: str, categories: dict[str, list[str]] | None = None
    ) -> None:
        learner = doc["learner"]
        count = int(learner["learner_model_param"]["num_feature"])
        if count != len(features):
            raise ValueError(f"fallback model {version} has {count} features, {len(features)} named")
        stored = list(learner.get("feature_names") or [])
        if stored and stored != list(features):
            raise ValueError(f"fallback model {version} feature names {stored} != {features}")
        model = _parse_model(doc)
        self.objective = model.objective
        self.features = list(features)
        self.version = version
        self.categories = dict(categories or {})  # category feature → its values in code order (the manifest's)
        depth = max(t.depth() for t in model.trees)
        walkable = depth <= MAX_WALK_DEPTH and _Walk.cells(model) <= MAX_WALK_CATEGORY_CELLS
        self._walk = _Walk(model, depth) if walkable else None
        self.source, constants = _row_source(model)
        namespace: dict[str, Any] = {
            **constants,
            "_exp": math.exp,
            "_inf": math.inf,
            "_code": _category_code,
            "_bad_row": partial(_explain_bad_row, self.features, version),
        }
        exec(compile(self.source, f"<fallback {version}>", "exec"), namespace)
        self.predict_row = namespace["predict_row"]

    @classmethod
    def from_booster(cls, booster: xgb.Booster, features: list[str], version: str) -> FallbackModel:
        return cls(json.loads(booster.save_raw("json")), features, version)

    def predict_dict(self, features: Mapping[str, float]) -> float:
        """Score features given by name (extra names are ignored); ``ValueError`` names a missing feature."""
        try:
            values = [features[name] for name in self.features]
        except KeyError as exc:
            raise ValueError(f"fallback model {self.version}: missing feature {exc.args[0]!r}") from None
        return self.predict_row(values)

    def predict_many(self, matrix: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Predictions (float64) for an (n, len(features)) matrix, NaN = missing; same numbers as predict_row."""
        with np.errstate(over="ignore"):  # values beyond float32 become ±inf, as in xgboost
            data = np.asarray(matrix, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != len(self.features):
            raise ValueError(
                f"fallback model {self.version}: expected an (n, {len(self.features)}) matrix, got shape {data.shape}"
            )
        n = data.shape[0]
        if n <= SMALL_BATCH or self._walk is None:
            return np.array([self.predict_row(row) for row in data.tolist()], dtype=np.float64)
        out = np.empty(n, dtype=np.float64)
        for start in range(0, n, WALK_MAX_ROWS):  # bounded temporaries: (rows × trees) per step
            out[start : start + WALK_MAX_ROWS] = self._walk(np.ascontiguousarray(data[start : start + WALK_MAX_ROWS]))
        return out

    def warm(self) -> None:
        """Run every prediction path once so that the first requests do not pay first-call costs."""
        k = len(self.features)
        self.predict_row([0.0] * k)
        self.predict_row([math.nan] * k)
        for n in (1, SMALL_BATCH + 1, WALK_MAX_ROWS + 1):
            self.predict_many(np.zeros((n, k), dtype=np.float32))


def load_fallback(registry_root: StoragePath, model: str, features: list[str]) -> FallbackModel:
    """Load the production fallback model of ``model`` from the registry rooted at ``registry_root``
    (``<home>/models``, local or on object storage), with its sha256 and feature contract checked.

    Raises ``warehouse.errors.RegistryError`` for a missing, tampered or mismatched artifact, ``ValueError`` for
    a model this runtime cannot run.
    """
    manifest, doc = Registry(registry_root).load_document(model, "fallback", features)
    return FallbackModel(doc, manifest.features, manifest.version, manifest.categories)
