"""Optimistic transactions on a real redis-server: a watched key changed by another client between WATCH and EXEC
makes ``transact`` run the body again on fresh reads; a key that keeps changing ends in a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from warehouse.errors import StoreError
from warehouse.store.transaction import transact

KEY = "{churn}:counter"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def other(redis_url: str) -> Iterator[redis.Redis]:
    """A second client on its own connection: the "other writer"."""
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def test_a_key_changed_inside_the_body_makes_it_run_again(client: redis.Redis, other: redis.Redis) -> None:
    """On the first attempt another client writes the watched key after it was read: EXEC fails, the body runs
    again, reads the new value and its write is the one that stands."""
    client.set(KEY, 1)
    seen: list[int] = []

    def increment(pipe: Any) -> int:
        pipe.watch(KEY)
        value = int(pipe.get(KEY))
        seen.append(value)
        if len(seen) == 1:
            other.set(KEY, 10)  # between WATCH and EXEC
        pipe.multi()
        pipe.set(KEY, value + 1)
        pipe.execute()
        return value + 1

    assert transact(client, increment) == 11
    assert seen == [1, 10]
    assert int(client.get(KEY)) == 11  # type: ignore[arg-type]


def test_a_body_that_changes_nothing_returns_at_once(client: redis.Redis) -> None:
    """A body that reads, unwatches and returns runs once and writes nothing."""
    client.set(KEY, 5)
    calls: list[None] = []

    def read_only(pipe: Any) -> int:
        calls.append(None)
        pipe.watch(KEY)
        value = int(pipe.get(KEY))
        pipe.unwatch()
        return value

    assert transact(client, read_only) == 5 and len(calls) == 1


def test_a_refusal_raised_by_the_body_is_not_retried(client: redis.Redis) -> None:
    """Any error other than ``WatchError`` leaves at once, its queued writes never sent."""
    client.set(KEY, 1)
    calls: list[None] = []

    def refuse(pipe: Any) -> None:
        calls.append(None)
        pipe.watch(KEY)
        pipe.multi()
        pipe.set(KEY, 2)
        raise StoreError("refused: the run is not loaded")

    with pytest.raises(StoreError, match="refused: the run is not loaded"):
        transact(client, refuse)
    assert len(calls) == 1 and int(client.get(KEY)) == 1  # type: ignore[arg-type]


def test_a_key_that_always_changes_gives_up_after_the_bound(client: redis.Redis, other: redis.Redis) -> None:
    """Another client rewrites the watched key on every attempt: ``transact`` stops after ``max_attempts`` with a
    ``StoreError`` saying so, and none of the body's writes landed."""
    client.set(KEY, 0)
    calls: list[None] = []

    def contended(pipe: Any) -> None:
        calls.append(None)
        pipe.watch(KEY)
        pipe.get(KEY)
        other.incr(KEY)
        pipe.multi()
        pipe.set(KEY, -1)
        pipe.execute()

    with pytest.raises(StoreError, match="gave up after 3 attempts") as info:
        transact(client, contended, max_attempts=3)
    assert "rewritten by another client" in str(info.value)
    assert len(calls) == 3 and int(client.get(KEY)) == 3  # type: ignore[arg-type]
