"""The pure core of scoring: predict a matrix, summarise a score distribution, compare two distributions.

No I/O, no Dask: the job in ``jobs/score.py`` reads, maps these functions, and writes.

A run's score distribution is kept as a quantile summary (``SUMMARY_POINTS`` order statistics from the minimum to
the maximum, with the row count), so it works for any real-valued score (probabilities, regression values,
ranking margins): each task summarises its chunk, ``merge_summaries`` combines the chunks' CDFs weighted by rows,
and ``run_psi`` compares two runs over deciles of the reference run (``PSI_BINS`` bins with equal reference mass).
``histogram`` (20 equal-width bins over [0, 1]) is kept for runs recorded before summaries existed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xgboost as xgb

HIST_BINS = 20  # equal-width bins over [0, 1] (runs recorded before quantile summaries)
SUMMARY_POINTS = 101  # quantiles 0, 1, ..., 100 %
PSI_BINS = 10  # deciles of the reference run
_EPS = 1e-4
_PROBS = np.linspace(0.0, 1.0, SUMMARY_POINTS)


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


def quantile_summary(scores: np.ndarray) -> list[float]:
    """``SUMMARY_POINTS`` quantiles of the finite scores, minimum to maximum (empty for no finite score)."""
    values = np.asarray(scores, dtype=np.float64)
    values = values[np.isfinite(values)]
    return [float(q) for q in np.quantile(values, _PROBS)] if len(values) else []


def _cdf(summary: list[float], x: np.ndarray) -> np.ndarray:
    """The right-continuous CDF a summary describes: linear between its distinct quantiles, a jump at a tied value
    (a mass of equal scores), 0 below its minimum and 1 from its maximum."""
    q = np.asarray(summary, dtype=np.float64)
    values, first = np.unique(q, return_index=True)
    last = np.searchsorted(q, values, side="right") - 1
    xp, fp = np.empty(2 * len(values)), np.empty(2 * len(values))
    xp[0::2], xp[1::2] = np.nextafter(values, -np.inf), values
    fp[0::2], fp[1::2] = _PROBS[first], _PROBS[last]
    return np.interp(x, xp, fp, left=0.0, right=1.0)


def merge_summaries(parts: list[tuple[int, list[float]]]) -> list[float]:
    """One summary of the union of chunks ``(rows, summary)``: their CDFs weighted by rows, inverted."""
    parts = [(n, q) for n, q in parts if n > 0 and q]
    if not parts:
        return []
    grid = np.unique(np.concatenate([np.asarray(q) for _, q in parts]))
    total = float(sum(n for n, _ in parts))
    cdf = sum(n * _cdf(q, grid) for n, q in parts) / total
    cdf = np.maximum.accumulate(cdf)
    return [float(v) for v in np.interp(_PROBS, cdf, grid, left=grid[0], right=grid[-1])]


def psi_of_summaries(reference: list[float], actual: list[float]) -> float:
    """PSI of ``actual`` against ``reference`` over the reference's deciles (bins of equal reference mass; fewer
    and wider when ties in the reference would leave a bin under half a decile), plus one bin each below and above
    the reference's range. 0 for the same distribution; above ~0.25 is read as a significant shift."""
    if not reference or not actual:
        raise ValueError("cannot compare an empty score distribution")
    ref = np.asarray(reference)
    candidates = np.unique(ref[np.linspace(0, SUMMARY_POINTS - 1, PSI_BINS + 1).round().astype(int)][1:-1])
    at = _cdf(reference, candidates)
    keep, last = [], 0.0  # a bin must hold at least half a decile of the reference (ties make thinner ones)
    for edge, mass_below in zip(candidates, at, strict=True):
        if mass_below - last >= 0.5 / PSI_BINS and 1.0 - mass_below >= 0.5 / PSI_BINS:
            keep.append(edge)
            last = mass_below
    # Two more bins hold what lies outside the reference's range (none of the reference's mass).
    points = np.asarray([np.nextafter(ref[0], -np.inf), *keep, ref[-1]], dtype=np.float64)

    def mass(summary: list[float]) -> np.ndarray:
        return np.diff(np.concatenate([[0.0], _cdf(summary, points), [1.0]]))

    e = np.clip(mass(reference), _EPS, None)
    a = np.clip(mass(actual), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def run_psi(reference: dict[str, object], actual: dict[str, object]) -> float | None:
    """PSI between two runs' reports: from their quantile summaries, else (older runs) their [0, 1] histograms;
    None when either run has no distribution recorded. The one home of the quality gate's comparison."""
    ref_q, act_q = reference.get("quantiles"), actual.get("quantiles")
    if ref_q and act_q:
        return psi_of_summaries(list(ref_q), list(act_q))  # type: ignore[call-overload]
    ref_h, act_h = reference.get("histogram"), actual.get("histogram")
    if ref_h and act_h and sum(ref_h) and sum(act_h):  # type: ignore[call-overload]
        return psi(list(ref_h), list(act_h))  # type: ignore[call-overload]
    return None
