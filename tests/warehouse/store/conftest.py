"""Fixtures of the store tests: a ``ScoreStore`` on the session's redis-server (flushed per test)."""

from __future__ import annotations

import pytest

from warehouse.store import ScoreStore


@pytest.fixture
def store(redis_url: str) -> ScoreStore:
    return ScoreStore.from_url(redis_url, socket_timeout=2.0)
