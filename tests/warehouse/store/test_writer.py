"""Loading a run with ``RunWriter`` against real redis-server processes: memory per entity, concurrent writers,
refused ids, Arrow input, Redis out of memory."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from datetime import timedelta

import pyarrow as pa
import pytest

from tests.warehouse.store.sample_runs import DAY, MODEL, load_run, scores_for, ten_digit_ids
from warehouse.errors import StoreError
from warehouse.store import ScoreStore
from warehouse.store.ids import id_array
from warehouse.store.keys import RunState, store_key
from warehouse.store.local_server import RedisProcess
from warehouse.store.readers import ScoreReader


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
