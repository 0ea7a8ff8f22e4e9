"""Retention against a real redis-server: leftovers of interrupted cleanups, crashed loaders, purged keys."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import timedelta

import numpy as np
import pytest

from tests.warehouse.store.sample_runs import DAY, MODEL, load_run, scores_for, ten_digit_ids
from warehouse.errors import StoreError
from warehouse.store import ScoreStore
from warehouse.store.keys import store_key
from warehouse.store.readers import ScoreReader


def test_cleanup_removes_leftovers_of_an_interrupted_cleanup(store: ScoreStore) -> None:
    """Bucket keys whose run metadata is gone (a cleanup or abort that died half-way) are swept by the next cleanup;
    the current run is never touched."""
    ids = ten_digit_ids(300)
    load_run(store, "live", ids, scores_for(300))
    load_run(store, "dead", ids, scores_for(300, 1), publish=False)
    store.client.delete(store_key(MODEL, "meta", "dead"))  # fault injection: what a cleanup that died did first
    store.client.zrem(store_key(MODEL, "runs"), "dead")
    report = store.cleanup(MODEL, keep_runs=0)
    assert report.removed == {"dead": "leftover keys of a deleted run"} and report.keys_deleted > 0
    assert {k.decode().split(":")[3] for k in store.client.scan_iter("ps:s:*")} == {"live"}
    assert store.sample_check(MODEL, "live", ids, scores_for(300)) == []
    with pytest.raises(StoreError, match="current run"):
        store.abort_run(MODEL, "live")


def _slow_loader(url: str) -> None:
    with ScoreStore.from_url(url) as store:
        writer = store.writer(MODEL, "crashed")
        for i in range(10_000):
            writer.write_batch([f"e-{i}-{j}" for j in range(200)], np.full(200, 0.5, np.float32))
            time.sleep(0.01)


def test_loader_killed_mid_load_is_cleaned_up(store: ScoreStore, redis_url: str) -> None:
    """A loader SIGKILLed mid-load leaves the current run served; cleanup removes the orphan once its heartbeat ages."""
    ids, scores = ten_digit_ids(1000), scores_for(1000)
    load_run(store, "good", ids, scores)
    store.create_run(MODEL, "crashed", "v2", DAY + timedelta(days=1), 2_000_000)
    proc = multiprocessing.get_context("fork").Process(target=_slow_loader, args=(redis_url,))
    proc.start()
    deadline = time.monotonic() + 30
    while store.get_run(MODEL, "crashed").loaded_rows < 2000 and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.05)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    reader = ScoreReader.from_url(redis_url)
    assert [g.run_id if g else None for g in reader.get_many(MODEL, ids[:20])] == ["good"] * 20
    assert store.cleanup(MODEL, orphan_after_s=30).removed == {}  # heartbeat still fresh
    time.sleep(0.6)
    report = store.cleanup(MODEL, orphan_after_s=0.5)
    assert list(report.removed) == ["crashed"] and "abandoned loader" in report.removed["crashed"]
    assert report.keys_deleted > 0 and store.client.keys("ps:s:churn:crashed:*") == []
    assert store.get_run(MODEL, "crashed") is None
    assert reader.get(MODEL, ids[0]).score == float(scores[0])  # type: ignore[union-attr]


def test_purge_run_keys_removes_buckets_whose_metadata_is_gone(store: ScoreStore) -> None:
    ids = ten_digit_ids(1_000)
    load_run(store, "r1", ids, scores_for(1_000), publish=False)
    with pytest.raises(StoreError, match="has its metadata"):
        store.purge_run_keys(MODEL, "r1")
    store.client.delete(store_key(MODEL, "meta", "r1"))
    assert store.purge_run_keys(MODEL, "r1") > 0
    assert list(store.client.scan_iter(match=store_key(MODEL, "bucket", "r1", "*"))) == []
