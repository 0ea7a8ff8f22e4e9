"""The API's watch on the score store (``online.store_watch``): real Redis emptied or damaged under a served app, a
real SQLite catalog holding the live pointer (or missing, or broken), and the eviction policy read at start-up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from online.settings import OnlineSettings
from tests.online.conftest import MODEL, now_utc, serve
from warehouse.catalog import Catalog
from warehouse.store import ScoreStore
from warehouse.store.keys import store_key
from warehouse.store.local_server import RedisProcess

pytestmark = pytest.mark.asyncio
SCORES = {f"e{i:03d}": round(0.001 * i, 3) for i in range(300)}
FAST = {"store_check_s": 0.05, "catalog_refresh_s": 0.1}


def record_live(home: Path, redis_url: str, run_id: str) -> None:
    """Record the publication of ``run_id`` in the home's catalog, stamped with the store's flip time (what
    ``jobs.publish`` does)."""
    with ScoreStore.from_url(redis_url) as store:
        info = store.get_run(MODEL, run_id)
    assert info is not None and info.published_at is not None
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    try:
        catalog.record_publication(model=MODEL, action="publish", run_id=run_id, previous_run_id=None,
                                   at=info.published_at)  # fmt: skip
    finally:
        catalog.close()


async def until(client: httpx.AsyncClient, check: Callable[[], Any], timeout_s: float = 10.0) -> float:
    """Seconds until ``await check()`` is truthy (fails the test after ``timeout_s``)."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout_s, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def lost_metric(text: str) -> str | None:
    series = f'prescore_model_scores_lost{{model="{MODEL}"}}'
    line = next((ln for ln in text.splitlines() if ln.startswith(series)), None)
    return line.split()[-1] if line else None


async def test_flushall_is_lost_not_no_run_then_back_when_republished(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], home: Path, redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The catalog says run R is live; Redis is emptied: /v1/models says ``lost`` naming R (not ``no_run``), the
    gauge is 1, /readyz is 200 ``degraded`` with the reason, /healthz still alive, lookups answer from the default;
    one log line when it starts. The same run published again: ready, gauge 0, one log line when it ends."""
    run_id = publish(SCORES, now_utc() - timedelta(hours=1))
    record_live(home, redis_url, run_id)
    caplog.set_level(logging.INFO, logger="prescore.online")
    async with serve(make_settings(**FAST)) as (_, client):

        async def serving() -> bool:
            return (await client.get("/readyz")).json().get("store", {}).get(MODEL) == "serving"

        await until(client, serving)
        assert lost_metric((await client.get("/metrics")).text) == "0.0"
        with redis.Redis.from_url(redis_url) as raw:
            raw.flushall()

        async def lost() -> bool:
            return (await client.get("/readyz")).json()["status"] == "degraded"

        await until(client, lost)
        ready = await client.get("/readyz")
        [entry] = (await client.get("/v1/models")).json()["models"]
        metric = lost_metric((await client.get("/metrics")).text)
        alive = await client.get("/healthz")
        answer = (await client.get(f"/v1/scores/{MODEL}/e007")).json()

        publish(SCORES, now_utc() - timedelta(hours=1), run_id=run_id)

        async def back() -> bool:
            return (await client.get("/readyz")).json()["status"] == "ready"

        await until(client, back)
        [after] = (await client.get("/v1/models")).json()["models"]
        metric_after = lost_metric((await client.get("/metrics")).text)
        hit = (await client.get(f"/v1/scores/{MODEL}/e007")).json()
    assert ready.status_code == 200 and alive.status_code == 200
    reason = ready.json()["reason"]
    assert reason.startswith("scores lost: the catalog says run") and run_id in reason
    assert "answering from fallback models and defaults" in reason and ready.json()["store"] == {MODEL: "lost"}
    assert (entry["state"], entry["lost_run_id"], entry["store"]) == ("lost", run_id, "lost")
    assert entry["lost_since"].endswith("Z") and "no published run" in entry["reason"]
    assert metric == "1.0" and metric_after == "0.0"
    assert answer["source"] == "default"
    assert (after["state"], after["run_id"], after["store"]) == ("fresh", run_id, "serving")
    assert hit["source"] == "precomputed" and hit["score"] == pytest.approx(0.007)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("are lost from Redis" in m for m in messages) == 1, messages
    assert sum("are in Redis again" in m for m in messages) == 1, messages


async def test_missing_buckets_are_lost_even_without_a_catalog(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], redis_url: str, home: Path
) -> None:
    """No catalog on this host (the SQLite file was never created, and is not created by the API): the watch still
    finds a pointer whose run lost buckets, from Redis alone; an empty Redis is ``no_run`` (not lost)."""
    many = {f"id{i:05d}": 0.5 for i in range(20_000)}
    run_id = publish(many, now_utc() - timedelta(hours=1))
    with redis.Redis.from_url(redis_url) as raw:
        doomed = list(raw.scan_iter(match=store_key(MODEL, "bucket", run_id, "*")))[::2]
        raw.delete(*doomed)
    async with serve(make_settings(**FAST)) as (_, client):

        async def judged() -> bool:
            return MODEL in (await client.get("/readyz")).json().get("store", {})

        await until(client, judged)
        ready = (await client.get("/readyz")).json()
        [entry] = (await client.get("/v1/models")).json()["models"]
        with redis.Redis.from_url(redis_url) as raw:
            raw.flushall()
        await asyncio.sleep(1.2)  # longer than the readers' pointer cache (0.9 s)
        [empty] = (await client.get("/v1/models")).json()["models"]
        ready_empty = (await client.get("/readyz")).json()
    assert ready["status"] == "degraded" and ready["catalog"] == "absent"
    assert entry["state"] == "lost" and entry["lost_run_id"] == run_id and "sampled buckets" in entry["reason"]
    assert (empty["state"], empty["store"]) == ("no_run", "unchecked") and ready_empty["status"] == "ready"
    assert not (home / "catalog.db").exists()


async def test_a_catalog_that_breaks_degrades_to_its_last_answer(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], home: Path, redis_url: str
) -> None:
    """The catalog read once, then unreadable (its file replaced by garbage): the API stays ready, says the catalog
    is unavailable, and still finds the loss against the live pointer it last read."""
    run_id = publish(SCORES, now_utc() - timedelta(hours=1))
    record_live(home, redis_url, run_id)
    async with serve(make_settings(**FAST)) as (_, client):

        async def read_once() -> bool:
            return (await client.get("/v1/models")).json()["catalog"] == "ok"

        await until(client, read_once)
        (home / "catalog.db").write_bytes(b"not a database" * 100)

        async def broken() -> bool:
            return (await client.get("/v1/models")).json()["catalog"] == "unavailable"

        await until(client, broken)
        still = await client.get("/readyz")
        with redis.Redis.from_url(redis_url) as raw:
            raw.flushall()

        async def lost() -> bool:
            return (await client.get("/v1/models")).json()["models"][0]["state"] == "lost"

        await until(client, lost)
        metrics = (await client.get("/metrics")).text
    assert still.status_code == 200 and still.json()["status"] == "ready" and still.json()["catalog"] == "unavailable"
    assert "prescore_catalog_available 0.0" in metrics and lost_metric(metrics) == "1.0"


async def test_a_catalog_server_that_never_answers_never_fails_the_api(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], redis_url: str
) -> None:
    """PRESCORE_CATALOG_URL names a PostgreSQL on a closed port: ready, answers precomputed, catalog unavailable;
    an emptied Redis is ``no_run``/``unchecked`` (it cannot tell lost from never published), never an error."""
    publish(SCORES, now_utc() - timedelta(hours=1))
    closed = "postgresql+psycopg://prescore@127.0.0.1:1/prescore"
    async with serve(make_settings(catalog_url=closed, **FAST)) as (_, client):
        await asyncio.sleep(0.5)
        ready = await client.get("/readyz")
        hit = (await client.get(f"/v1/scores/{MODEL}/e007")).json()
        with redis.Redis.from_url(redis_url) as raw:
            raw.flushall()
        await asyncio.sleep(1.2)  # longer than the readers' pointer cache (0.9 s)
        models = (await client.get("/v1/models")).json()
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["catalog"] == "unavailable"
    assert hit["source"] == "precomputed"
    assert models["catalog"] == "unavailable" and models["models"][0]["state"] == "no_run"
    assert models["models"][0]["store"] == "unchecked"


@pytest.mark.parametrize(("policy", "warned"), [("allkeys-lru", True), ("allkeys-random", True),
                                                ("volatile-lru", False), ("noeviction", False)])  # fmt: skip
async def test_an_eviction_policy_that_would_evict_scores_is_reported_at_start_up(
    redis_factory: Callable[..., RedisProcess], make_settings: Callable[..., OnlineSettings],
    publish: Callable[..., str], caplog: pytest.LogCaptureFixture, policy: str, warned: bool,
) -> None:  # fmt: skip
    """``allkeys-*`` would evict score buckets (keys without a TTL): logged once at start-up and /readyz degraded
    with the fix; lookups still answer. ``volatile-*`` and ``noeviction`` are fine."""
    server = redis_factory(extra_args=["--maxmemory", "256mb", "--maxmemory-policy", policy])
    publish(SCORES, now_utc() - timedelta(hours=1), url=server.url)
    caplog.set_level(logging.INFO, logger="prescore.online")
    async with serve(make_settings(redis_url=server.url, **FAST)) as (_, client):
        probes = [await client.get("/readyz") for _ in range(3)]
        hit = (await client.get(f"/v1/scores/{MODEL}/e007")).json()
    logged = [r for r in caplog.records if "would evict score buckets" in r.getMessage()]
    assert hit["source"] == "precomputed"
    assert all(p.status_code == 200 for p in probes)
    if warned:
        body = probes[-1].json()
        assert body["status"] == "degraded" and f"redis has {policy}" in body["reason"]
        assert "maxmemory-policy noeviction" in body["reason"] and len(logged) == 1
    else:
        assert probes[-1].json()["status"] == "ready" and logged == []
