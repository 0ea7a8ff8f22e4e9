"""The Redis score store against real redis-server processes: layout, loading, publish, rollback, retention, readers."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis

from warehouse.errors import PointerMovedError, StoreError, StoreUnavailableError
from warehouse.store.layout import bucket_of, buckets, crc32s, id_array, store_key
from warehouse.store.local_server import RedisProcess
from warehouse.store.score_store import AsyncScoreReader, RunState, ScoreReader, ScoreStore
from warehouse.store.wire import BucketedBatch, crc64, has_duplicates, restore_payloads

MODEL = "churn"
DAY = datetime(2026, 3, 1, tzinfo=UTC)


def ten_digit_ids(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    base = 1_000_000_000 + np.arange(n, dtype=np.int64) * 449_000 + rng.integers(0, 449_000, n)
    return [str(x) for x in base.tolist()]


def scores_for(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(n, dtype=np.float32)


def load_run(
    store: ScoreStore, run_id: str, ids: list[str], scores: np.ndarray, as_of: datetime = DAY, publish: bool = True
) -> None:
    store.create_run(MODEL, run_id, "v1", as_of, len(ids))
    store.writer(MODEL, run_id).write_batch(ids, scores)
    store.finalize_run(MODEL, run_id)
    if publish:
        store.publish(MODEL, run_id)


@pytest.fixture
def store(redis_url: str) -> ScoreStore:
    return ScoreStore.from_url(redis_url, socket_timeout=2.0)


# ---------------------------------------------------------------- layout


def test_bucket_function_is_crc32_and_vectorised_twin_agrees() -> None:
    """The bucket of an id is CRC-32 of its UTF-8 bytes mod n, for short, long, non-ASCII and mixed-length ids."""
    assert zlib.crc32(b"123456789") == 0xCBF43926 == bucket_of(b"123456789", 2**32)
    rng = np.random.default_rng(3)
    alphabet = list("abcXYZ019-_é漢字🙂")
    ids = ["".join(rng.choice(alphabet, size=int(rng.integers(1, 30)))) for _ in range(3000)]
    ids += [*ten_digit_ids(2000), "x" * 128, "é" * 64]
    for n in (1, 7, 313, 100_003):
        expected = [bucket_of(i.encode(), n) for i in ids]
        assert buckets(id_array(ids), n).tolist() == expected
        assert buckets(id_array(ids).slice(100, 50), n).tolist() == expected[100:150]


def test_bucket_function_is_stable_across_processes() -> None:
    """A fresh interpreter with another hash seed computes the same buckets (no use of hash())."""
    ids = ["1234567890", "user-17", "héllo", "x" * 128]
    code = (
        "from warehouse.store.layout import bucket_of, buckets, id_array\n"
        f"ids = {ids!r}\n"
        "print([bucket_of(i.encode(), 1009) for i in ids], buckets(id_array(ids), 1009).tolist())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=Path(__file__).parents[3]
    ).stdout
    here = [bucket_of(i.encode(), 1009) for i in ids]
    assert out.strip() == f"{here} {here}"
    assert here == [zlib.crc32(i.encode()) % 1009 for i in ids]


def test_keys_spread_over_slots_and_pointer_is_tagged() -> None:
    """Per-model keys share the {model} tag (one slot); bucket keys carry no tag, so they spread over slots."""
    assert store_key(MODEL, "current") == "ps:{churn}:current"
    assert store_key(MODEL, "meta", "r1").startswith("ps:{churn}:")
    slots = {redis.crc.key_slot(store_key(MODEL, "bucket", "r1", b).encode()) for b in range(200)}
    assert "{" not in store_key(MODEL, "bucket", "r1", 0)
    assert len(slots) > 150


def test_restore_payload_is_byte_identical_to_redis_dump(redis_url: str) -> None:
    """The client-built listpack payload equals what DUMP returns for the same hash built with HSET."""
    client = redis.Redis.from_url(redis_url)
    client.config_set("rdbcompression", "no")
    ids = [f"user-{i}" for i in range(60)] + ["k" * 60, "é" * 30]
    scores = scores_for(len(ids))
    client.hset("ref", mapping={i: struct.pack("<f", s) for i, s in zip(ids, scores.tolist(), strict=True)})
    [payload] = restore_payloads(BucketedBatch([0], [0, len(ids)], id_array(ids), scores))
    assert payload == client.dump("ref")
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    client.config_set("rdbcompression", "yes")


# ---------------------------------------------------------------- loading and reading


def test_round_trip_of_many_entities(store: ScoreStore, redis_url: str) -> None:
    """Mixed ids written in several batches read back exactly (sync and async readers); unknown ids are None."""
    ids = ten_digit_ids(3000) + [f"cust-{i}-é" for i in range(2000)] + ["a", "x" * 128]
    scores = scores_for(len(ids))
    store.create_run(MODEL, "r1", "v7", DAY, len(ids))
    writer = store.writer(MODEL, "r1")
    added = sum(writer.write_batch(ids[i : i + 1500], scores[i : i + 1500]) for i in range(0, len(ids), 1500))
    assert added == len(ids)
    assert store.finalize_run(MODEL, "r1").loaded_rows == len(ids)
    assert store.sample_check(MODEL, "r1", ids, scores) == []
    store.publish(MODEL, "r1")
    reader = ScoreReader.from_url(redis_url)
    asked = [*ids, "missing-1", "missing-2"]
    got = reader.get_many(MODEL, asked)
    assert len(got) == len(asked)
    assert [g.score if g else None for g in got] == [*scores.tolist(), None, None]
    assert {(g.run_id, g.model_version, g.as_of) for g in got if g} == {("r1", "v7", DAY)}
    single = reader.get(MODEL, ids[42])
    assert single is not None and single.score == float(scores[42]) and single.as_of.tzinfo is not None
    assert reader.get(MODEL, "nobody") is None
    assert reader.get_many("other", ["a"]) == [None]

    async def read_async() -> list[float | None]:
        areader = AsyncScoreReader.from_url(redis_url)
        try:
            hits = await areader.get_many(MODEL, asked)
            assert (await areader.get(MODEL, ids[0])) == got[0]
            return [h.score if h else None for h in hits]
        finally:
            await areader.aclose()

    assert asyncio.run(read_async()) == [*scores.tolist(), None, None]


def test_bytes_per_entity_and_listpack_encoding(store: ScoreStore) -> None:
    """20k 10-digit ids cost <= 30 bytes each (INFO used_memory delta) and every bucket stays a listpack."""
    ids, scores = ten_digit_ids(20_000), scores_for(20_000)
    info = store.create_run(MODEL, "r1", "v1", DAY, len(ids))
    writer = store.writer(MODEL, "r1")
    store.heartbeat(MODEL, "r1")
    before = int(store.client.info("memory")["used_memory"])
    writer.write_batch(ids, scores)
    after = int(store.client.info("memory")["used_memory"])
    per_entity = (after - before) / len(ids)
    assert per_entity <= 30, f"{per_entity:.1f} bytes/entity"
    keys = [store_key(MODEL, "bucket", "r1", b) for b in range(info.n_buckets)]
    with store.client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.object("encoding", key)
            pipe.hlen(key)
        replies = pipe.execute()
    assert set(replies[0::2]) == {b"listpack"}
    assert max(replies[1::2]) <= 100 and sum(replies[1::2]) == len(ids)


def test_restore_path_round_trip_and_fallback(store: ScoreStore) -> None:
    """write_buckets (RESTORE) loads whole buckets; buckets that already exist fall back to HSET; counts add up."""
    ids, scores = ten_digit_ids(6000, seed=5), scores_for(6000, seed=5)
    info = store.create_run(MODEL, "r1", "v1", DAY, len(ids))
    writer = store.writer(MODEL, "r1")
    owner = buckets(id_array(ids), info.n_buckets)
    first = np.flatnonzero(owner < 10)  # some buckets pre-exist: RESTORE refuses them (BUSYKEY)
    writer.write_batch([ids[i] for i in first[::2]], scores[first[::2]])
    assert writer.write_buckets(ids, scores) == len(ids) - len(first[::2])
    assert store.finalize_run(MODEL, "r1").loaded_rows == len(ids)
    assert store.sample_check(MODEL, "r1", ids, scores) == []
    assert store.client.object("encoding", store_key(MODEL, "bucket", "r1", int(owner[-1]))) == b"listpack"
    assert store.sample_check(MODEL, "r1", ids[:3], scores[:3] + 1.0)[0].actual == float(scores[0])


def test_duplicate_ids_fall_back_to_hset(store: ScoreStore) -> None:
    """A batch with a repeated id cannot become one listpack: write_buckets falls back to HSET (last score wins);
    CRC-32 collisions (plumless/buckeroo) are told apart from real duplicates."""
    distinct = id_array(["plumless", "buckeroo", "x"])
    assert not has_duplicates(distinct, crc32s(distinct))
    repeated = id_array(["plumless", "x", "plumless"])
    assert has_duplicates(repeated, crc32s(repeated))
    store.create_run(MODEL, "r1", "v1", DAY, 2)
    assert store.writer(MODEL, "r1").write_buckets(["a", "b", "a"], [0.1, 0.2, 0.3]) == 2
    assert store.finalize_run(MODEL, "r1").loaded_rows == 2
    assert store.sample_check(MODEL, "r1", ["a", "b"], [0.3, 0.2]) == []


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


def _write_slice(url: str, run_id: str, ids: list[str], scores: list[float]) -> None:
    with ScoreStore.from_url(url) as store:
        writer = store.writer(MODEL, run_id)
        for i in range(0, len(ids), 700):
            writer.write_batch(ids[i : i + 700], scores[i : i + 700])


def test_concurrent_writer_processes_all_land(store: ScoreStore, redis_url: str) -> None:
    """Four processes, each with its own client, write interleaved slices of one run: every row lands, counted once."""
    ids, scores = ten_digit_ids(12_000, seed=9), scores_for(12_000, seed=9)
    store.create_run(MODEL, "r1", "v1", DAY, len(ids))
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_write_slice, args=(redis_url, "r1", ids[k::4], scores[k::4].tolist())) for k in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    info = store.finalize_run(MODEL, "r1")
    assert (info.state, info.loaded_rows) == (RunState.LOADED, len(ids))
    assert store.sample_check(MODEL, "r1", ids, scores) == []


def test_invalid_entity_ids_are_refused(store: ScoreStore) -> None:
    """Too long, empty, or control-character ids raise StoreError naming the id; nothing of the batch is written."""
    store.create_run(MODEL, "r1", "v1", DAY, 10)
    writer = store.writer(MODEL, "r1")
    for bad, words in [("x" * 129, "129 UTF-8 bytes"), ("ab\ncd", "control character"), ("", "empty"),
                       ("a\x85", "control character"), ("tab\there", "control character")]:  # fmt: skip
        with pytest.raises(StoreError, match=words) as caught:
            writer.write_batch(["good-1", bad, "good-2"], [0.1, 0.2, 0.3])
        assert repr(bad)[:20] in str(caught.value) and "row 1" in str(caught.value)
    with pytest.raises(StoreError, match="not a string"):
        ScoreReader(store.client).get(MODEL, 12)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="finite"):
        writer.write_batch(["a", "b"], [0.1, float("nan")])
    assert store.client.keys("ps:s:*") == []
    assert store.get_run(MODEL, "r1").loaded_rows == 0  # type: ignore[union-attr]


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


# ---------------------------------------------------------------- publish, rollback, retention


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
    with pytest.raises(StoreError, match="older than the current run"):
        store.publish(MODEL, "r1")
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


def test_future_check_and_retention_ages_read_the_injected_clock(redis_url: str) -> None:
    """The store reads time only through its clock: an as_of one day ahead of it is refused (whatever the
    calendar says), and a rolled-away run waits out the grace period by that clock, not the wall's."""
    now = [time.time() - 10 * 86_400.0]  # the store's clock, ten days behind the wall
    skewed = ScoreStore.from_url(redis_url, socket_timeout=2.0, clock=lambda: now[0])
    try:
        with pytest.raises(StoreError, match="in the future"):
            skewed.create_run(MODEL, "ahead", "v1", now[0] + 86_400.0, 1)
        ids = ten_digit_ids(50)
        load_run(skewed, "r1", ids, scores_for(50, 1), as_of=datetime.fromtimestamp(now[0] - 3600, UTC))
        load_run(skewed, "r2", ids, scores_for(50, 2), as_of=datetime.fromtimestamp(now[0] - 60, UTC))
        skewed.rollback(MODEL)  # r2 is retired at the store's "now"
        assert skewed.cleanup(MODEL, keep_runs=0, grace_s=600.0).removed == {}
        now[0] += 601.0
        assert set(skewed.cleanup(MODEL, keep_runs=0, grace_s=600.0).removed) == {"r2"}
    finally:
        skewed.close()


def test_reader_sees_old_or_new_run_never_a_mix(store: ScoreStore, redis_url: str) -> None:
    """A reader thread running through publishes, rollbacks and cleanups gets, in each get_many, hits from exactly
    one run, with that run's value for every entity, and never a miss for an entity present in every run."""
    ids = ten_digit_ids(2000, seed=4)
    expected = {f"r{k}": dict(zip(ids, scores_for(2000, k).tolist(), strict=True)) for k in range(1, 4)}
    for k in range(1, 4):
        load_run(store, f"r{k}", ids, scores_for(2000, k), as_of=DAY, publish=k == 1)
    stop, seen, problems = threading.Event(), set(), []
    reader = ScoreReader.from_url(redis_url, refresh_s=0.1)

    def read() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            asked = [ids[i] for i in rng.integers(0, len(ids), 50)]
            got = reader.get_many(MODEL, asked)
            runs = {g.run_id if g else None for g in got}
            if len(runs) != 1 or None in runs:
                problems.append(f"mixed or missing: {runs}")
                continue
            run = str(runs.pop())
            seen.add(run)
            scores = [g.score if g else None for g in got]
            problems.extend(f"{run}:{e}" for e, v in zip(asked, scores, strict=True) if v != expected[run][e])

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for step in (lambda: store.publish(MODEL, "r2"), lambda: store.rollback(MODEL),
                     lambda: store.publish(MODEL, "r3"), lambda: store.cleanup(MODEL, keep_runs=1),
                     lambda: store.rollback(MODEL, to_run="r1"), lambda: store.publish(MODEL, "r2")):  # fmt: skip
            step()
            time.sleep(0.4)
    finally:
        stop.set()
        thread.join(10)
    assert problems == []
    assert seen == {"r1", "r2", "r3"}
    assert reader.current_run(MODEL).run_id == "r2"  # type: ignore[union-attr]


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


def test_out_of_memory_load_fails_cleanly(redis_factory: Callable[..., RedisProcess]) -> None:
    """With maxmemory 2mb a big load fails with a StoreError saying Redis is out of memory; the partial run is
    deleted and the published run keeps being served."""
    server = redis_factory(extra_args=["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"])
    store = ScoreStore.from_url(server.url)
    ids, scores = ten_digit_ids(200), scores_for(200)
    load_run(store, "small", ids, scores)
    store.create_run(MODEL, "big", "v2", DAY + timedelta(days=1), 400_000)
    writer = store.writer(MODEL, "big")
    with pytest.raises(StoreError, match="out of memory") as caught:
        for start in range(0, 400_000, 50_000):
            writer.write_batch(ten_digit_ids(50_000, seed=start), scores_for(50_000, seed=start))
    assert "published run is untouched" in str(caught.value)
    assert store.get_run(MODEL, "big") is None
    assert store.client.keys("ps:s:churn:big:*") == []
    reader = ScoreReader(store.client)
    assert [g.score if g else None for g in reader.get_many(MODEL, ids)] == scores.tolist()
    assert store.current_run(MODEL).run_id == "small"  # type: ignore[union-attr]


def test_arrow_input_and_empty_batch(store: ScoreStore) -> None:
    """Arrow string columns (chunked or sliced) are accepted as ids; an empty batch only beats the heartbeat."""
    column = id_array(ten_digit_ids(400)).cast(pa.large_string())  # pa.array() would import pandas (slow)
    ids = pa.chunked_array([column.slice(0, 150), column.slice(150)])
    store.create_run(MODEL, "r1", "v1", DAY, 400)
    writer = store.writer(MODEL, "r1")
    assert writer.write_batch([], []) == 0
    assert writer.write_batch(ids, scores_for(400)) == 400
    assert store.finalize_run(MODEL, "r1").loaded_rows == 400
    with pytest.raises(StoreError, match="not loading"):
        store.writer(MODEL, "r1")


# ---------------------------------------------------------------- recovery (jobs.restore uses these)


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


def test_purge_run_keys_removes_buckets_whose_metadata_is_gone(store: ScoreStore) -> None:
    ids = ten_digit_ids(1_000)
    load_run(store, "r1", ids, scores_for(1_000), publish=False)
    with pytest.raises(StoreError, match="has its metadata"):
        store.purge_run_keys(MODEL, "r1")
    store.client.delete(store_key(MODEL, "meta", "r1"))
    assert store.purge_run_keys(MODEL, "r1") > 0
    assert list(store.client.scan_iter(match=store_key(MODEL, "bucket", "r1", "*"))) == []


def test_the_lock_has_one_holder_and_expires(store: ScoreStore) -> None:
    with store.lock(MODEL, "restore", 60) as first:
        with store.lock(MODEL, "restore", 60) as second:
            assert first and not second
        assert store.client.exists(store_key(MODEL, "lock", "restore"))  # the refused one released nothing
    assert not store.client.exists(store_key(MODEL, "lock", "restore"))
    with contextlib.ExitStack() as stack:
        stalled = stack.enter_context(contextlib.ExitStack())
        assert stalled.enter_context(store.lock(MODEL, "restore", 0.2))
        time.sleep(0.4)  # its holder stalled past the TTL: another one takes the lock
        assert stack.enter_context(store.lock(MODEL, "restore", 60))
        stalled.close()  # the stalled holder's release must not remove the new holder's lock
        assert store.client.exists(store_key(MODEL, "lock", "restore"))
    assert not store.client.exists(store_key(MODEL, "lock", "restore"))
