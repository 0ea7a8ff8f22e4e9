"""What an objective's score means: ranges, probabilities, thresholds and training labels."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from warehouse.objectives import (
    TRAINABLE_OBJECTIVES,
    check_labels,
    check_thresholds,
    is_probability,
    label_rule,
    output_range,
    range_text,
)

INF = math.inf
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("objective", "expected", "text"),
    [
        ("binary:logistic", (0.0, 1.0), "[0, 1]"),
        ("reg:logistic", (0.0, 1.0), "[0, 1]"),
        ("binary:hinge", (0.0, 1.0), "[0, 1]"),
        ("count:poisson", (0.0, INF), "[0, inf)"),
        ("reg:gamma", (0.0, INF), "[0, inf)"),
        ("reg:tweedie", (0.0, INF), "[0, inf)"),
        ("reg:squarederror", (-INF, INF), "(-inf, inf)"),
        ("reg:absoluteerror", (-INF, INF), "(-inf, inf)"),
        ("binary:logitraw", (-INF, INF), "(-inf, inf)"),
        ("rank:ndcg", (-INF, INF), "(-inf, inf)"),
        ("reg:quantileerror", (-INF, INF), "(-inf, inf)"),
    ],
)
def test_output_range(objective: str, expected: tuple[float, float], text: str) -> None:
    assert output_range(objective) == expected
    assert range_text(objective) == text


def test_probabilities_and_trainable_objectives() -> None:
    assert is_probability("binary:logistic") and is_probability("reg:logistic")
    assert not any(is_probability(o) for o in ("binary:hinge", "binary:logitraw", "reg:squarederror", "count:poisson"))
    trainable = {
        "binary:logistic", "reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror", "reg:logistic",
        "count:poisson", "reg:gamma", "reg:tweedie",
    }  # fmt: skip
    assert trainable == TRAINABLE_OBJECTIVES
    assert not any(o.startswith(("rank:", "multi:")) for o in TRAINABLE_OBJECTIVES)


def test_thresholds_inside_the_range_pass_and_outside_are_named() -> None:
    assert check_thresholds({"high": 0.7, "low": 0.0, "top": 1.0}, "binary:logistic") is None  # bounds included
    assert check_thresholds({"big": 3.5, "negative": -2.0}, "reg:squarederror") is None
    assert check_thresholds({"many": 12.0}, "count:poisson") is None
    problem = check_thresholds({"ok": 0.5, "high_risk": 3.5}, "binary:logistic")
    assert problem is not None
    assert "high_risk = 3.5 is outside the range of binary:logistic scores [0, 1]" in problem
    assert "ok" not in problem
    two = check_thresholds({"a": -0.5, "b": 1.5}, "reg:logistic")
    assert two is not None and "a = -0.5, b = 1.5 are outside the range of reg:logistic scores [0, 1]" in two
    negative = check_thresholds({"none": -1.0}, "reg:gamma")
    assert negative is not None and "none = -1.0 is outside the range of reg:gamma scores [0, inf)" in negative
    assert check_thresholds({"nan": float("nan")}, "reg:squarederror") is not None  # never a usable threshold


@pytest.mark.parametrize(
    ("objective", "good", "bad", "shown", "rule"),
    [
        ("binary:logistic", [0, 1, 1, 0], [0, 1, 2, 0.5], "0.5, 2.0 (2 of 4 rows)", "0/1 labels"),
        ("reg:logistic", [0, 0.25, 1], [0.5, 1.5, -0.1], "-0.1, 1.5 (2 of 3 rows)", "labels in [0, 1]"),
        ("count:poisson", [0, 3, 7.5], [-1, 2, -1], "-1.0 (2 of 3 rows)", "counts >= 0"),
        ("reg:tweedie", [0, 0.5, 100], [-0.01, 1], "-0.01 (1 of 2 rows)", "labels >= 0"),
        ("reg:gamma", [0.1, 3, 1e6], [0, 1, 2], "0.0 (1 of 3 rows)", "labels > 0"),
        ("reg:squarederror", [-1e6, 0, 42.5], [1, np.inf, np.nan], "inf, nan (2 of 3 rows)", "finite labels"),
        ("reg:pseudohubererror", [-3, 3], [np.nan], "nan (1 of 1 rows)", "finite labels"),
    ],
)
def test_check_labels(objective: str, good: list[float], bad: list[float], shown: str, rule: str) -> None:
    assert check_labels(np.array(good, dtype=np.float32), objective) is None
    assert label_rule(objective) == rule
    problem = check_labels(np.array(bad, dtype=np.float64), objective, what="labels for spend")
    assert problem == f"labels for spend include {shown}; {objective} needs {rule}"


def test_check_labels_names_a_few_values_only() -> None:
    problem = check_labels(-np.arange(1, 101, dtype=np.float32), "count:poisson")
    assert problem == "labels include -100.0, -99.0, -98.0, ... (100 of 100 rows); count:poisson needs counts >= 0"
    assert check_labels(np.array([np.nan]), "binary:logistic") is not None  # NaN is never 0 or 1


def test_importing_it_is_cheap() -> None:
    """The models file imports it: neither xgboost nor numpy comes with it."""
    code = "import sys, warehouse.objectives; print(sorted(m for m in ('xgboost', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
