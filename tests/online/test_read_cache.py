"""The online reader's read cache through the API (in-process ASGI, lifespan run) against a real Redis: cached
answers equal uncached ones, its bounds and metrics, the off switch, and publishes and rollbacks under concurrent
lookups (no answer from a run that was not live during its lookup)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from online.settings import OnlineSettings
from tests.online.conftest import FEATS, HOUR, MODEL, SCORES, look_up_until, now_utc, post, serve
from warehouse.store import ScoreStore

pytestmark = pytest.mark.asyncio
BATCH = f"/v1/scores/{MODEL}/batch"


def metric(text: str, name: str) -> float | None:
    """The value of an unlabelled series of a /metrics scrape (None: absent)."""
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def lookups(admin: redis.Redis) -> int:
    """HGET + HMGET calls since the last ``CONFIG RESETSTAT``."""
    stats = admin.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("hget", "hmget"))


async def ask(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """One round of every kind of lookup: GETs (hits and a miss), a POST with features (fallback), a batch."""
    answers = [(await client.get(f"/v1/scores/{MODEL}/{e}")).json() for e in ("a", "b", "c", "nobody")]
    answers.append((await post(client, "nobody", FEATS)).json())
    answers.extend((await client.post(BATCH, json={"entity_ids": ["c", "a", "ghost", "b"]})).json()["results"])
    return [{k: v for k, v in a.items() if k != "request_id"} for a in answers]


async def test_cached_answers_equal_uncached_ones_and_skip_redis(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], redis_url: str
) -> None:
    """With the cache on, a second round of GETs, POSTs and a batch gives exactly the answers of the first round and
    of a reader with the cache off, and sends no HGET/HMGET; /metrics counts hits, misses and entries, and leaves
    the cached lookups out of ``prescore_redis_seconds``. Off (``PRESCORE_READ_CACHE=false``): every lookup goes to
    Redis and no read-cache series is exported."""
    publish(SCORES, now_utc() - HOUR)
    admin = redis.Redis.from_url(redis_url)
    frozen = time.time()
    async with serve(make_settings(read_cache=False), clock=lambda: frozen) as (_, client):
        uncached = await ask(client)
        admin.config_resetstat()
        assert await ask(client) == uncached
        assert lookups(admin) == 6  # 5 single lookups + 1 batch, every round
        off = (await client.get("/metrics")).text
    assert "prescore_read_cache" not in off
    async with serve(make_settings(), clock=lambda: frozen) as (app, client):
        state = app.state.service.store._state  # pointers kept fresh: no refresh piggy-backs on a cached lookup
        state.refresh_s, state.max_stale_s = 60.0, 120.0
        assert await ask(client) == uncached
        admin.config_resetstat()
        assert await ask(client) == uncached
        assert lookups(admin) == 0
        text = (await client.get("/metrics")).text
        cache = app.state.service.read_cache
    assert cache is not None and len(cache) == 5  # a, b, c, nobody, ghost (two of them cached misses)
    assert metric(text, "prescore_read_cache_entries") == 5.0
    assert metric(text, "prescore_read_cache_misses_total") == 5.0  # the first round's first sight of each id
    assert metric(text, "prescore_read_cache_hits_total") == 2 * 9 - 5  # 9 ids a round
    assert metric(text, "prescore_read_cache_evictions_total") == 0.0
    assert metric(text, "prescore_read_cache_bytes") == cache.bytes > 0
    redis_calls = re.search(r'^prescore_redis_seconds_count\{op="get"\} (\S+)$', text, re.M)
    assert redis_calls is not None and float(redis_calls.group(1)) == 4.0  # the first round's 4 GETs that missed
    admin.close()


async def test_the_bounds_hold_and_evictions_are_counted(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str]
) -> None:
    """``read_cache_max_entries`` caps the ids held (the least recently used evicted, counted); with a large entry
    bound, ``read_cache_max_mb`` caps the accounted bytes instead. Evicted ids are read from Redis again, right."""
    ids = [f"id-{i:05d}" for i in range(10_000)]
    scores = dict(zip(ids, np.linspace(0.0, 1.0, len(ids), dtype=np.float32).tolist(), strict=True))
    publish(scores, now_utc() - HOUR)
    async with serve(make_settings(read_cache_max_entries=20)) as (app, client):
        for start in range(0, 200, 50):
            await client.post(BATCH, json={"entity_ids": ids[start : start + 50]})
        first = (await client.get(f"/v1/scores/{MODEL}/{ids[0]}")).json()  # evicted long ago: read again
        text = (await client.get("/metrics")).text
    assert first["score"] == scores[ids[0]] and first["source"] == "precomputed"
    assert metric(text, "prescore_read_cache_entries") == 20.0
    assert metric(text, "prescore_read_cache_evictions_total") == 200 + 1 - 20
    async with serve(make_settings(read_cache_max_entries=1_000_000, read_cache_max_mb=1.0)) as (app, client):
        for start in range(0, len(ids), 500):
            await client.post(BATCH, json={"entity_ids": ids[start : start + 500]})
        text = (await client.get("/metrics")).text
        cache = app.state.service.read_cache
    assert cache is not None and cache.bytes <= 1 << 20 and 0 < len(cache) < len(ids)
    assert metric(text, "prescore_read_cache_bytes") == cache.bytes
    assert metric(text, "prescore_read_cache_evictions_total") == len(ids) - len(cache)


async def test_lookups_under_publishes_and_rollbacks_answer_only_from_live_runs(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], redis_url: str
) -> None:
    """Concurrent single and batch lookups of a small hot set (so most are answered from the cache) while another
    thread publishes and rolls back three runs again and again.

    The rule checked for every precomputed answer: its ``run_id`` was live at some moment of that lookup's window
    [request sent, answer received], widened back by the pointer cache's ``max_stale_s`` (the documented bound on
    how long a reader may keep serving a run after the pointer moved; set to 0 here, with ``refresh_s`` 0, so every
    lookup reads the pointer itself and the window is the lookup's own). A pointer change happens somewhere inside
    its publish/rollback call, so a run counts as live from the start of the call that made it live to the end of
    the call that replaced it. Its score must be that run's score of the id. 0 answers may break the rule."""
    ids = [f"hot-{i:02d}" for i in range(30)]
    tables = {f"r{k}": dict(zip(ids, np.random.default_rng(k).random(len(ids), dtype=np.float32).tolist(),
                                strict=True)) for k in (1, 2, 3)}  # fmt: skip
    as_of = now_utc() - HOUR
    for run in ("r3", "r2", "r1"):  # r1 live; r2 and r3 loaded and published once, retained for rollback
        publish(tables[run], as_of, run_id=run)
    changes: list[tuple[float, float, str]] = [(-1.0, -1.0, "r1")]  # (call started, call returned, live after)
    stop = threading.Event()

    def flip() -> None:
        with ScoreStore.from_url(redis_url) as store:
            steps = [lambda: store.publish(MODEL, "r2", force=True), lambda: store.rollback(MODEL),
                     lambda: store.publish(MODEL, "r3", force=True), lambda: store.publish(MODEL, "r2", force=True),
                     lambda: store.rollback(MODEL), lambda: store.rollback(MODEL)]  # fmt: skip
            k = 0
            while not stop.is_set():
                t0 = time.monotonic()
                steps[k % len(steps)]()
                t1 = time.monotonic()
                live = store.current_run(MODEL)
                assert live is not None
                changes.append((t0, t1, live.run_id))
                k += 1
                time.sleep(0.01)

    answers: list[tuple[float, float, dict[str, Any]]] = []

    async with serve(make_settings(store_check_s=0.0)) as (app, client):
        state = app.state.service.store._state  # the pointer cache of the app's reader: no staleness allowed
        state.refresh_s = state.max_stale_s = 0.0
        thread = threading.Thread(target=flip)
        thread.start()
        try:
            deadline = time.monotonic() + 3.0
            await asyncio.gather(*(look_up_until(client, ids, seed, deadline, answers) for seed in range(8)))
        finally:
            stop.set()
            thread.join(10)
        cache = app.state.service.read_cache

    def live_during(run: str, start: float, end: float) -> bool:
        for k, (began, _, live) in enumerate(changes):
            replaced = changes[k + 1][1] if k + 1 < len(changes) else float("inf")
            if live == run and began <= end and replaced >= start:
                return True
        return False

    allowance = 0.0  # the pointer cache's max_stale_s in this test
    wrong = [(a["run_id"], a["entity_id"], round(t1 - t0, 4)) for t0, t1, a in answers
             if not live_during(a["run_id"], t0 - allowance, t1)]  # fmt: skip
    bad_scores = [a for _, _, a in answers if a["score"] != tables[a["run_id"]][a["entity_id"]]]
    assert all(a["source"] == "precomputed" for _, _, a in answers)
    assert wrong == [] and bad_scores == []
    assert len(changes) > 20 and {a["run_id"] for _, _, a in answers} == {"r1", "r2", "r3"}
    assert cache is not None and cache.hits > cache.misses > 0


async def test_misses_cached_while_buckets_were_lost_do_not_outlive_their_restore(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], redis_url: str
) -> None:
    """Half the buckets of the live run deleted (Redis losing data): ids of those buckets are cached as misses. The
    store watch judging the scores lost empties the cache, and so does its judging them back once the run is
    repaired under the same run id (as ``prescore restore`` does): the ids then answer their scores, not the misses
    cached meanwhile."""
    ids = [f"id{i:05d}" for i in range(20_000)]
    scores = dict(zip(ids, np.linspace(0.0, 1.0, len(ids), dtype=np.float32).tolist(), strict=True))
    run_id = publish(scores, now_utc() - HOUR)
    with redis.Redis.from_url(redis_url) as raw:
        doomed = list(raw.scan_iter(match=f"ps:s:{MODEL}:{run_id}:*"))[::2]
        raw.delete(*doomed)
    async with serve(make_settings(store_check_s=0.05, catalog_refresh_s=0.0)) as (app, client):
        service = app.state.service
        asked = ids[:200]

        async def sources() -> list[str]:
            return [a["source"] for a in (await client.post(BATCH, json={"entity_ids": asked})).json()["results"]]

        deadline = time.monotonic() + 10
        while MODEL not in service.watch.lost_since:
            assert time.monotonic() < deadline, "the loss was never seen"
            await asyncio.sleep(0.02)
        lost = await sources()  # after the watch's verdict: these misses stay cached until it changes
        assert "default" in lost and len(service.read_cache) == len(asked)
        with ScoreStore.from_url(redis_url) as store:
            store.reopen_run(MODEL, run_id)
            store.writer(MODEL, run_id).write_batch(ids, np.array(list(scores.values()), dtype=np.float32))
            store.finalize_run(MODEL, run_id)
        while MODEL in service.watch.lost_since:
            assert time.monotonic() < deadline + 10, "the restore was never seen"
            await asyncio.sleep(0.02)
        back = await sources()
    assert back == ["precomputed"] * len(asked)
