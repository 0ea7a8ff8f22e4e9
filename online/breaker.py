"""A circuit breaker for the Redis lookup: a pure state machine with an injectable clock (no I/O, no asyncio).

- ``closed``: every call goes through; ``failures`` consecutive failures open the breaker.
- ``open``: calls are refused (the reader answers from the fallback model or the default at once) until
  ``reset_s`` have passed; then the breaker turns ``half_open``.
- ``half_open``: exactly one probe call is let through; its success closes the breaker, its failure opens it again
  for another ``reset_s``. A probe that never reports (a cancelled request) is replaced after ``reset_s``.

Callers ask ``allow()`` before the call and report ``success()`` or ``failure()`` after it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Gauge values of each state (metrics)
STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitBreaker:
    """See the module docstring. ``clock`` returns seconds (monotonic)."""

    __slots__ = ("_clock", "_failures", "_opened_at", "_probe_at", "_state", "failures", "opened_total", "reset_s")

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError("a breaker needs failures >= 1 and reset_s > 0")
        self.failures, self.reset_s = failures, reset_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_at: float | None = None
        self.opened_total = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose ``reset_s`` has passed reads as ``half_open``."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether the next call may go to Redis (in ``half_open``: only the one probe)."""
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at < self.reset_s:
                return False
            self._state = BreakerState.HALF_OPEN
            self._probe_at = now
            return True
        # half-open: one probe at a time; a probe silent for reset_s is presumed lost
        if self._probe_at is None or now - self._probe_at >= self.reset_s:
            self._probe_at = now
            return True
        return False

    def success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probe_at = None

    def failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self.failures:
            self._open()

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probe_at = None
        self._failures = 0
        self.opened_total += 1
