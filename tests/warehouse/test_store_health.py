"""The rules of ``warehouse.store_health`` (pure: no Redis), and ``inspect`` against a real Redis."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import redis

from warehouse.catalog import PointerRecord
from warehouse.store import ScoreStore
from warehouse.store.keys import RunInfo, RunState, store_key
from warehouse.store_health import (
    StoreCheck,
    StoreState,
    eviction_problem,
    expected_history,
    inspect,
    judge,
    sample_buckets,
)

MODEL = "churn"
T0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)


def run(run_id: str, published_min: float | None) -> RunInfo:
    published = None if published_min is None else T0 + dt.timedelta(minutes=published_min)
    return RunInfo(MODEL, run_id, "v1", T0, RunState.PUBLISHED, 10, 10, 1, T0, None, published, None)


def record(run_id: str, at_min: float, action: str = "publish") -> PointerRecord:
    return PointerRecord(MODEL, action, run_id, None, T0 + dt.timedelta(minutes=at_min))


@pytest.mark.parametrize(
    ("recorded", "check", "read", "state", "says"),
    [
        (None, StoreCheck(None, None), True, StoreState.NEVER_PUBLISHED, "never been published"),
        (record("r", 0), StoreCheck(None, None), True, StoreState.LOST, "Redis has no published run"),
        (record("r", 0), StoreCheck("r", run("r", 0), 64, 0), True, StoreState.SERVING, "live run of the catalog"),
        (record("r", 0), StoreCheck("r", run("r", 0), 64, 3), True, StoreState.LOST, "3 of 64 sampled buckets"),
        (record("r", 0), StoreCheck("r", None), True, StoreState.LOST, "holds no metadata"),
        (record("r", 0), StoreCheck("n", run("n", 5), 64, 0), True, StoreState.AHEAD, "not recorded it yet"),
        (record("r", 5), StoreCheck("o", run("o", 1), 64, 0), True, StoreState.LOST, "went back to older data"),
        (None, StoreCheck("n", run("n", 5), 64, 0), True, StoreState.AHEAD, "has not recorded"),
        (None, StoreCheck(None, None), False, StoreState.UNCHECKED, "could not be read"),
        (None, StoreCheck("r", run("r", 0), 64, 0), False, StoreState.SERVING, "could not be read"),
        (None, StoreCheck("r", run("r", 0), 64, 1), False, StoreState.LOST, "1 of 64 sampled buckets"),
    ],
)
def test_judge(recorded: PointerRecord | None, check: StoreCheck, read: bool, state: StoreState, says: str) -> None:
    health = judge(MODEL, recorded, check, catalog_read=read)
    assert health.state is state and says in health.reason
    assert health.lost == (state is StoreState.LOST)
    assert health.served_run_id == check.pointer
    assert health.live_run_id == (recorded.run_id if recorded and read else None)


def test_expected_history_replays_publishes_restores_and_rollbacks() -> None:
    newest_first = [record(r, i, a) for i, (a, r) in enumerate([
        ("publish", "a"), ("publish", "b"), ("publish", "c"), ("rollback", "b"), ("publish", "d"), ("restore", "d"),
        ("reconcile", "a"),
    ])][::-1]  # fmt: skip
    assert expected_history(newest_first) == ["a", "d", "b"]
    assert expected_history(newest_first[1:]) == ["d", "b", "a"]
    assert expected_history([]) == []


@pytest.mark.parametrize(
    ("policies", "problem"),
    [
        ({"redis": "noeviction"}, None),
        ({"redis": "volatile-lru"}, None),
        ({"redis": "volatile-ttl"}, None),
        (None, None),  # CONFIG refused: cannot tell
        ({"redis": "allkeys-lru"}, "redis has allkeys-lru"),
        ({"a:1": "noeviction", "b:2": "allkeys-random"}, "b:2 has allkeys-random"),
    ],
)
def test_eviction_problem(policies: dict[str, str] | None, problem: str | None) -> None:
    found = eviction_problem(policies)
    assert (found is None) == (problem is None)
    if problem:
        assert found is not None and problem in found and "noeviction" in found


def test_sample_buckets_spread_over_the_run() -> None:
    assert sample_buckets(10, 64, 3) == list(range(10))
    picked = sample_buckets(10_000, 64, 7)
    assert len(picked) == 64 and picked[0] == 7 and max(np.diff(picked)) <= 157
    assert sample_buckets(10_000, 64, 9_999)[-1] < 10_000


def test_inspect_reads_pointer_metadata_and_missing_buckets(redis_url: str) -> None:
    ids = [f"id{i:05d}" for i in range(5_000)]
    with ScoreStore.from_url(redis_url) as store:
        assert inspect(store.client, MODEL) == StoreCheck(None, None)
        store.create_run(MODEL, "r1", "v1", T0, len(ids))
        store.writer(MODEL, "r1").write_batch(ids, np.full(len(ids), 0.5, np.float32))
        store.finalize_run(MODEL, "r1")
        store.publish(MODEL, "r1")
        whole = inspect(store.client, MODEL)
        assert (whole.pointer, whole.sampled, whole.missing) == ("r1", 64, 0) and whole.run is not None
        with redis.Redis.from_url(redis_url) as raw:
            raw.delete(*[store_key(MODEL, "bucket", "r1", b) for b in range(0, whole.run.n_buckets, 2)])
            partial = inspect(store.client, MODEL, offset=0)
            assert partial.missing == sum(1 for b in sample_buckets(whole.run.n_buckets, 64, 0) if b % 2 == 0) > 0
            raw.delete(store_key(MODEL, "meta", "r1"))
        assert inspect(store.client, MODEL) == StoreCheck("r1", None)
