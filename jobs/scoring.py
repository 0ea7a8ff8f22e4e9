"""The pure core of scoring: predict a matrix, summarise a score distribution, compare two distributions.

No I/O, no Dask: the job in ``jobs/score.py`` reads, maps these functions, and writes.
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb

HIST_BINS = 20  # equal-width bins over [0, 1]: scores are probabilities
_EPS = 1e-4


def predict(booster: xgb.Booster, x: object) -> np.ndarray:
    """Probabilities as float32 via ``inplace_predict`` (no DMatrix). ``x`` is numpy, or cupy on a GPU booster."""
    out = booster.inplace_predict(x)
    if hasattr(out, "get"):  # cupy array → host
        out = out.get()
    return np.asarray(out, dtype=np.float32)


def histogram(scores: np.ndarray) -> list[int]:
    counts, _ = np.histogram(scores, bins=HIST_BINS, range=(0.0, 1.0))
    return [int(c) for c in counts]


def merge_histograms(parts: list[list[int]]) -> list[int]:
    return [int(sum(col)) for col in zip(*parts, strict=True)] if parts else [0] * HIST_BINS


def psi(expected: list[int], actual: list[int]) -> float:
    """Population-stability index of ``actual`` against ``expected`` (histogram counts over the same bins).

    0 for identical distributions; above ~0.25 is usually read as a significant shift.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"histograms have different bins: {e.shape} vs {a.shape}")
    if e.sum() == 0 or a.sum() == 0:
        raise ValueError("cannot compare an empty score distribution")
    e = np.clip(e / e.sum(), _EPS, None)
    a = np.clip(a / a.sum(), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))
