"""The read cache: its bounds and LRU order (pure), and the readers through it against a real redis-server: cached
answers equal Redis's, cached ids cost no command, a pointer change reads the new run, canary and shadow alike."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import redis

from tests.warehouse.store.sample_runs import DAY, MODEL, load_run, scores_for, ten_digit_ids
from warehouse.store import ReadCache, ScoreStore, connect, connect_async
from warehouse.store.keys import RunInfo, RunState, StoredScore
from warehouse.store.lookup import Route
from warehouse.store.read_cache import ABSENT, ENTRY_OVERHEAD, entry_bytes
from warehouse.store.readers import AsyncScoreReader, ScoreReader


def _run(run_id: str, model: str = MODEL) -> RunInfo:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    return RunInfo(model, run_id, "v1", now, RunState.PUBLISHED, 1, 1, 8, now, None, None, None)


def _score(run: RunInfo, value: float) -> StoredScore:
    return StoredScore(value, run.run_id, run.model_version, run.as_of)


def _reader(url: str, cache: ReadCache | None, refresh_s: float = 60.0, max_stale_s: float = 120.0) -> ScoreReader:
    """A sync reader whose pointers stay fresh for the whole test (unless told otherwise): the commands counted are
    the lookups'."""
    return ScoreReader(connect(url), refresh_s=refresh_s, max_stale_s=max_stale_s, cache=cache)


def _commands(admin: redis.Redis) -> dict[str, int]:
    """Calls per lookup command since the last ``CONFIG RESETSTAT``."""
    stats = admin.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()
            if k in ("cmdstat_get", "cmdstat_hget", "cmdstat_hmget")}  # fmt: skip


# ---------------------------------------------------------------- the cache alone


def test_entries_are_keyed_by_model_run_and_id_and_misses_are_cached() -> None:
    """A result is found only under the model and run it was read from; a cached miss is None, an unknown id
    ABSENT; hits and misses are counted per id looked up."""
    cache = ReadCache(10, 1 << 20)
    r1, r2, other = _run("r1"), _run("r2"), _run("r1", model="other")
    cache.put(r1, b"a", _score(r1, 0.5))
    cache.put(r1, b"b", None)
    assert cache.get(r1, b"a") == _score(r1, 0.5)
    assert cache.get(r1, b"b") is None
    assert cache.get(r2, b"a") is ABSENT and cache.get(other, b"a") is ABSENT and cache.get(r1, b"c") is ABSENT
    assert (cache.hits, cache.misses, len(cache)) == (2, 3, 2)
    cache.put(r1, b"a", _score(r1, 0.9))  # a second read of the same id (two lookups raced): kept as it was
    assert cache.get(r1, b"a") == _score(r1, 0.5) and len(cache) == 2


def test_the_entry_bound_evicts_the_least_recently_used() -> None:
    """Beyond ``max_entries`` the least recently used entry goes (a hit refreshes an entry); evictions are counted;
    ``clear`` empties the cache and its byte count, not the counters."""
    run = _run("r1")
    cache = ReadCache(3, 1 << 20)
    for raw in (b"a", b"b", b"c"):
        cache.put(run, raw, _score(run, 0.1))
    assert cache.get(run, b"a") is not ABSENT  # a is now the most recent: b goes first
    cache.put(run, b"d", None)
    cache.put(run, b"e", None)
    assert len(cache) == 3 and cache.evictions == 2
    assert [raw for raw in (b"a", b"b", b"c", b"d", b"e") if cache.get(run, raw) is not ABSENT] == [b"a", b"d", b"e"]
    assert cache.bytes == sum(entry_bytes(raw) for raw in (b"a", b"d", b"e"))
    cache.clear()
    assert (len(cache), cache.bytes, cache.evictions) == (0, 0, 2)


def test_the_run_least_recently_written_gives_its_entries_first() -> None:
    """Runs no longer read (a publish moved the pointer) lose their entries before the live run loses any; a run
    left empty is forgotten."""
    r1, r2 = _run("r1"), _run("r2")
    cache = ReadCache(4, 1 << 20)
    for raw in (b"a", b"b"):
        cache.put(r1, raw, _score(r1, 0.1))
    for raw in (b"c", b"d", b"e"):
        cache.put(r2, raw, _score(r2, 0.2))
    assert cache.get(r1, b"a") is ABSENT and cache.get(r1, b"b") is not ABSENT  # r1's oldest went first
    cache.put(r2, b"f", None)
    assert len(cache) == 4 and cache.evictions == 2 and cache.get(r1, b"b") is ABSENT
    assert all(cache.get(r2, raw) is not ABSENT for raw in (b"c", b"d", b"e", b"f"))
    assert cache.bytes == sum(entry_bytes(raw) for raw in (b"c", b"d", b"e", b"f"))


def test_the_byte_bound_holds_with_long_ids() -> None:
    """Entries are accounted at ``ENTRY_OVERHEAD`` plus the id's bytes: with 128-byte ids the byte bound binds before
    the entry bound, and it holds after every put; an id bigger than the whole bound is not cached."""
    run = _run("r1")
    max_bytes = 10 * entry_bytes(b"x" * 128)
    cache = ReadCache(1_000, max_bytes)
    for i in range(100):
        cache.put(run, f"{i:03d}".encode() * 42 + b"xx", None)  # 128 bytes
        assert cache.bytes <= max_bytes
    assert len(cache) == 10 and cache.evictions == 90 and cache.bytes == max_bytes
    assert ENTRY_OVERHEAD > 0 and entry_bytes(b"abc") == ENTRY_OVERHEAD + 3
    with pytest.raises(ValueError, match="max_bytes"):
        ReadCache(10, 10)


# ---------------------------------------------------------------- the readers through it


def test_cached_lookups_answer_what_redis_holds_without_a_command(store: ScoreStore, redis_url: str) -> None:
    """Sync and async readers with a cache: a second lookup of the same ids (single and batch, hits and misses)
    gives exactly the first's answers and the uncached reader's, and sends no GET/HGET/HMGET; a batch of cached and
    new ids sends only the new ones."""
    ids = ten_digit_ids(400, seed=2)
    load_run(store, "r1", ids, scores_for(400, 3))
    asked = [*ids[:100], "missing-1", "missing-2"]
    admin = redis.Redis.from_url(redis_url)
    plain = _reader(redis_url, None)
    expected = plain.get_many(MODEL, asked)
    cached = _reader(redis_url, ReadCache(1_000))
    assert cached.get_many(MODEL, asked) == expected
    assert [cached.get(MODEL, e) for e in asked[:5]] == expected[:5]
    admin.config_resetstat()
    assert cached.get_many(MODEL, asked) == expected
    assert [cached.get(MODEL, e) for e in asked] == expected
    assert cached.get_routed(MODEL, asked[-1]).scores == [None]
    assert _commands(admin) == {}
    assert cached.cache is not None and cached.cache.hits >= 2 * len(asked)
    mixed = [*ids[90:110]]  # 10 cached, 10 new
    assert cached.get_many(MODEL, mixed) == plain.get_many(MODEL, mixed)
    assert _commands(admin).get("hmget", 0) >= 1 and len(cached.cache) == len(asked) + 10

    async def read_async() -> None:
        reader = AsyncScoreReader(connect_async(redis_url), refresh_s=60.0, max_stale_s=120.0, cache=ReadCache(1_000))
        try:
            assert await reader.get_many(MODEL, asked) == expected
            one = await reader.get_routed(MODEL, ids[3])
            assert one.scores == [expected[3]] and one.from_cache
            admin.config_resetstat()
            again = await reader.get_many_routed(MODEL, asked)
            assert again.scores == expected and again.from_cache
            assert [await reader.get(MODEL, e) for e in asked[:10]] == expected[:10]
            assert _commands(admin) == {}
        finally:
            await reader.aclose()

    asyncio.run(read_async())
    admin.close()


def test_a_lookup_that_read_the_pointers_is_not_from_the_cache(store: ScoreStore, redis_url: str) -> None:
    """Every id cached, but the pointer cache too old to use: the reader reads the pointers from Redis first, so the
    answer is not ``from_cache`` (the API's circuit breaker must hear that Redis answered, else an outage followed by
    cached traffic would leave it open), and the same lookup within the pointer cache's bound is."""
    ids = ten_digit_ids(50, seed=4)
    load_run(store, "r1", ids, scores_for(50, 5))
    reader = _reader(redis_url, ReadCache(1_000), refresh_s=1.0, max_stale_s=1.5)
    first = reader.get_many_routed(MODEL, ids)
    assert not first.from_cache
    assert reader.get_many_routed(MODEL, ids).from_cache  # the pointers were just read: nothing sent
    time.sleep(1.6)  # past max_stale_s: the next lookup must read the pointers
    again = reader.get_many_routed(MODEL, ids)
    assert again.scores == first.scores and not again.from_cache
    time.sleep(1.6)
    one = reader.get_routed(MODEL, ids[0])
    assert one.scores == first.scores[:1] and not one.from_cache
    reader.close()


def test_a_publish_moves_cached_lookups_to_the_new_run(store: ScoreStore, redis_url: str) -> None:
    """Ids cached from r1 are read from r2 once the pointer names it (after the pointer cache's refresh), and from
    r1's cache entries again after a rollback: answers always carry the run the pointer named."""
    ids = ten_digit_ids(50, seed=5)
    load_run(store, "r1", ids, scores_for(50, 1))
    load_run(store, "r2", ids, scores_for(50, 2), publish=False)
    reader = _reader(redis_url, ReadCache(1_000), refresh_s=0.0, max_stale_s=0.0)  # every lookup reads the pointer
    first = reader.get_many(MODEL, ids)
    assert {s.run_id for s in first if s} == {"r1"}
    store.publish(MODEL, "r2")
    second = reader.get_many(MODEL, ids)
    assert {s.run_id for s in second if s} == {"r2"}
    assert [s.score for s in second if s] == scores_for(50, 2).tolist()
    assert reader.get(MODEL, ids[0]) == second[0]
    store.rollback(MODEL)
    assert reader.get_many(MODEL, ids) == first
    assert reader.cache is not None and len(reader.cache) == 100


def test_canary_and_shadow_reads_go_through_the_cache(store: ScoreStore, redis_url: str) -> None:
    """A 30 % canary and a shadow read with a cache give the uncached reader's results (variants, scores, shadow
    scores); asked again, they send nothing; the challenger's entries are keyed by its own run."""
    ids = ten_digit_ids(300, seed=6)
    load_run(store, "r1", ids, scores_for(300, 1))
    store.create_run(MODEL, "c1", "v2", DAY, len(ids))
    store.writer(MODEL, "c1").write_batch(ids, scores_for(300, 2))
    store.finalize_run(MODEL, "c1")
    store.publish_challenger(MODEL, "v2", "c1")
    admin = redis.Redis.from_url(redis_url)
    for route in (Route("v2", 30.0), Route("v2", 0.0, shadow=True)):
        plain, cached = _reader(redis_url, None), _reader(redis_url, ReadCache(10_000))
        for reader in (plain, cached):
            reader.set_route(MODEL, route)
        expected = plain.get_many_routed(MODEL, ids)
        singles = [plain.get_routed(MODEL, e) for e in ids[:20]]
        assert cached.get_many_routed(MODEL, ids) == expected
        assert [(r.variants, r.scores, r.shadow) for r in (cached.get_routed(MODEL, e) for e in ids[:20])] == [
            (r.variants, r.scores, r.shadow) for r in singles
        ]
        admin.config_resetstat()
        again = cached.get_many_routed(MODEL, ids)
        assert (again.variants, again.scores, again.shadow) == (expected.variants, expected.scores, expected.shadow)
        assert again.from_cache and _commands(admin) == {}
        assert {s.run_id for s in again.scores if s} == ({"r1"} if route.shadow else {"r1", "c1"})
    admin.close()


def test_a_reader_thread_with_a_cache_sees_one_live_run_per_lookup(store: ScoreStore, redis_url: str) -> None:
    """The reader thread of ``test_readers`` through a cache: through publishes and rollbacks, each ``get_many``
    has hits from exactly one run, with that run's score for every id."""
    ids = ten_digit_ids(500, seed=7)
    expected = {f"r{k}": dict(zip(ids, scores_for(500, k).tolist(), strict=True)) for k in range(1, 4)}
    for k in range(1, 4):
        load_run(store, f"r{k}", ids, scores_for(500, k), publish=k == 1)
    stop, seen, problems = threading.Event(), set(), []
    reader = ScoreReader.from_url(redis_url, refresh_s=0.05, cache=ReadCache(2_000))

    def read() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            asked = [ids[i] for i in rng.integers(0, 60, 20)]  # a small hot set: mostly cached
            got = reader.get_many(MODEL, asked)
            runs = {g.run_id if g else None for g in got}
            if len(runs) != 1 or None in runs:
                problems.append(f"mixed or missing: {runs}")
                continue
            run = str(runs.pop())
            seen.add(run)
            problems.extend(f"{run}:{e}" for e, g in zip(asked, got, strict=True) if g and g.score != expected[run][e])

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for step in (lambda: store.publish(MODEL, "r2"), lambda: store.rollback(MODEL),
                     lambda: store.publish(MODEL, "r3"), lambda: store.rollback(MODEL),
                     lambda: store.publish(MODEL, "r2", force=True)):  # fmt: skip
            step()
            time.sleep(0.3)
    finally:
        stop.set()
        thread.join(10)
    assert problems == []
    assert seen == {"r1", "r2", "r3"}
    assert reader.cache is not None and reader.cache.hits > reader.cache.misses
