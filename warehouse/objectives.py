"""What a model's score means, by its XGBoost objective: the one home of these rules.

- ``output_range(objective)``: the interval every prediction falls in — ``[0, 1]`` for the probabilities
  (``binary:logistic``, ``reg:logistic``) and ``binary:hinge`` (0 or 1), ``[0, inf)`` for ``count:poisson``,
  ``reg:gamma`` and ``reg:tweedie`` (an exponential of the margin), ``(-inf, inf)`` for every other objective
  (regression, ``binary:logitraw`` margins, ``rank:*`` margins).
- ``is_probability(objective)``: whether a score is a probability (``binary:logistic``, ``reg:logistic``).
- ``TRAINABLE_OBJECTIVES``: the objectives ``prescore train`` trains (``training.objective``); the others come in
  through ``prescore register``.
- ``check_thresholds(labels, objective)``: threshold labels outside the objective's range (a label no score can
  reach, or every score reaches), or None.
- ``check_labels(y, objective)``: training labels the objective cannot learn from (``label_rule`` says what it
  needs), or None.

Pure and cheap to import (no xgboost; numpy only inside ``check_labels``): the models file imports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy.typing as npt

INF = math.inf
PROBABILITY_OBJECTIVES = frozenset({"binary:logistic", "reg:logistic"})
_UNIT_INTERVAL = PROBABILITY_OBJECTIVES | {"binary:hinge"}
_NON_NEGATIVE = frozenset({"count:poisson", "reg:gamma", "reg:tweedie"})
TRAINABLE_OBJECTIVES = frozenset({
    "binary:logistic", "reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror", "reg:logistic",
    "count:poisson", "reg:gamma", "reg:tweedie",
})  # fmt: skip

# objective → (what its training labels must be, in words; lowest allowed, inclusive?, highest, inclusive?)
_LABEL_RULES: dict[str, tuple[str, float, bool, float, bool]] = {
    "binary:logistic": ("0/1 labels", 0.0, True, 1.0, True),  # and nothing between: see check_labels
    "binary:hinge": ("0/1 labels", 0.0, True, 1.0, True),
    "reg:logistic": ("labels in [0, 1]", 0.0, True, 1.0, True),
    "count:poisson": ("counts >= 0", 0.0, True, INF, True),
    "reg:tweedie": ("labels >= 0", 0.0, True, INF, True),
    "reg:gamma": ("labels > 0", 0.0, False, INF, True),
    "reg:squaredlogerror": ("labels > -1", -1.0, False, INF, True),
}
_BINARY_LABELS = frozenset({"binary:logistic", "binary:hinge"})
_SHOWN = 3  # distinct bad values a message names


def output_range(objective: str) -> tuple[float, float]:
    """The closed interval (bounds may be infinite) every score of a model with ``objective`` falls in."""
    if objective in _UNIT_INTERVAL:
        return 0.0, 1.0
    if objective in _NON_NEGATIVE:
        return 0.0, INF
    return -INF, INF


def is_probability(objective: str) -> bool:
    """Whether a score of ``objective`` is a probability (in [0, 1], and calibrated as one)."""
    return objective in PROBABILITY_OBJECTIVES


def range_text(objective: str) -> str:
    """``output_range`` in words: ``[0, 1]``, ``[0, inf)``, ``(-inf, inf)``."""
    lo, hi = output_range(objective)
    left = "(-inf" if lo == -INF else f"[{lo:g}"
    right = "inf)" if hi == INF else f"{hi:g}]"
    return f"{left}, {right}"


def check_thresholds(labels: Mapping[str, float], objective: str) -> str | None:
    """A message naming each threshold label outside ``output_range(objective)`` (label, value, range), or None."""
    lo, hi = output_range(objective)
    outside = [(name, value) for name, value in labels.items() if not lo <= value <= hi]  # NaN is outside too
    if not outside:
        return None
    named = ", ".join(f"{name} = {value!r}" for name, value in outside)
    verb = "is" if len(outside) == 1 else "are"
    return (
        f"thresholds.labels: {named} {verb} outside the range of {objective} scores {range_text(objective)}: "
        "such a threshold labels every score or none; set one inside the range (or change training.objective)"
    )


def label_rule(objective: str) -> str:
    """What training labels ``objective`` needs, in words: ``0/1 labels``, ``counts >= 0``, ``finite labels``."""
    return _LABEL_RULES[objective][0] if objective in _LABEL_RULES else "finite labels"


def _values(bad: npt.NDArray) -> str:
    import numpy as np

    shown = np.unique(bad)[:_SHOWN]  # sorted, NaN last
    more = ", ..." if len(np.unique(bad)) > _SHOWN else ""
    return ", ".join(repr(float(v)) for v in shown) + more


def check_labels(y: npt.ArrayLike, objective: str, what: str = "labels") -> str | None:
    """A message saying which of ``y`` ``objective`` cannot train on, or None.

    Every objective needs finite labels; ``binary:logistic`` (and ``binary:hinge``) only 0 and 1; ``reg:logistic``
    labels in [0, 1]; ``count:poisson`` and ``reg:tweedie`` labels >= 0; ``reg:gamma`` labels > 0. The message
    reads ``{what} include -1.0 (12 of 5000 rows); count:poisson needs counts >= 0``.
    """
    import numpy as np

    values = np.asarray(y, dtype=np.float64).ravel()
    bad = ~np.isfinite(values)
    if objective in _BINARY_LABELS:
        bad |= (values != 0.0) & (values != 1.0)
    elif objective in _LABEL_RULES:
        _, lo, lo_closed, hi, hi_closed = _LABEL_RULES[objective]
        with np.errstate(invalid="ignore"):
            below = values < lo if lo_closed else values <= lo
            above = values > hi if hi_closed else values >= hi
        bad |= below | above
    if not bad.any():
        return None
    count = int(bad.sum())
    return (
        f"{what} include {_values(values[bad])} ({count} of {len(values)} rows); "
        f"{objective} needs {label_rule(objective)}"
    )
