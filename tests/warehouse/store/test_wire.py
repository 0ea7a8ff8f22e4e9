"""Wire encoding of bulk writes: bucketed batches, and HSET/RESP bytes identical to what redis-py sends, checked
byte for byte against redis-py's own encoder and by sending them raw to a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis
from redis.connection import Connection

from warehouse.store.ids import bucket_of, id_array
from warehouse.store.keys import decode_score, store_key
from warehouse.store.wire import BucketedBatch, bucketize, hset_commands, resp, select_buckets

N_BUCKETS = 7
IDS = [f"cust-{i:04d}" for i in range(60)] + ["kund-é", "x" * 128, "cust-0003"]  # a repeat, UTF-8, the longest id


def _scores(n: int) -> np.ndarray:
    return np.random.default_rng(3).random(n, dtype=np.float32)


def _keys(batch: BucketedBatch) -> list[bytes]:
    return [store_key("churn", "bucket", "run-1", b).encode() for b in batch.bucket_ids]


def _redis_py_bytes(*args: bytes) -> bytes:
    return b"".join(Connection().pack_command(*args))


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url, protocol=2)
    yield conn
    conn.close()


def test_bucketize_groups_every_id_under_its_bucket() -> None:
    """Each bucket's slice holds exactly the ids whose bucket it is, with their scores; a repeat keeps order."""
    scores = _scores(len(IDS))
    batch = bucketize(id_array(IDS), scores, N_BUCKETS)
    assert batch.bucket_ids == sorted(set(batch.bucket_ids)) and batch.starts[-1] == len(IDS)
    seen = []
    for k, bucket in enumerate(batch.bucket_ids):
        s, e = batch.starts[k], batch.starts[k + 1]
        ids = batch.ids[s:e].to_pylist()
        assert ids and all(bucket_of(i, N_BUCKETS) == bucket for i in ids)
        seen += list(zip(ids, batch.scores[s:e].tolist(), strict=True))
    expected = [(i.encode(), float(v)) for i, v in zip(IDS, scores.tolist(), strict=True)]
    assert sorted(seen) == sorted(expected)
    repeat = [v for i, v in seen if i == b"cust-0003"]
    assert repeat == [float(scores[3]), float(scores[-1])]  # stable: the last score last


def test_hset_commands_are_the_bytes_redis_py_would_send() -> None:
    """Each bucket's HSET, as redis-py's ``pack_command`` encodes it, concatenated in bucket order."""
    batch = bucketize(id_array(IDS), _scores(len(IDS)), N_BUCKETS)
    keys = _keys(batch)
    chunks = hset_commands(batch, keys, per_chunk=10**9)
    assert len(chunks) == 1 and chunks[0][1] == len(keys)
    expected = b""
    for k, key in enumerate(keys):
        s, e = batch.starts[k], batch.starts[k + 1]
        args = [b"HSET", key]
        for raw_id, score in zip(batch.ids[s:e].to_pylist(), batch.scores[s:e], strict=True):
            args += [raw_id, np.float32(score).astype("<f4").tobytes()]
        expected += _redis_py_bytes(*args)
    assert chunks[0][0] == expected
    assert resp(b"HLEN", keys[0]) == _redis_py_bytes(b"HLEN", keys[0])


def test_chunks_split_at_bucket_boundaries() -> None:
    """With a small ``per_chunk`` the commands spread over several chunks; joined they are the single-chunk bytes."""
    batch = bucketize(id_array(IDS), _scores(len(IDS)), N_BUCKETS)
    keys = _keys(batch)
    (whole, count), *_ = hset_commands(batch, keys, per_chunk=10**9)
    chunks = hset_commands(batch, keys, per_chunk=15)
    assert len(chunks) > 1
    assert b"".join(w for w, _ in chunks) == whole and sum(c for _, c in chunks) == count == len(keys)


def test_raw_commands_land_in_a_real_redis(client: redis.Redis) -> None:
    """The chunks sent raw over one connection: one integer reply per HSET, and HGETALL gives every id its (last)
    score, decoded from the 4 stored bytes."""
    scores = _scores(len(IDS))
    batch = bucketize(id_array(IDS), scores, N_BUCKETS)
    keys = _keys(batch)
    chunks = hset_commands(batch, keys, per_chunk=15)
    conn = client.connection_pool.get_connection()
    try:
        replies = []
        for wire, count in chunks:
            conn.send_packed_command([wire])
            replies += [conn.read_response() for _ in range(count)]
    finally:
        client.connection_pool.release(conn)
    assert sum(replies) == len(set(IDS))  # new fields only: the repeat overwrote its own field
    stored = {}
    for key in keys:
        stored.update({k.decode(): decode_score(v) for k, v in client.hgetall(key).items()})
    last = {i: float(v) for i, v in zip(IDS, scores.tolist(), strict=True)}  # a repeat keeps its last score
    assert stored == last


def test_select_buckets_encodes_the_same_commands_for_a_subset() -> None:
    """The commands of a subset of buckets (as a cluster resend asks) equal that subset of the full encoding."""
    batch = bucketize(id_array(IDS), _scores(len(IDS)), N_BUCKETS)
    keys = _keys(batch)
    positions = [len(keys) - 1, 0]
    sub = select_buckets(batch, positions)
    assert sub.bucket_ids == [batch.bucket_ids[k] for k in positions]
    each = [hset_commands(select_buckets(batch, [k]), [keys[k]], 10**9)[0][0] for k in positions]
    assert hset_commands(sub, [keys[k] for k in positions], 10**9)[0][0] == b"".join(each)
    assert select_buckets(batch, []).bucket_ids == []
