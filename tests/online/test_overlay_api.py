"""Overlays and invalidations through the API (in-process ASGI, lifespan run) against a real Redis: overlaid
entities answered ``precomputed`` with their own ``as_of``, invalidated ones skipped down the ladder with a
``reason``, ``POST /v1/admin/invalidate/{model}`` and its refusals, ``/v1/models`` and ``/metrics``, and an API
restart keeping every invalidation."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from online.settings import OnlineSettings
from tests.online.conftest import FEATS, HOUR, MODEL, fallback_score, now_utc, post, serve
from warehouse.store import ScoreStore

pytestmark = pytest.mark.asyncio
ADMIN = {"X-API-Key": "admin-key"}
ADMIN_HASH = hashlib.sha256(b"admin-key").hexdigest()
BASE = {f"id-{i}": 0.1 + i / 1000 for i in range(200)}


def _settings(make_settings: Callable[..., OnlineSettings], **kw: object) -> OnlineSettings:
    return make_settings(admin_key_hashes=ADMIN_HASH, **kw)


async def _until_layer(client, generation: int) -> None:  # type: ignore[no-untyped-def]
    """Wait for this replica's next pointer read (within its ``refresh_s``) to see the layer's generation."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        layer = (await client.get("/v1/models")).json()["models"][0].get("layer")
        if layer and layer["generation"] >= generation:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"generation {generation} not served within 5 s")


async def test_overlaid_and_invalidated_entities_through_the_api(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], redis_url: str, home: Path
) -> None:
    """A delta answers ``precomputed`` with its own as_of; an invalidation answers the default (GET) or the fallback
    (POST with features) with ``reason``, counts unknown ids, and is in /v1/models and /metrics."""
    as_of = now_utc() - 2 * HOUR
    run = publish(BASE, as_of)
    fresher = now_utc() - HOUR / 4
    with ScoreStore.from_url(redis_url) as store:
        store.overlays.publish_delta(MODEL, run, "delta-1", ["id-1", "new-1"], [0.91, 0.92], [fresher.timestamp()] * 2)
    async with serve(_settings(make_settings)) as (_, client):
        await _until_layer(client, 1)
        changed = (await client.get(f"/v1/scores/{MODEL}/id-1")).json()
        new = (await client.get(f"/v1/scores/{MODEL}/new-1")).json()
        kept = (await client.get(f"/v1/scores/{MODEL}/id-2")).json()
        assert (changed["source"], changed["score"], changed["run_id"]) == ("precomputed", 0.9100000262260437, run)
        assert changed["as_of"].startswith(fresher.strftime("%Y-%m-%dT%H:%M")) and "reason" not in changed
        assert (new["source"], new["score"]) == ("precomputed", 0.9200000166893005)
        assert kept["source"] == "precomputed" and kept["as_of"].startswith(as_of.strftime("%Y-%m-%dT%H:%M"))

        r = await client.post(f"/v1/admin/invalidate/{MODEL}", headers=ADMIN,
                              json={"entity_ids": ["id-3", "id-4", "nobody"], "reason": "account closed"})  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["invalidated"], body["unknown"], body["run_id"]) == (2, 1, run)
        await _until_layer(client, body["generation"])
        plain = (await client.get(f"/v1/scores/{MODEL}/id-3")).json()
        assert (plain["source"], plain["reason"]) == ("default", "invalidated: account closed")
        scored = (await post(client, "id-4", FEATS)).json()
        assert (scored["source"], scored["reason"]) == ("fallback", "invalidated: account closed")
        assert abs(scored["score"] - fallback_score(home, FEATS)) < 1e-6
        batch = (await client.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": ["id-3", "id-5"]})).json()
        assert [a["source"] for a in batch["results"]] == ["default", "precomputed"]

        model = (await client.get("/v1/models")).json()["models"][0]
        assert model["run_id"] == run
        assert {k: model["layer"][k] for k in ("overlays", "rescored", "invalidated", "entities")} == {
            "overlays": 1, "rescored": 2, "invalidated": 2, "entities": 4}  # fmt: skip
        assert model["layer"]["newest_as_of"].startswith(fresher.strftime("%Y-%m-%dT%H:%M"))
        metrics = (await client.get("/metrics")).text
        overlay_hits = [line for line in metrics.splitlines() if 'lookup="overlay"' in line and "answers" in line]
        invalid = [line for line in metrics.splitlines() if 'lookup="invalidated"' in line and "answers" in line]
        assert overlay_hits and sum(float(line.rsplit(" ", 1)[1]) for line in overlay_hits) >= 2
        assert invalid and sum(float(line.rsplit(" ", 1)[1]) for line in invalid) >= 3

    async with serve(_settings(make_settings)) as (_, client):  # a restarted API: the invalidation still holds
        again = (await client.get(f"/v1/scores/{MODEL}/id-3")).json()
        assert (again["source"], again["reason"]) == ("default", "invalidated: account closed")


async def test_invalidate_refusals(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], redis_url: str
) -> None:
    """401 without an admin key, 404 for an unknown model, 422 for a bad id or reason, 413 beyond
    PRESCORE_INVALIDATE_MAX_IDS, 409 with nothing live; none of them marks anything."""
    async with serve(_settings(make_settings, invalidate_max_ids=3)) as (_, client):
        url = f"/v1/admin/invalidate/{MODEL}"
        nothing_live = await client.post(url, headers=ADMIN, json={"entity_ids": ["id-1"]})
        assert nothing_live.status_code == 409 and "no live run" in nothing_live.text
        publish(BASE, now_utc() - HOUR)
        user = await client.post(url, json={"entity_ids": ["id-1"]})
        unknown = await client.post("/v1/admin/invalidate/nope", headers=ADMIN, json={"entity_ids": ["id-1"]})
        bad_id = await client.post(url, headers=ADMIN, json={"entity_ids": ["id-1", "bad id\n"]})
        empty = await client.post(url, headers=ADMIN, json={"entity_ids": []})
        long_reason = await client.post(url, headers=ADMIN, json={"entity_ids": ["id-1"], "reason": "x" * 201})
        too_many = await client.post(url, headers=ADMIN, json={"entity_ids": ["id-1", "id-2", "id-3", "id-4"]})
    assert user.status_code == 401 and unknown.status_code == 404
    assert bad_id.status_code == 422 and "entity_ids[1]" in bad_id.text
    assert empty.status_code == 422 and long_reason.status_code == 422
    assert too_many.status_code == 413 and "PRESCORE_INVALIDATE_MAX_IDS" in too_many.text
    client_ = redis.Redis.from_url(redis_url)
    assert client_.get(f"ps:{{{MODEL}}}:layer") is None  # nothing was marked
