"""Data profiles and drift (``jobs.profile``) and the monitor's calibration metrics (``jobs.score_metrics``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from jobs import profile, score_metrics


def _table(n: int, shift: float = 0.0, null_every: int = 0, cats: list[str] | None = None, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, n)
    mask = np.zeros(n, dtype=bool) if not null_every else (np.arange(n) % null_every == 0)
    values = cats or ["a", "b", "c"]
    c = rng.choice(values, size=n)
    return pa.table({"x": pa.array(x, mask=mask), "flag": pa.array(rng.random(n) < 0.3), "c": pa.array(c)})


def _profile(*tables: pa.Table, known: list[str] | None = None) -> dict:
    builder = profile.ProfileBuilder(["x", "flag", "c"], {"c": known or ["a", "b", "c"]})
    for t in tables:
        builder.add(t)
    return builder.profile()


def test_chunks_merge_into_one_profile() -> None:
    """Profiling in chunks gives the counts of the whole and (nearly) its quantiles; NaN counts as a null."""
    t = _table(20_000, null_every=10)
    whole, parts = _profile(t), _profile(t.slice(0, 7000), t.slice(7000))
    assert whole["x"]["nulls"] == parts["x"]["nulls"] == 2000 and whole["x"]["null_rate"] == 0.1
    assert whole["c"]["counts"] == parts["c"]["counts"] and sum(whole["c"]["counts"].values()) == 20_000
    np.testing.assert_allclose(whole["x"]["quantiles"][5:-5], parts["x"]["quantiles"][5:-5], atol=0.02)
    nan = profile.ProfileBuilder(["x"], {})
    nan.add(pa.table({"x": pa.array([1.0, float("nan"), None, 2.0])}))
    assert nan.profile()["x"]["nulls"] == 2


def test_same_data_does_not_drift_and_a_shift_does() -> None:
    base = profile.baseline(_profile(_table(20_000)), np.zeros(10), {"kind": "training"})
    same = profile.drift(base, _profile(_table(20_000, seed=1)))
    assert not any(d["drifted"] for d in same.values())
    assert same["x"]["psi"] < 0.02 and same["c"]["unknown_share"] == 0.0
    moved = profile.drift(base, _profile(_table(20_000, shift=1.5, null_every=5, seed=1)))
    assert moved["x"]["drifted"] and moved["x"]["psi"] > profile.PSI_ALERT
    assert moved["x"]["null_rate_change"] == pytest.approx(0.2)
    assert not moved["flag"]["drifted"] and not moved["c"]["drifted"]


def test_unknown_categories_are_measured() -> None:
    """Values the model does not know raise the unknown share and the category PSI (their own bin)."""
    base = profile.baseline(_profile(_table(10_000)), np.zeros(3), {"kind": "training"})
    now = profile.drift(base, _profile(_table(10_000, cats=["a", "b", "c", "zz"], seed=2)))
    assert now["c"]["unknown_share"] == pytest.approx(0.25, abs=0.02)
    assert now["c"]["drifted"] and now["c"]["psi"] > profile.PSI_ALERT
    assert any("unknown" in r for r in now["c"]["reasons"])


def test_calibration_bins_and_ece() -> None:
    """10 equal-width bins; the ECE is the row-weighted gap between mean prediction and observed rate."""
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    y = np.array([0, 1, 1, 1, 0])
    cal = score_metrics.calibration(y, p)
    bins: list[dict[str, Any]] = cal["bins"]  # type: ignore[assignment]
    assert len(bins) == 10 and [b["count"] for b in bins] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[0]["observed"] == 0.5 and bins[1]["predicted"] is None
    assert cal["ece"] == pytest.approx((2 * 0.45 + 1 * 0.55 + 2 * 0.05) / 5)
    assert score_metrics.calibration(np.array([]), np.array([])) == {}
    assert score_metrics.bias(np.array([1.0, 2.0]), np.array([1.5, 3.0])) == pytest.approx(0.75)
