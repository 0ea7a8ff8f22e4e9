"""Publish, rollback and restore_pointer against real redis-server processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from tests.warehouse.store.sample_runs import DAY, MODEL, load_run, scores_for, ten_digit_ids
from warehouse.errors import PointerMovedError, StoreError, StoreUnavailableError
from warehouse.store import ScoreStore
from warehouse.store.keys import RunState, store_key
from warehouse.store.local_server import RedisProcess
from warehouse.store.readers import ScoreReader


def test_publish_refusals_and_idempotent_retry(store: ScoreStore) -> None:
    """Unknown and unverified runs are refused; older as_of needs force; republishing the current run is a no-op."""
    ids = ten_digit_ids(500)
    with pytest.raises(StoreError, match="unknown run"):
        store.publish(MODEL, "nope")
    with pytest.raises(StoreError, match="no previous run"):
        store.rollback(MODEL)
    store.create_run(MODEL, "loading", "v1", DAY, 500)
    with pytest.raises(StoreError, match="not verified"):
        store.publish(MODEL, "loading")
    load_run(store, "r2", ids, scores_for(500, 2), as_of=DAY + timedelta(days=1))
    with pytest.raises(StoreError, match="no previous run"):
        store.rollback(MODEL)
    again = store.publish(MODEL, "r2")
    assert again.already_current and again.run_id == "r2"
    load_run(store, "r1", ids, scores_for(500, 1), as_of=DAY, publish=False)
    declined = store.publish(MODEL, "r1")
    assert declined.declined and "older than the live run 'r2'" in declined.declined
    assert store.current_run(MODEL).run_id == "r2"  # type: ignore[union-attr]
    assert store.get_run(MODEL, "r1").state is RunState.LOADED  # type: ignore[union-attr]
    forced = store.publish(MODEL, "r1", force=True)
    assert (forced.previous_run_id, forced.run_id) == ("r2", "r1")
    assert store.client.lrange(store_key(MODEL, "history"), 0, -1) == [b"r1", b"r2"]


def test_rollback_and_retention(store: ScoreStore) -> None:
    """Rollback moves the pointer back one publish (or to a named retained run); cleanup keeps current + K previous."""
    ids = ten_digit_ids(300)
    for k in range(1, 5):
        load_run(store, f"r{k}", ids, scores_for(300, k), as_of=DAY + timedelta(days=k))
    assert store.current_run(MODEL).run_id == "r4"  # type: ignore[union-attr]
    back = store.rollback(MODEL)
    assert (back.previous_run_id, back.run_id) == ("r4", "r3")
    states = {r.run_id: r.state for r in store.list_runs(MODEL)}
    assert states == {"r4": RunState.RETIRED, "r3": RunState.PUBLISHED, "r2": RunState.RETIRED,
                      "r1": RunState.RETIRED}  # fmt: skip
    assert store.rollback(MODEL, to_run="r1").run_id == "r1"
    assert store.rollback(MODEL, to_run="r1").already_current
    with pytest.raises(StoreError, match="no previous run"):
        store.rollback(MODEL)
    assert store.publish(MODEL, "r3").previous_run_id == "r1"  # a retired run still present can be republished
    load_run(store, "r5", ids, scores_for(300, 5), as_of=DAY + timedelta(days=5))
    load_run(store, "r6", ids, scores_for(300, 6), as_of=DAY + timedelta(days=6))
    load_run(store, "r7", ids, scores_for(300, 7), as_of=DAY + timedelta(days=7), publish=False)
    report = store.cleanup(MODEL, keep_runs=2, grace_s=0.0)
    assert set(report.removed) == {"r1", "r2", "r4"} and report.keys_deleted > 0
    assert {r.run_id for r in store.list_runs(MODEL)} == {"r6", "r5", "r3", "r7"}  # r7: verified, never published
    with pytest.raises(StoreError, match="not a retained published run"):
        store.rollback(MODEL, to_run="r2")
    assert store.rollback(MODEL, to_run="r3").run_id == "r3"
    assert store.cleanup(MODEL, keep_runs=2, grace_s=60.0).removed == {}  # rolled-away runs wait out the grace
    assert set(store.cleanup(MODEL, keep_runs=2, grace_s=0.0).removed) == {"r5", "r6"}
    leftovers = {run for run in (k.decode().split(":")[3] for k in store.client.scan_iter("ps:s:*"))}
    assert leftovers == {"r3", "r7"}
    assert store.sample_check(MODEL, "r3", ids, scores_for(300, 3)) == []


def test_redis_restart_during_publish(redis_factory: Callable[..., RedisProcess]) -> None:
    """Redis hangs mid-publish and is restarted on the same port: publish raises StoreUnavailableError, a reader
    raises it too, and retrying the publish after the restart succeeds once (no duplicate history entry)."""
    durable = ["--appendonly", "yes", "--appendfsync", "always"]
    server = redis_factory(extra_args=durable)
    store = ScoreStore.from_url(server.url, socket_timeout=0.5)
    ids = ten_digit_ids(500)
    load_run(store, "r1", ids, scores_for(500, 1))
    load_run(store, "r2", ids, scores_for(500, 2), as_of=DAY + timedelta(days=1), publish=False)
    reader = ScoreReader.from_url(server.url, socket_timeout=0.5)
    os.kill(server.pid, signal.SIGSTOP)  # the server stops answering while the publish is in flight
    try:
        with pytest.raises(StoreUnavailableError, match="publishing run r2"):
            store.publish(MODEL, "r2")
    finally:
        server.kill()
    with pytest.raises(StoreUnavailableError):
        reader.get(MODEL, ids[0])
    redis_factory(extra_args=[*durable, "--dir", server.workdir], port=server.port)
    publication = store.publish(MODEL, "r2")
    assert (publication.previous_run_id, publication.already_current) == ("r1", False)
    assert store.publish(MODEL, "r2").already_current
    assert store.client.lrange(store_key(MODEL, "history"), 0, -1) == [b"r2", b"r1"]
    time.sleep(1.0)
    assert reader.get(MODEL, ids[0]).run_id == "r2"  # type: ignore[union-attr]


def test_restore_pointer_flips_only_while_the_pointer_is_what_was_seen(store: ScoreStore) -> None:
    """After Redis lost the pointer, ``restore_pointer`` makes a verified run current with its rollback targets in
    the history, ignoring the as_of rule; when a publish moved the pointer meanwhile it refuses and changes nothing;
    called again it is a no-op."""
    ids = ten_digit_ids(500)
    load_run(store, "old", ids, scores_for(500, 1), as_of=DAY - timedelta(days=1), publish=False)
    load_run(store, "live", ids, scores_for(500, 2), as_of=DAY - timedelta(days=2), publish=False)  # older as_of
    pub = store.restore_pointer(MODEL, "live", seen=None, history=["old", "missing"])
    assert (pub.run_id, pub.previous_run_id, pub.already_current) == ("live", None, False)
    assert [r.decode() for r in store.client.lrange(store_key(MODEL, "history"), 0, -1)] == ["live", "old"]
    states = {r.run_id: r.state for r in store.list_runs(MODEL)}
    assert states == {"live": RunState.PUBLISHED, "old": RunState.RETIRED}
    assert store.restore_pointer(MODEL, "live", seen=None, history=["old"]).already_current
    store.publish(MODEL, "old", force=True)  # a publish lands meanwhile
    with pytest.raises(PointerMovedError, match="now serves run 'old'"):
        store.restore_pointer(MODEL, "live", seen=None)
    current = store.current_run(MODEL)
    assert current is not None and current.run_id == "old"
    assert store.rollback(MODEL).run_id == "live"  # the history rebuilt by the restore is a real one
