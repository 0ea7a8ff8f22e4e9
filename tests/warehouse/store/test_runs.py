"""The run lifecycle against a real redis-server: create, finalize, reopen."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.warehouse.store.sample_runs import DAY, MODEL, load_run, scores_for, ten_digit_ids
from warehouse.errors import StoreError
from warehouse.store import ScoreStore
from warehouse.store.keys import RunState, store_key


def test_finalize_refuses_missing_rows_and_create_is_idempotent(store: ScoreStore) -> None:
    """finalize_run names both counts when rows are missing; create_run retried with the same arguments is a no-op."""
    first = store.create_run(MODEL, "r1", "v1", DAY, 100)
    assert store.create_run(MODEL, "r1", "v1", DAY, 100) == first
    with pytest.raises(StoreError, match="already exists"):
        store.create_run(MODEL, "r1", "v2", DAY, 100)
    store.writer(MODEL, "r1").write_batch(ten_digit_ids(60), scores_for(60))
    with pytest.raises(StoreError, match="holds 60 rows in Redis but 100 were expected"):
        store.finalize_run(MODEL, "r1")
    assert store.get_run(MODEL, "r1").state is RunState.LOADING  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="time zone"):
        store.create_run(MODEL, "r2", "v1", datetime(2026, 1, 1), 1)


def test_a_reopened_run_is_rewritten_in_place_and_gets_its_state_back(store: ScoreStore, redis_url: str) -> None:
    """Buckets of the current run lost: reopened, the missing rows written again (readers keep the run), finalize
    counts it and gives it back ``published``; a publish meanwhile retires it and stops the rewrite."""
    ids, values = ten_digit_ids(2_000), scores_for(2_000)
    load_run(store, "r1", ids, values)
    info = store.get_run(MODEL, "r1")
    assert info is not None
    store.client.delete(*[store_key(MODEL, "bucket", "r1", b) for b in range(0, info.n_buckets, 3)])
    assert store.count_rows(MODEL, "r1") < 2_000
    reopened = store.reopen_run(MODEL, "r1")
    assert (reopened.state, reopened.reopened_from) == (RunState.LOADING, RunState.PUBLISHED)
    assert store.reopen_run(MODEL, "r1").reopened_from == RunState.PUBLISHED  # idempotent
    store.writer(MODEL, "r1").write_batch(ids, values)
    done = store.finalize_run(MODEL, "r1")
    assert (done.state, done.reopened_from, done.loaded_rows) == (RunState.PUBLISHED, None, 2_000)
    assert store.sample_check(MODEL, "r1", ids, values) == []
    current = store.current_run(MODEL)
    assert current is not None and current.run_id == "r1"

    store.reopen_run(MODEL, "r1")
    load_run(store, "r2", ids, values, as_of=DAY + timedelta(days=1))  # retires r1
    with pytest.raises(StoreError, match="retired"):
        store.writer(MODEL, "r1")
