"""The circuit breaker as a pure state machine, driven by a fake clock (no Redis, no asyncio)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from online.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(failures: int = 3, reset_s: float = 2.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(failures, reset_s, clock), clock


def test_opens_after_n_consecutive_failures_only():
    b, _ = breaker()
    b.failure()
    b.failure()
    b.success()  # a success resets the count
    b.failure()
    b.failure()
    assert b.state is BreakerState.CLOSED and b.allow()
    b.failure()
    assert b.state is BreakerState.OPEN and not b.allow() and b.opened_total == 1


def test_half_open_lets_exactly_one_probe_through_after_reset():
    b, clock = breaker()
    for _ in range(3):
        b.failure()
    clock.now += 1.99
    assert not b.allow()
    clock.now += 0.01
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # the probe
    assert not b.allow() and not b.allow()  # everyone else keeps skipping Redis
    b.success()
    assert b.state is BreakerState.CLOSED and b.allow()


def test_failed_probe_reopens_for_another_reset_period():
    b, clock = breaker()
    for _ in range(3):
        b.failure()
    clock.now += 2.0
    assert b.allow()
    b.failure()
    assert b.state is BreakerState.OPEN and not b.allow() and b.opened_total == 2
    clock.now += 2.0
    assert b.allow()


def test_a_lost_probe_is_replaced_after_reset_s():
    """A probe whose request was cancelled never reports; the breaker must not stay half-open forever."""
    b, clock = breaker()
    for _ in range(3):
        b.failure()
    clock.now += 2.0
    assert b.allow()
    clock.now += 1.0
    assert not b.allow()
    clock.now += 1.0
    assert b.allow()


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0.0)


@given(st.lists(st.sampled_from(["ok", "fail", "tick", "allow"]), max_size=60))
def test_invariants_under_any_sequence(events: list[str]):
    """Closed always allows; open never allows before reset_s; the state is always one of the three."""
    b, clock = breaker(failures=2, reset_s=1.0)
    for event in events:
        if event == "ok":
            b.success()
        elif event == "fail":
            b.failure()
        elif event == "tick":
            clock.now += 0.4
        else:
            state = b.state
            allowed = b.allow()
            if state is BreakerState.CLOSED:
                assert allowed
            assert state in set(BreakerState)
        if b._state is BreakerState.OPEN and clock.now - b._opened_at < 1.0:
            assert not b.allow()
