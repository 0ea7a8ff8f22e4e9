"""The pure scoring core: quantile summaries of a score distribution, merged across chunks, and the PSI between
two runs for any real-valued score (against PSI computed exactly from the raw scores)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs import scoring


def _exact_psi(reference: np.ndarray, actual: np.ndarray) -> float:
    """The same bins from the raw scores: the reference's deciles, plus a bin below and one above its range."""
    inner = np.quantile(reference, np.linspace(0, 1, scoring.PSI_BINS + 1))[1:-1]
    points = np.array([np.nextafter(reference.min(), -np.inf), *inner, reference.max()])

    def mass(scores: np.ndarray) -> np.ndarray:
        below = np.searchsorted(np.sort(scores), points, side="right") / len(scores)
        return np.clip(np.diff(np.concatenate([[0.0], below, [1.0]])), 1e-4, None)

    e, a = mass(reference), mass(actual)
    return float(np.sum((a - e) * np.log(a / e)))


@pytest.mark.parametrize("scale", [1.0, 1000.0, 1e-3])
@pytest.mark.parametrize("shift", [0.0, 0.25, 0.5])
def test_psi_of_summaries_matches_the_exact_decile_psi_at_any_scale(scale: float, shift: float) -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, 200_000) * scale + 40 * scale
    act = rng.normal(shift, 1, 200_000) * scale + 40 * scale
    got = scoring.psi_of_summaries(scoring.quantile_summary(ref), scoring.quantile_summary(act))
    assert got == pytest.approx(_exact_psi(ref, act), abs=5e-3)  # 1 % quantile resolution: tails are linear
    if shift == 0.0:
        assert got < 0.01
    else:
        assert got > 0.05


def test_merged_chunk_summaries_describe_the_whole_run() -> None:
    rng = np.random.default_rng(4)
    scores = np.concatenate([rng.gamma(2.0, 3.0, 30_000), rng.gamma(9.0, 1.0, 70_000)])  # chunks differ
    parts = [(len(c), scoring.quantile_summary(c)) for c in np.array_split(scores, 9)]
    merged = scoring.merge_summaries(parts)
    whole = scoring.quantile_summary(scores)
    assert len(merged) == scoring.SUMMARY_POINTS and merged[0] == whole[0] and merged[-1] == whole[-1]
    assert scoring.psi_of_summaries(whole, merged) < 0.005
    assert scoring.merge_summaries([(0, []), (5, [])]) == []


def test_ties_and_constant_scores() -> None:
    rng = np.random.default_rng(5)
    half_zero = np.r_[np.zeros(50_000), rng.random(50_000)]
    again = np.r_[np.zeros(50_000), rng.random(50_000)]
    assert scoring.psi_of_summaries(scoring.quantile_summary(half_zero), scoring.quantile_summary(again)) < 0.02
    assert scoring.psi_of_summaries([1.0] * 101, [1.0] * 101) == 0.0
    assert scoring.psi_of_summaries([1.0] * 101, [2.0] * 101) > 1.0
    assert scoring.quantile_summary(np.array([np.nan, np.inf])) == []


def test_run_psi_reads_summaries_then_histograms_and_says_none_without_either() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.random(10_000), rng.random(10_000) ** 2
    new = {"quantiles": scoring.quantile_summary(a), "histogram": scoring.histogram(a)}
    old_style = {"histogram": scoring.histogram(b)}  # a run recorded before summaries
    assert scoring.run_psi(new, {"quantiles": scoring.quantile_summary(b)}) == pytest.approx(_exact_psi(a, b), abs=5e-3)
    assert scoring.run_psi(old_style, new) == pytest.approx(scoring.psi(old_style["histogram"], new["histogram"]))
    assert scoring.run_psi({}, new) is None
    assert scoring.run_psi({"histogram": [0] * scoring.HIST_BINS}, {"histogram": [0] * scoring.HIST_BINS}) is None
    with pytest.raises(ValueError, match="empty score distribution"):
        scoring.psi_of_summaries([], scoring.quantile_summary(a))
