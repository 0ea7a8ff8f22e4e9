"""The HTTP surface (in-process ASGI, lifespan run) against a real Redis: body limits, API and admin keys, shedding."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import redis

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
    async with serve(make_settings(max_in_flight=1, redis_timeout_ms=100)) as (_, client):
        await client.get(f"/v1/scores/{MODEL}/a")
        redis.Redis.from_url(redis_url).execute_command("CLIENT", "PAUSE", "400", "ALL")
        responses = await asyncio.gather(*(client.get(f"/v1/scores/{MODEL}/a") for _ in range(5)))
        metrics = (await client.get("/metrics")).text
    statuses = sorted(r.status_code for r in responses)
    shed = [r for r in responses if r.status_code == 503]
    assert statuses[0] == 200 and len(shed) >= 1
    assert all(r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded" for r in shed)
    assert f"prescore_shed_total {float(len(shed))}" in metrics
