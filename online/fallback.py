"""The fallback model runtime: a fast, in-process predictor for the small per-model fallback booster.

The online reader scores one request's features with the fallback model when the precomputed score is missing
or too stale. xgboost's ``inplace_predict`` costs hundreds of microseconds for one row (thread start-up, data
adapters), so ``FallbackModel`` compiles the trees once into plain Python (nested ``if``/``else`` per tree) and
runs that per request.

Contract:
- Only ``gbtree`` boosters with the ``binary:logistic`` objective, one output, numerical splits are accepted;
  anything else raises ``ValueError`` naming what is unsupported.
- Outputs are probabilities equal to ``booster.inplace_predict`` on the same artifact within 1e-6 (margins are
  summed in float64 where xgboost sums in float32; split decisions are identical, see below).
- Split decisions are xgboost's exactly: the value is rounded to float32, then ``value < threshold`` goes left;
  NaN goes to the node's default child. Instead of rounding every input at run time, each float32 threshold is
  replaced by the float64 midpoint to its float32 predecessor, with ``<`` or ``<=`` picked by the
  round-half-to-even rule, so a float64 comparison gives the float32 answer (and a float32 one too: the bound
  rounds to the threshold or its predecessor, with the operator that still matches). Inputs go through ``float()``.
- ``predict_row`` / ``predict_dict`` take real numbers (NaN = missing); validating request features (names,
  types, finiteness) is the API layer's job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from warehouse.datasets.storage import StoragePath
from warehouse.registry import Registry

SUPPORTED_OBJECTIVE = "binary:logistic"
# Nested ``if`` blocks: the tokenizer allows 100 indentation levels.
MAX_DEPTH = 64
# The vectorised walk pads every tree to a complete binary tree (2**depth leaves).
MAX_WALK_DEPTH = 10
# predict_many: up to SMALL_BATCH rows loop over predict_row, up to WALK_MAX_ROWS use the numpy walk, beyond
# that xgboost's multi-row C++ predictor is faster (bench/bench_fallback.py --sweep measures the crossovers).
SMALL_BATCH = 32
WALK_MAX_ROWS = 256

_NEGATE = {"<": ">=", "<=": ">"}
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class _Tree:
    """One regression tree in xgboost's array layout (node 0 is the root; ``left[i] == -1`` marks a leaf)."""

    left: list[int]
    right: list[int]
    feature: list[int]
    condition: list[float]  # float32 split threshold, or the leaf value for a leaf
    default_left: list[bool]

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


def _parse_base_score(raw: Any) -> float:
    """xgboost 3.x writes ``"[5E-1]"`` (a vector, one entry per target); older versions a plain number."""
    text = str(raw).strip()
    if text.startswith("[") and text.endswith("]"):
        parts = [p for p in text[1:-1].split(",") if p.strip()]
        if len(parts) != 1:
            raise ValueError(f"fallback model has {len(parts)} base scores (multi-target); only one is supported")
        text = parts[0]
    return float(text)


def _parse_model(booster: xgb.Booster) -> tuple[float, list[_Tree], int]:
    """Return (base margin, trees, number of features) from the booster's JSON, refusing what we cannot run."""
    doc = json.loads(booster.save_raw("json"))
    learner = doc["learner"]
    objective = learner["objective"]["name"]
    if objective != SUPPORTED_OBJECTIVE:
        raise ValueError(
            f"fallback model objective {objective!r} is not supported; train it with {SUPPORTED_OBJECTIVE!r}"
        )
    gb = learner["gradient_booster"]
    if gb["name"] != "gbtree":
        raise ValueError(f"fallback model booster {gb['name']!r} is not supported; train it with booster='gbtree'")
    params = learner["learner_model_param"]
    if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) > 1:
        raise ValueError("fallback model is multi-class or multi-target; only one binary output is supported")
    if any(t == "c" for t in learner.get("feature_types") or []):
        raise ValueError("fallback model has categorical features; only numerical splits are supported")
    base_score = _parse_base_score(params["base_score"])
    if not 0.0 < base_score < 1.0:
        raise ValueError(f"fallback model base_score {base_score} is not a probability in (0, 1)")
    p = _f32(base_score)
    base_margin = math.log(p / (1.0 - p))
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
        if any(int(s) != 0 for s in raw.get("split_type", [])) or raw.get("categories_nodes"):
            raise ValueError(f"fallback model tree {k} has categorical splits; only numerical splits are supported")
        tree = _Tree(
            left=[int(i) for i in raw["left_children"]],
            right=[int(i) for i in raw["right_children"]],
            feature=[int(i) for i in raw["split_indices"]],
            condition=[_f32(float(c)) for c in raw["split_conditions"]],
            default_left=[bool(d) for d in raw["default_left"]],
        )
        bad = [f for f, lc in zip(tree.feature, tree.left, strict=True) if lc != -1 and not 0 <= f < n_features]
        if bad:
            raise ValueError(f"fallback model tree {k} splits on feature index {bad[0]} of {n_features}")
        if tree.depth() > MAX_DEPTH:
            raise ValueError(f"fallback model tree {k} is deeper than {MAX_DEPTH}; use a smaller fallback model")
        trees.append(tree)
    return base_margin, trees, n_features


def _tree_source(tree: _Tree, node: int, indent: str, out: list[str]) -> None:
    if tree.left[node] == -1:
        out.append(f"{indent}m += {tree.condition[node]!r}\n")
        return
    x = f"x{tree.feature[node]}"
    op, bound = _left_test(tree.condition[node])
    left, right = tree.left[node], tree.right[node]
    if tree.default_left[node]:  # NaN fails every comparison: test "goes right" so that NaN lands left
        out.append(f"{indent}if {x} {_NEGATE[op]} {bound}:\n")
        first, second = right, left
    else:
        out.append(f"{indent}if {x} {op} {bound}:\n")
        first, second = left, right
    _tree_source(tree, first, indent + "    ", out)
    out.append(f"{indent}else:\n")
    _tree_source(tree, second, indent + "    ", out)


def _row_source(base_margin: float, trees: list[_Tree], n_features: int) -> str:
    names = ", ".join(f"x{i}" for i in range(n_features)) + ("," if n_features == 1 else "")
    out = [
        "def predict_row(values):\n",
        "    try:\n",
        f"        {names} = map(float, values)\n",
        "    except (TypeError, ValueError):\n",
        "        _bad_row(values)\n",
        "        raise\n",
        f"    m = {base_margin!r}\n",
    ]
    for tree in trees:
        _tree_source(tree, 0, "    ", out)
    out += [
        "    if m >= 0.0:\n",
        "        return 1.0 / (1.0 + _exp(-m))\n",
        "    e = _exp(m)\n",
        "    return e / (1.0 + e)\n",
    ]
    return "".join(out)


class _Walk:
    """Vectorised batch predictor: every tree padded to a complete binary tree, all trees walked level by level.

    Padding replicates a shallow leaf's value over its whole bottom range, so the direction taken below it does
    not matter. Comparisons are done in float32, as xgboost does.
    """

    def __init__(self, base_margin: float, trees: list[_Tree], depth: int) -> None:
        n_trees, inner = len(trees), 2**depth - 1
        self.base_margin, self.depth = base_margin, depth
        feature = np.zeros((n_trees, inner), np.intp)
        threshold = np.zeros((n_trees, inner), np.float32)
        default_right = np.zeros((n_trees, inner), bool)
        leaf = np.zeros((n_trees, inner + 1), np.float64)
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
                stack += [(tree.left[node], 2 * pos + 1, level + 1), (tree.right[node], 2 * pos + 2, level + 1)]
        self.feature, self.threshold = feature.ravel(), threshold.ravel()
        self.default_right, self.leaf = default_right.ravel(), leaf.ravel()
        tree_ids = np.arange(n_trees, dtype=np.intp)
        self.roots = tree_ids * inner  # global index of each root
        self.child_offset = 1 - self.roots  # child(g) = 2 * g + child_offset + went_right
        self.leaf_offset = tree_ids - inner  # leaf slot of a bottom node g = g + leaf_offset

    def __call__(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        n, k = matrix.shape
        flat = matrix.ravel()
        row_base = (np.arange(n, dtype=np.intp) * k)[:, None]
        g = np.broadcast_to(self.roots, (n, self.roots.size))
        for _ in range(self.depth):
            v = flat[row_base + self.feature[g]]
            right = v >= self.threshold[g]
            right |= np.isnan(v) & self.default_right[g]
            g = 2 * g + self.child_offset + right
        margin = self.base_margin + self.leaf[g + self.leaf_offset].sum(axis=1)
        return _sigmoid(margin)


def _sigmoid(margin: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(-np.abs(margin))
    return np.where(margin >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


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
    """A compiled ``binary:logistic`` gbtree booster; see the module docstring for the contract.

    ``predict_row(values)`` takes the feature values ordered as ``features`` and returns the probability.
    """

    predict_row: Callable[[Sequence[float]], float]

    def __init__(self, booster: xgb.Booster, features: list[str], version: str) -> None:
        if booster.num_features() != len(features):
            raise ValueError(f"fallback model {version} has {booster.num_features()} features, {len(features)} named")
        if booster.feature_names is not None and list(booster.feature_names) != list(features):
            raise ValueError(f"fallback model {version} feature names {booster.feature_names} != {features}")
        base_margin, trees, n_features = _parse_model(booster)
        self.features = list(features)
        self.version = version
        # The batch path beyond WALK_MAX_ROWS; one thread: an online worker must not fight its neighbours.
        self._booster = booster.copy()
        self._booster.set_param({"nthread": 1})
        depth = max(t.depth() for t in trees)
        self._walk = _Walk(base_margin, trees, depth) if depth <= MAX_WALK_DEPTH else None
        self.source = _row_source(base_margin, trees, n_features)
        namespace: dict[str, Any] = {"_exp": math.exp, "_bad_row": partial(_explain_bad_row, self.features, version)}
        exec(compile(self.source, f"<fallback {version}>", "exec"), namespace)
        self.predict_row = namespace["predict_row"]

    @classmethod
    def from_booster(cls, booster: xgb.Booster, features: list[str], version: str) -> FallbackModel:
        return cls(booster, features, version)

    def predict_dict(self, features: Mapping[str, float]) -> float:
        """Score features given by name (extra names are ignored); ``ValueError`` names a missing feature."""
        try:
            values = [features[name] for name in self.features]
        except KeyError as exc:
            raise ValueError(f"fallback model {self.version}: missing feature {exc.args[0]!r}") from None
        return self.predict_row(values)

    def predict_many(self, matrix: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Probabilities (float64) for an (n, len(features)) matrix, NaN = missing; same numbers as predict_row."""
        with np.errstate(over="ignore"):  # values beyond float32 become ±inf, as in xgboost
            data = np.asarray(matrix, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != len(self.features):
            raise ValueError(
                f"fallback model {self.version}: expected an (n, {len(self.features)}) matrix, got shape {data.shape}"
            )
        n = data.shape[0]
        if n <= SMALL_BATCH:
            return np.array([self.predict_row(row) for row in data.tolist()], dtype=np.float64)
        if n <= WALK_MAX_ROWS and self._walk is not None:
            return self._walk(np.ascontiguousarray(data))
        return np.asarray(self._booster.inplace_predict(data), dtype=np.float64)

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
    loaded = Registry(registry_root).load(model, "fallback", features)
    return FallbackModel.from_booster(loaded.booster, loaded.manifest.features, loaded.manifest.version)
