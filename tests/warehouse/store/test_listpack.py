"""Bulk loading by RESTORE (``warehouse.store.listpack`` and ``RunWriter``), against real redis-server processes.

The parity rule: for buckets written by ``HSET`` (the store's own HSET path), ``DUMP key`` on a server with
``rdbcompression no`` equals the payload ``listpack`` builds, byte for byte: every id length 1-128 (6- and 12-bit
strings), ids and 4-byte values that Redis stores as integers (``lpStringToInt64``), repeated ids, every RDB string
length form, random batches (hypothesis). The parity servers also run ``sanitize-dump-payload yes``, so Redis checks
every payload it restores in depth. Then the writer: a run loaded by RESTORE reads back like one loaded by HSET,
retried and overlapping batches, RESTORE refused, buckets beyond the listpack limits, Redis Cluster.
"""

from __future__ import annotations

import logging
import shutil
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.connection import Connection

from tests.warehouse.store.sample_runs import DAY, MODEL, scores_for, ten_digit_ids
from warehouse.store import ScoreStore
from warehouse.store import writer as writer_module
from warehouse.store.ids import MAX_ENTITY_ID_BYTES, bucket_of, buckets, id_array
from warehouse.store.keys import store_key
from warehouse.store.listpack import (
    crc64,
    crc64s,
    dedupe,
    dump_payloads,
    listpack_fits,
    lp_integers,
    restore_commands,
)
from warehouse.store.local_server import RedisProcess, start_redis
from warehouse.store.pipeline import BulkPipeline, raise_first_error
from warehouse.store.readers import ScoreReader
from warehouse.store.wire import BucketedBatch, bucket_ranges, bucketize, hset_commands, select_buckets

PARITY_ARGS = ["--rdbcompression", "no", "--sanitize-dump-payload", "yes", "--hash-max-listpack-value", "128"]


def float_spelling(text: bytes) -> np.float32:
    """The float32 whose 4 little-endian bytes are ``text``."""
    return np.frombuffer(text, dtype="<f4")[0]


def lp_string_to_int64(s: bytes) -> int | None:
    """Redis's ``lpStringToInt64`` (listpack.c), transcribed: the integer a string is stored as, or None."""
    if not s or len(s) >= 21:
        return None
    if s == b"0":
        return 0
    p, negative = 0, False
    if s[:1] == b"-":
        negative, p = True, 1
        if p == len(s):
            return None
    if not 0x31 <= s[p] <= 0x39:
        return None
    v = s[p] - 0x30
    p += 1
    while p < len(s) and 0x30 <= s[p] <= 0x39:
        v = v * 10 + s[p] - 0x30
        if v >= 2**64:
            return None
        p += 1
    if p < len(s):
        return None
    if negative:
        return -v if v <= 2**63 else None
    return v if v <= 2**63 - 1 else None


@pytest.fixture(scope="module")
def parity_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = start_redis(tmp_path_factory.mktemp("redis-parity"), extra_args=PARITY_ARGS)
    yield server
    server.stop()


@pytest.fixture
def parity(parity_server: RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(parity_server.url)
    client.flushall()
    yield client
    client.close()


def rdb_version(client: redis.Redis) -> int:
    client.set("version-probe", "x")
    return int.from_bytes(client.dump("version-probe")[-10:-8], "little")  # type: ignore[index]


def hset_buckets(client: redis.Redis, batch: BucketedBatch, keys: list[bytes]) -> None:
    """Write a batch's buckets with the store's own HSET path."""

    def encode(positions: list[int] | None) -> list[tuple[bytes, int]]:
        if positions is None:
            return hset_commands(batch, keys, 5000)
        return hset_commands(select_buckets(batch, positions), [keys[k] for k in positions], 5000)

    raise_first_error(BulkPipeline(client).send(keys, encode, "test"))


def assert_parity(client: redis.Redis, ids: list[str], scores: np.ndarray, n_buckets: int) -> BucketedBatch:
    """HSET the batch, DUMP every bucket: equal to ``dump_payloads`` byte for byte; RESTOREd copies equal too."""
    client.flushall()
    batch = bucketize(id_array(ids), scores, n_buckets)
    keys = [b"b:%d" % b for b in batch.bucket_ids]
    hset_buckets(client, batch, keys)
    unique = dedupe(batch)
    assert listpack_fits(unique, 128, 128).all()
    version = rdb_version(client)
    mine = dump_payloads(unique, version)
    for key, payload in zip(keys, mine, strict=True):
        assert client.object("encoding", key) == b"listpack"
        dumped = client.dump(key)
        assert dumped == payload, f"{key!r}: redis {dumped.hex()} != ours {payload.hex()}"  # type: ignore[union-attr]
    copies = [b"copy:" + k for k in keys]
    raise_first_error(BulkPipeline(client).send(copies, lambda _: restore_commands(unique, copies, version, 50), "t"))
    for key, copy in zip(keys, copies, strict=True):
        assert client.dump(copy) == client.dump(key)
    return unique


# ---------------------------------------------------------------- CRC-64 and integers


def test_crc64_is_redis_crc64(redis_url: str) -> None:
    """The check value of crc-64-jones, and the footer of a DUMP Redis made; the vectorised CRC agrees with the
    reference for every length 0-300, from zero and from any state."""
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    client = redis.Redis.from_url(redis_url)
    client.set("k", "some value")
    dumped = client.dump("k")
    assert crc64(dumped[:-8]) == int.from_bytes(dumped[-8:], "little")  # type: ignore[index]
    rng = np.random.default_rng(5)
    lens = np.arange(301)
    rng.shuffle(lens)
    data = rng.integers(0, 256, int(lens.sum()) + 7, dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    init = rng.integers(0, 2**63, len(lens), dtype=np.int64).astype(np.uint64)
    for state in (None, init):
        got = crc64s(data, starts, lens, state).tolist()
        want = [
            crc64(data[s : s + n].tobytes(), 0 if state is None else int(state[k]))
            for k, (s, n) in enumerate(zip(starts.tolist(), lens.tolist(), strict=True))
        ]
        assert got == want


INTEGER_CASES = [b"0", b"7", b"-1", b"127", b"128", b"-4096", b"4095", b"4096", b"-32768", b"32768", b"8388608",
                 b"2147483647", b"2147483648", b"-2147483649", b"9223372036854775807", b"-9223372036854775808",
                 b"1234567890"]  # fmt: skip
STRING_CASES = [b"01", b"00", b"-0", b"+1", b"-", b" 1", b"1 ", b"1a", b"9223372036854775808", b"-9223372036854775809",
                b"12345678901234567890", b"-12345678901234567890", b"\xef\xbc\x91"]  # fmt: skip


def _integers(strings: list[bytes]) -> list[int | None]:
    width = max(len(s) for s in strings)
    mat = np.array([list(s.rjust(width, b"0")) for s in strings], dtype=np.uint8)
    ok, value = lp_integers(mat, np.array([len(s) for s in strings]))
    return [int(v) if k else None for k, v in zip(ok.tolist(), value.tolist(), strict=True)]


def test_lp_integers_follow_lpStringToInt64() -> None:
    """Integers and non-integers (leading zero, "-0", "+1", spaces, overflow, 20 digits, a fullwidth digit)."""
    strings = INTEGER_CASES + [s for s in STRING_CASES if len(s) <= 20]
    assert _integers(strings) == [lp_string_to_int64(s) for s in strings]
    assert _integers(INTEGER_CASES) == [int(s) for s in INTEGER_CASES]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=30), st.data())
def test_lp_integers_random(strings: list[bytes], data: st.DataObject) -> None:
    """Random byte strings, and strings made of digits and signs (mostly integers), as Redis reads them."""
    digits = data.draw(st.lists(st.text("-0123456789", min_size=1, max_size=20), min_size=1, max_size=30))
    for case in (strings, [d.encode() for d in digits]):
        assert _integers(case) == [lp_string_to_int64(s) for s in case]


# ---------------------------------------------------------------- DUMP parity


SPELLED = [b"1234", b"-123", b"9999", b"0123", b"4095", b"4096", b"8191", b"1000", b"-999", b"-100", b"+123", b"12 4"]


def test_dump_parity_every_id_length_and_integer_encoding(parity: redis.Redis) -> None:
    """Ids of every length 1-128 (6-bit strings up to 63 bytes, 12-bit from 64), numeric ids of every integer
    width, strings that look numeric but are not, UTF-8; scores whose 4 bytes spell integers; a repeated id."""
    assert MAX_ENTITY_ID_BYTES <= 128  # the parity server keeps ids up to 128 bytes in a listpack
    ids = [chr(ord("a") + n % 26) * n for n in range(1, MAX_ENTITY_ID_BYTES + 1)]
    ids += ["7" * n for n in range(1, 21)] + ["-" + "3" * n for n in range(1, 20)]
    ids += [s.decode() for s in INTEGER_CASES + STRING_CASES] + ["kund-é", "名前", "x y"]
    ids += [str(x) for x in ten_digit_ids(200)]
    scores = scores_for(len(ids))
    scores[: len(SPELLED)] = [float_spelling(s) for s in SPELLED]
    ids += [ids[3], ids[-1]]  # repeated: first position, last score
    scores = np.concatenate([scores, np.array([0.25, 0.75], dtype=np.float32)])
    unique = assert_parity(parity, ids, scores, n_buckets=6)
    assert len(unique.ids) == len(set(ids))


def test_dump_parity_rdb_string_lengths(parity: redis.Redis) -> None:
    """Listpacks below 64 bytes (1-byte RDB length), below 16384 (2 bytes) and above (5 bytes)."""
    assert_parity(parity, ["1"], np.array([0.5], dtype=np.float32), n_buckets=1)
    assert_parity(parity, [f"c{i}" for i in range(40)], scores_for(40), n_buckets=1)
    big = [f"{i:03d}" + "z" * 125 for i in range(128)]  # 128 fields of 128 bytes: a 17 kB listpack
    assert_parity(parity, big, scores_for(128), n_buckets=1)


id_text = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.integers(0, 10**12).map(lambda v: f"{v:010d}"),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40),
).filter(lambda s: 0 < len(s.encode()) <= MAX_ENTITY_ID_BYTES)
score_bits = st.one_of(
    st.floats(-1e6, 1e6, width=32, allow_nan=False),
    st.sampled_from(SPELLED).map(float_spelling),
    st.binary(min_size=4, max_size=4).map(float_spelling),
).filter(lambda f: bool(np.isfinite(f)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(id_text, score_bits), min_size=1, max_size=120), st.integers(1, 5))
def test_dump_parity_random_batches(parity: redis.Redis, rows: list[tuple[str, float]], n_buckets: int) -> None:
    """Random ids (numeric, zero-padded, any text) and random float32 bit patterns, repeats included."""
    ids = [i for i, _ in rows]
    assert_parity(parity, ids, np.array([s for _, s in rows], dtype=np.float32), n_buckets)


def test_restore_commands_are_the_bytes_redis_py_would_send() -> None:
    batch = dedupe(bucketize(id_array(ten_digit_ids(300)), scores_for(300), 4))
    keys = [b"k%d" % b for b in batch.bucket_ids]
    payloads = dump_payloads(batch, 10)
    chunks = restore_commands(batch, keys, 10, 100)
    assert sum(n for _, n in chunks) == len(keys) and len(chunks) > 1
    packed = b"".join(
        b"".join(Connection().pack_command(b"RESTORE", k, b"0", p)) for k, p in zip(keys, payloads, strict=True)
    )
    assert b"".join(wire for wire, _ in chunks) == packed


def test_a_default_server_stores_a_restored_bucket_as_it_stores_hset(redis_url: str) -> None:
    """With rdbcompression on (LZF), DUMP of a restored bucket equals DUMP of the same bucket written by HSET."""
    client = redis.Redis.from_url(redis_url)
    ids = ten_digit_ids(500) + [f"cust-{i}" for i in range(200)]
    batch = dedupe(bucketize(id_array(ids), scores_for(len(ids)), 3))
    keys, copies = [b"h%d" % b for b in batch.bucket_ids], [b"r%d" % b for b in batch.bucket_ids]
    hset_buckets(client, batch, keys)
    chunks = restore_commands(batch, copies, rdb_version(client), 5000)
    assert BulkPipeline(client).send(copies, lambda _: chunks, "test") == [b"OK"] * len(copies)
    for key, copy in zip(keys, copies, strict=True):
        assert client.dump(key) == client.dump(copy) and client.hgetall(key) == client.hgetall(copy)


def test_dedupe_keeps_the_last_score_at_the_first_row_and_tells_crc_collisions_apart() -> None:
    """A repeated id keeps its first position and last score; two ids with one CRC-32 are both kept."""
    assert zlib.crc32(b"plumless") == zlib.crc32(b"buckeroo")
    ids = ["plumless", "a1", "buckeroo", "a1", "plumless", "zz"]
    batch = bucketize(id_array(ids), np.array([1, 2, 3, 4, 5, 6], dtype=np.float32), 1)
    unique = dedupe(batch)
    got = dict(zip(unique.ids.to_pylist(), unique.scores.tolist(), strict=True))
    assert got == {b"plumless": 5.0, b"a1": 4.0, b"buckeroo": 3.0, b"zz": 6.0} and unique.starts == [0, 4]


def test_bucket_ranges_put_each_bucket_in_one_part() -> None:
    """Parts of whole buckets holding every row once; a repeated id's rows in one part, in batch order."""
    ids = [*ten_digit_ids(5000), "dup", "dup"]
    scores = scores_for(len(ids))
    n_buckets = 80
    parts = [(i.to_pylist(), s.tolist()) for i, s, _ in bucket_ranges(id_array(ids), scores, n_buckets, 1000)]
    assert len(parts) == 6  # ceil(5002 / 1000)
    seen = [{bucket_of(x, n_buckets) for x in part_ids} for part_ids, _ in parts]
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == n_buckets  # no bucket in two parts
    rows = sorted(row for part_ids, part_scores in parts for row in zip(part_ids, part_scores, strict=True))
    assert rows == sorted(zip([i.encode() for i in ids], scores.tolist(), strict=True))
    dups = [[v for x, v in zip(*part, strict=True) if x == b"dup"] for part in parts]
    assert [d for d in dups if d] == [scores[-2:].tolist()]


def test_listpack_fits_the_server_limits() -> None:
    ids = [f"id{i}" for i in range(40)] + ["L" * 100]
    batch = bucketize(id_array(ids), scores_for(len(ids)), 4)
    sizes = np.diff(batch.starts)
    bounds = zip(batch.starts, batch.starts[1:], strict=False)
    longest = [max(len(x) for x in batch.ids[s:e].to_pylist()) for s, e in bounds]
    for entries, value in ((128, 64), (8, 64), (128, 128), (128, 3)):
        want = (sizes <= entries) & (np.array(longest) <= value) & (value >= 4)
        assert listpack_fits(batch, entries, value).tolist() == want.tolist()


# ---------------------------------------------------------------- the writer


def restores(client: Any) -> tuple[int, int]:
    """RESTORE calls and failed calls so far (INFO commandstats)."""
    stat = client.info("commandstats").get("cmdstat_restore", {})
    return int(stat.get("calls", 0)), int(stat.get("failed_calls", 0))


def bucket_dumps(client: Any, run_id: str, n_buckets: int) -> list[bytes | None]:
    return [client.dump(store_key(MODEL, "bucket", run_id, b)) for b in range(n_buckets)]


@pytest.mark.parametrize("small_parts", [False, True])
def test_a_run_loaded_by_restore_reads_back_like_one_loaded_by_hset(
    store: ScoreStore, small_parts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same batches through RESTORE and through HSET: every bucket identical (DUMP), same counts, same reads.
    ``small_parts``: the batch cut into parts of whole buckets and encoded a few hundred entities at a time."""
    if small_parts:
        monkeypatch.setattr(writer_module, "SPLIT_ENTITIES", 1500)
        monkeypatch.setattr(writer_module, "ENCODE_ENTITIES", 700)
    ids = ten_digit_ids(6000, seed=4) + [f"cust-{i:05d}" for i in range(2000)]
    scores = scores_for(len(ids), seed=4)
    scores[:4] = [float_spelling(s) for s in SPELLED[:4]]
    infos = {}
    for run_id, restore in (("by-restore", True), ("by-hset", False)):
        infos[run_id] = store.create_run(MODEL, run_id, "v1", DAY, len(ids))
        writer = store.writer(MODEL, run_id)
        writer.restore = restore
        before = restores(store.client)
        assert writer.write_batch(ids, scores) == len(ids)
        calls = restores(store.client)[0] - before[0]
        assert calls == (infos[run_id].n_buckets if restore else 0)
        assert store.finalize_run(MODEL, run_id).loaded_rows == len(ids)
        assert store.sample_check(MODEL, run_id, ids, scores) == []
    n = infos["by-restore"].n_buckets
    assert bucket_dumps(store.client, "by-restore", n) == bucket_dumps(store.client, "by-hset", n)
    store.publish(MODEL, "by-restore")
    reader = ScoreReader(store.client)
    assert [hit.score for hit in reader.get_many(MODEL, ids)] == scores.tolist()  # type: ignore[union-attr]


def test_retried_and_overlapping_batches_write_every_row_once(store: ScoreStore) -> None:
    """A batch sent again (a new writer, as a retried Dask task) adds nothing; a batch whose first try wrote a
    quarter of its buckets (RESTORE answers BUSYKEY there, HSET fills them) or three quarters (sent as HSET); batches
    that each hold part of every bucket (the first restores, the next add by HSET); repeated ids."""
    ids, scores = ten_digit_ids(4000, seed=2), scores_for(4000, seed=2)
    info = store.create_run(MODEL, "r1", "v1", DAY, len(ids))
    assert store.writer(MODEL, "r1").write_batch(ids, scores) == len(ids)
    before = restores(store.client)
    assert store.writer(MODEL, "r1").write_batch(ids, scores) == 0  # the buckets exist: HSET, nothing new
    assert restores(store.client) == before
    keys = [store_key(MODEL, "bucket", "r1", b) for b in range(info.n_buckets)]
    rng = np.random.default_rng(0)
    for kept in (0.25, 0.75):  # what the first try wrote: a quarter of the buckets, then three quarters
        present = rng.random(info.n_buckets) < kept
        store.client.delete(*[k for k, here in zip(keys, present, strict=True) if not here])
        left, before = store.count_rows(MODEL, "r1"), restores(store.client)
        assert store.writer(MODEL, "r1").write_batch(ids, scores) == len(ids) - left  # the lost rows, once
        calls, failed = (a - b for a, b in zip(restores(store.client), before, strict=True))
        assert store.count_rows(MODEL, "r1") == len(ids)
        if kept < 0.5:  # mostly absent: RESTORE, BUSYKEY for the present ones, which go as HSET
            assert (calls, failed) == (info.n_buckets, int(present.sum()))
        else:  # mostly present: HSET
            assert calls == 0
    # two batches, each half of every bucket, then repeated ids with new scores
    store.create_run(MODEL, "r2", "v1", DAY, len(ids))
    writer = store.writer(MODEL, "r2")
    assert writer.write_batch(ids[::2], scores[::2]) + writer.write_batch(ids[1::2], scores[1::2]) == len(ids)
    again = np.array([0.5, 0.25], dtype=np.float32)
    assert store.writer(MODEL, "r2").write_batch([ids[0], ids[0]], again) == 0
    scores[0] = 0.25
    assert store.finalize_run(MODEL, "r2").loaded_rows == len(ids)
    assert store.sample_check(MODEL, "r2", ids, scores) == []
    store.create_run(MODEL, "r3", "v1", DAY, 3)
    repeated = np.array([1, 2, 3, 4, 5], dtype=np.float32)
    assert store.writer(MODEL, "r3").write_batch(["9", "8", "9", "7", "9"], repeated) == 3
    assert store.sample_check(MODEL, "r3", ["9", "8", "7"], [5, 2, 4]) == []


@pytest.mark.parametrize("renamed", ["RESTORE", "DUMP"])
def test_hset_when_the_server_refuses_restore_or_dump(
    redis_factory: Callable[..., RedisProcess], renamed: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server without RESTORE (renamed away, as managed Redis may): the first batch's RESTOREs fail, those buckets
    and every later batch go as HSET, with one warning. Without DUMP the writer never tries RESTORE."""
    server = redis_factory(extra_args=["--rename-command", renamed, '""'])
    store = ScoreStore.from_url(server.url)
    ids, scores = ten_digit_ids(3000, seed=6), scores_for(3000, seed=6)
    info = store.create_run(MODEL, "r1", "v1", DAY, len(ids))
    writer = store.writer(MODEL, "r1")

    def errors() -> int:  # unknown commands are errors, not command calls
        return int(store.client.info("errorstats").get("errorstat_ERR", {}).get("count", 0))

    first = errors()
    with caplog.at_level(logging.WARNING, logger="warehouse.store.writer"):
        assert writer.write_batch(ids[:2000], scores[:2000]) == 2000
    refused = errors() - first
    assert refused == (info.n_buckets if renamed == "RESTORE" else 1)  # the RESTOREs, or the one DUMP
    assert len([r for r in caplog.records if "refused RESTORE" in r.message]) == (renamed == "RESTORE")
    assert writer.write_batch(ids[2000:], scores[2000:]) == 1000
    assert errors() - first == refused  # neither tried again
    assert store.finalize_run(MODEL, "r1").loaded_rows == len(ids)
    assert store.sample_check(MODEL, "r1", ids, scores) == []
    store.close()


def test_buckets_beyond_the_listpack_limits_go_as_hset(redis_factory: Callable[..., RedisProcess]) -> None:
    """hash-max-listpack-entries 16 (buckets of ~8 fields, some over 16) and ids longer than hash-max-listpack-value
    in some buckets: those buckets are HSET (Redis makes them hashtables), the others restored as listpacks."""
    server = redis_factory(extra_args=["--hash-max-listpack-entries", "16"])
    store = ScoreStore.from_url(server.url)
    ids = ten_digit_ids(1500, seed=8) + ["long-" + "q" * 90 + str(i) for i in range(5)]
    scores = scores_for(len(ids), seed=8)
    info = store.create_run(MODEL, "r1", "v1", DAY, len(ids))
    of = buckets(id_array(ids), info.n_buckets)
    sizes = np.bincount(of, minlength=info.n_buckets)
    long_buckets = set(of[-5:].tolist())
    fits = [b for b in range(info.n_buckets) if sizes[b] <= 16 and b not in long_buckets]
    assert 0 < len(fits) < info.n_buckets - len(long_buckets)
    assert store.writer(MODEL, "r1").write_batch(ids, scores) == len(ids)
    assert restores(store.client) == (len(fits), 0)
    for b in range(info.n_buckets):
        encoding = store.client.object("encoding", store_key(MODEL, "bucket", "r1", b))
        assert encoding == (b"listpack" if b in fits else b"hashtable")
    assert store.finalize_run(MODEL, "r1").loaded_rows == len(ids)
    assert store.sample_check(MODEL, "r1", ids, scores) == []
    store.close()


def test_restore_on_a_redis_cluster_goes_to_each_bucket_node(tmp_path: Path) -> None:
    """On a 3-primary cluster every node restores its own buckets; the run counts and reads back."""
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is needed to start a local Redis Cluster")
    from tests.support.redis_cluster import start_redis_cluster

    cluster = start_redis_cluster(tmp_path / "cluster", masters=3)
    try:
        store = ScoreStore.from_url(cluster.url)
        ids, scores = ten_digit_ids(5000, seed=1), scores_for(5000, seed=1)
        info = store.create_run(MODEL, "r1", "v1", DAY, len(ids))
        assert store.writer(MODEL, "r1").write_batch(ids, scores) == len(ids)
        calls = []
        for node in cluster.nodes:
            with redis.Redis(host="127.0.0.1", port=node.port) as client:
                calls.append(restores(client)[0])
        assert sum(calls) == info.n_buckets and min(calls) > 0
        assert store.finalize_run(MODEL, "r1").loaded_rows == len(ids)
        assert store.sample_check(MODEL, "r1", ids, scores) == []
        store.close()
    finally:
        cluster.stop()
