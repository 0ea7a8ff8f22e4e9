"""The staleness ladder as a pure function: every rung, its boundaries, and clock skew."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from online.policy import Rung, Source, decide, policy_version
from warehouse.model_config import load_config
from warehouse.settings import DEFAULT_MODELS_FILE

MAX, HARD = 100.0, 1000.0
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("age", "can_fallback", "source", "rung", "stale"),
    [
        (0.0, False, Source.PRECOMPUTED, Rung.FRESH, False),
        (MAX, False, Source.PRECOMPUTED, Rung.FRESH, False),  # boundary is inclusive
        (MAX, True, Source.PRECOMPUTED, Rung.FRESH, False),  # fresh wins over features
        (MAX + 1, True, Source.FALLBACK, Rung.FALLBACK_STALE, False),
        (MAX + 1, False, Source.PRECOMPUTED, Rung.STALE, True),
        (HARD, False, Source.PRECOMPUTED, Rung.STALE, True),
        (HARD + 1, False, Source.DEFAULT, Rung.DEFAULT_EXPIRED, False),
        (HARD + 1, True, Source.FALLBACK, Rung.FALLBACK_STALE, False),
        (-50.0, False, Source.PRECOMPUTED, Rung.FRESH, False),  # future as_of (clock skew) = age 0
    ],
)
def test_ladder_with_a_hit(age: float, can_fallback: bool, source: Source, rung: Rung, stale: bool) -> None:
    d = decide(NOW - age, NOW, MAX, HARD, can_fallback)
    assert (d.source, d.rung, d.stale) == (source, rung, stale)
    assert d.age_s == max(0.0, age)


def test_ladder_with_a_miss() -> None:
    assert decide(None, NOW, MAX, HARD, True).source is Source.FALLBACK
    d = decide(None, NOW, MAX, HARD, False)
    assert (d.source, d.rung, d.age_s) == (Source.DEFAULT, Rung.DEFAULT_MISS, None)


@given(
    age=st.floats(min_value=-1e6, max_value=1e9, allow_nan=False),
    can_fallback=st.booleans(),
    hit=st.booleans(),
)
def test_ladder_properties(age: float, can_fallback: bool, hit: bool) -> None:
    """Stale answers are always precomputed within the hard limit; fallback only when features are given."""
    d = decide(NOW - age if hit else None, NOW, MAX, HARD, can_fallback)
    if d.stale:
        assert d.source is Source.PRECOMPUTED and MAX < max(age, 0) <= HARD
    if d.source is Source.FALLBACK:
        assert can_fallback
    if d.source is Source.PRECOMPUTED:
        assert hit and max(age, 0) <= HARD


def test_policy_version_is_stable_and_sensitive() -> None:
    spec = load_config(DEFAULT_MODELS_FILE).model("churn")
    assert policy_version(spec) == policy_version(spec)
    changed = spec.model_copy(update={"default_score": 0.5})
    assert policy_version(changed) != policy_version(spec)
