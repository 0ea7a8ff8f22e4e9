"""The HTTP surface (in-process ASGI, lifespan run) against a real Redis: body limits, API and admin keys, shedding."""

from __future__ import annotations

import asyncio
import gc
import hashlib
from pathlib import Path

import pytest
import redis

from online.app import GC_THRESHOLD
from online.settings import OnlineSettings
from tests.online.conftest import HOUR, MODEL, SCORES, now_utc, post, serve
from warehouse.errors import ConfigError

pytestmark = pytest.mark.asyncio


async def test_oversized_bodies_are_413_declared_or_streamed(make_settings):
    """A Content-Length above the limit is refused before reading; a chunked body once it grows past it."""

    async def chunks():
        yield b'{"entity_id": "a", "features": {'
        for _ in range(50):
            yield b'"pad": 1.0, ' * 10

    async with serve(make_settings(max_body_bytes=256)) as (_, client):
        declared = await post(client, "a", {f"k{i}": 1.0 for i in range(100)})
        streamed = await client.post(f"/v1/scores/{MODEL}", content=chunks())
        fine = await post(client, "a")
    assert declared.status_code == streamed.status_code == 413
    assert "256" in declared.json()["error"]["message"] and fine.status_code == 200


async def test_single_gets_skip_the_stack_and_errors_are_answered_by_it_once(make_settings, publish):
    """GET /v1/scores/{model}/{id} is answered before most of the middleware stack (``online.app._FastGet``); what
    that path cannot answer goes down the stack, which answers it as ever, and counts it once: an unknown model 404,
    a bad or empty id 422, a GET without an id 405, a HEAD 405 (the route is GET only); an id may hold a slash."""
    publish(SCORES, now_utc() - HOUR)
    async with serve(make_settings()) as (_, client):
        hit = await client.get(f"/v1/scores/{MODEL}/a")
        slash = await client.get(f"/v1/scores/{MODEL}/a/b")
        unknown = await client.get("/v1/scores/nope/a")
        bad = await client.get(f"/v1/scores/{MODEL}/a%0Ab")
        empty = await client.get(f"/v1/scores/{MODEL}/")
        no_id = await client.get(f"/v1/scores/{MODEL}")
        head = await client.head(f"/v1/scores/{MODEL}/a")
        metrics = (await client.get("/metrics")).text
    assert hit.status_code == 200 and hit.json()["source"] == "precomputed" and hit.headers["x-request-id"]
    assert slash.status_code == 200 and slash.json()["entity_id"] == "a/b" and slash.json()["source"] == "default"
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_input")
    assert (empty.status_code, empty.json()["error"]["code"]) == (422, "invalid_input")
    assert no_id.status_code == head.status_code == 405
    assert 'prescore_errors_total{code="not_found",status="404"} 1.0' in metrics
    assert 'prescore_errors_total{code="invalid_input",status="422"} 2.0' in metrics
    assert 'prescore_request_seconds_count{route="get_score",source="precomputed"} 1.0' in metrics


async def test_the_start_up_heap_is_frozen_out_of_the_collector_while_serving(make_settings, publish):
    """Started, the app has frozen what start-up left alive and raised the young threshold (two apps at once: the
    second stop restores the thresholds found before the first start and unfreezes); ``gc_freeze=false`` leaves the
    collector alone."""
    publish(SCORES, now_utc() - HOUR)
    before = gc.get_threshold()
    async with serve(make_settings()) as (_, client):
        assert gc.get_freeze_count() > 10_000 and gc.get_threshold() == GC_THRESHOLD
        async with serve(make_settings()) as (_, other):
            assert (await other.get(f"/v1/scores/{MODEL}/a")).json()["source"] == "precomputed"
        assert gc.get_freeze_count() > 10_000 and gc.get_threshold() == GC_THRESHOLD
        assert (await client.get(f"/v1/scores/{MODEL}/a")).json()["source"] == "precomputed"
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
    async with serve(make_settings(gc_freeze=False)) as (_, client):
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
        assert (await client.get(f"/v1/scores/{MODEL}/a")).status_code == 200


async def test_api_keys_and_admin_keys(make_settings, home: Path):
    """With keys configured: /v1 needs X-API-Key (401 missing or wrong); admin needs an admin key; probes are open."""
    sha = lambda key: hashlib.sha256(key.encode()).hexdigest()  # noqa: E731
    settings = make_settings(api_key_hashes=sha("reader-key"), admin_key_hashes=sha("admin-key").upper())
    async with serve(settings) as (_, client):
        missing = await client.get(f"/v1/scores/{MODEL}/a")
        wrong = await client.get(f"/v1/scores/{MODEL}/a", headers={"X-API-Key": "nope"})
        ok = await client.get(f"/v1/scores/{MODEL}/a", headers={"X-API-Key": "reader-key"})
        as_admin = await client.get("/v1/models", headers={"X-API-Key": "admin-key"})
        reload_user = await client.post("/v1/admin/reload", headers={"X-API-Key": "reader-key"})
        reload_admin = await client.post("/v1/admin/reload", headers={"X-API-Key": "admin-key"})
        probes = [(await client.get(p)).status_code for p in ("/healthz", "/readyz", "/metrics", "/openapi.json")]
    assert missing.status_code == wrong.status_code == reload_user.status_code == 401
    assert "missing" in missing.json()["error"]["message"] and "reader-key" not in wrong.text
    assert ok.status_code == as_admin.status_code == reload_admin.status_code == 200
    assert reload_admin.json()["status"] == "reloaded" and probes == [200, 200, 200, 200]


async def test_admin_routes_are_closed_without_admin_keys(make_settings):
    async with serve(make_settings()) as (_, client):
        r = await client.post("/v1/admin/reload", headers={"X-API-Key": "anything"})
    assert r.status_code == 401 and "no admin keys" in r.json()["error"]["message"]


async def test_key_settings_must_be_sha256_hex(home: Path):
    with pytest.raises(ConfigError, match="PRESCORE_API_KEY_HASHES='plain-secret': must be comma-separated sha256"):
        OnlineSettings(home=home, api_key_hashes="plain-secret")


async def test_requests_beyond_max_in_flight_are_shed_with_retry_after(make_settings, publish, redis_url: str):
    """With Redis paused, lookups hang until the timeout; a second concurrent request finds no room: 503."""
    publish(SCORES, now_utc() - HOUR)
    # the read cache off: it would answer the warmed id without waiting for the paused Redis
    async with serve(make_settings(max_in_flight=1, redis_timeout_ms=100, read_cache=False)) as (_, client):
        await client.get(f"/v1/scores/{MODEL}/a")
        redis.Redis.from_url(redis_url).execute_command("CLIENT", "PAUSE", "400", "ALL")
        responses = await asyncio.gather(*(client.get(f"/v1/scores/{MODEL}/a") for _ in range(5)))
        metrics = (await client.get("/metrics")).text
    statuses = sorted(r.status_code for r in responses)
    shed = [r for r in responses if r.status_code == 503]
    assert statuses[0] == 200 and len(shed) >= 1
    assert all(r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded" for r in shed)
    assert f"prescore_shed_total {float(len(shed))}" in metrics
