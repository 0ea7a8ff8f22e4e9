"""The scoring service over HTTP (in-process ASGI, lifespan run) against a real Redis and a real fallback model:
the ladder, batches, degradation on an unavailable Redis, metrics, /v1/models and the prediction log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis

from jobs.prediction_drain import drain_predictions
from online.fallback import load_fallback
from online.settings import OnlineSettings
from tests.online.conftest import FEATS, FEATURES, HOUR, MODEL, SCORES, fallback_score, now_utc, post, serve
from warehouse.prediction_stream import STREAM_KEY

pytestmark = pytest.mark.asyncio


async def test_fresh_hit_is_precomputed_with_every_field(make_settings: Callable[..., OnlineSettings], publish):
    """A score younger than max_age is served as is, with run, version, policy, decision and request id."""
    run_id = publish(SCORES, now_utc() - HOUR)
    async with serve(make_settings()) as (_, client):
        r = await client.get(f"/v1/scores/{MODEL}/a", headers={"X-Request-ID": "trace-42"})
        body = r.json()
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
    assert set(body) == {"model", "entity_id", "score", "source", "stale", "age_s", "as_of", "model_version",
                         "run_id", "variant", "policy_version", "fallback_used", "request_id", "decision"}  # fmt: skip
    assert body["variant"] == "champion"  # a model without a rollout
    assert body["source"] == "precomputed" and body["stale"] is False and body["fallback_used"] is False
    assert body["score"] == pytest.approx(0.8) and body["decision"] == "high_risk"
    assert body["run_id"] == run_id and body["model_version"] == "primary-v1"
    assert 3590 < body["age_s"] < 3700 and body["as_of"].endswith("Z")
    assert body["request_id"] == "trace-42" and body["policy_version"].startswith("p-")


@pytest.mark.parametrize(
    ("age", "features", "source", "stale"),
    [
        (timedelta(days=2), None, "precomputed", True),  # past max_age (36 h), within hard max (7 d)
        (timedelta(days=8), None, "default", False),  # past hard max
        (timedelta(days=2), FEATS, "fallback", False),  # too stale, features given → fallback model
        (timedelta(days=8), FEATS, "fallback", False),
    ],
)
async def test_stale_and_expired_scores_follow_the_ladder(make_settings, publish, home, age, features, source, stale):
    """Beyond max_age: fallback when features come, else the stale score flagged, else (expired) the default."""
    publish(SCORES, now_utc() - age)
    async with serve(make_settings()) as (_, client):
        body = (await post(client, "b", features)).json()
    assert (body["source"], body["stale"], body["fallback_used"]) == (source, stale, source == "fallback")
    expected = {"precomputed": 0.45, "default": 0.05, "fallback": fallback_score(home, FEATS)}[source]
    assert body["score"] == pytest.approx(expected, abs=1e-6)
    if source != "precomputed":
        assert body["run_id"] is None


async def test_miss_with_features_scores_with_the_fallback_model(make_settings, publish, home):
    """An unknown entity with features: the fallback model's score, exactly predict_dict's, with its version."""
    publish(SCORES, now_utc() - HOUR)
    async with serve(make_settings()) as (_, client):
        fb = (await post(client, "unknown", FEATS)).json()
        default = (await post(client, "unknown")).json()
        get = (await client.get(f"/v1/scores/{MODEL}/unknown")).json()
    model = load_fallback(home / "models", MODEL, FEATURES)
    assert fb["source"] == "fallback" and fb["score"] == model.predict_dict(FEATS)
    assert fb["model_version"] == model.version and fb["run_id"] is None and fb["age_s"] == 0.0
    assert default["source"] == get["source"] == "default" and default["score"] == 0.05
    assert default["model_version"] is None and default["as_of"] is None


async def test_batch_mixes_every_rung_in_one_round_trip(make_settings, publish, home, redis_url: str):
    """One batch against a stale run: stale hit, fallback for a stale hit and for a miss (one predict_many call),
    default for a miss; the lookup is one pipelined HMGET (one bucket) and no per-id command."""
    publish({f"s{i}": 0.5 for i in range(10)}, now_utc() - timedelta(days=2))
    ids = ["s1", "s2", "new1", "new2", "s3"]
    feats = {"s2": FEATS, "new1": {**FEATS, "f00": 400.0}}
    admin = redis.Redis.from_url(redis_url)
    async with serve(make_settings()) as (app, client):
        await client.get(f"/v1/scores/{MODEL}/s1")  # pointer cached
        calls: list[int] = []
        model = app.state.service.snapshot.models[MODEL].fallback
        original = model.predict_many

        def counting(matrix: Any) -> Any:
            calls.append(len(matrix))
            return original(matrix)

        model.predict_many = counting
        admin.config_resetstat()
        r = await client.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": ids, "features": feats})
        stats = admin.info("commandstats")
    body = r.json()
    assert r.status_code == 200 and [x["entity_id"] for x in body["results"]] == ids
    assert [x["source"] for x in body["results"]] == ["precomputed", "fallback", "fallback", "default", "precomputed"]
    assert [x["stale"] for x in body["results"]] == [True, False, False, False, True]
    assert calls == [2]
    assert body["results"][2]["score"] == pytest.approx(fallback_score(home, feats["new1"]), abs=1e-6)
    assert stats["cmdstat_hmget"]["calls"] == 1 and "cmdstat_hget" not in stats
    assert {x["request_id"] for x in body["results"]} == {body["request_id"]}


async def test_a_new_publish_is_visible_within_a_second(make_settings, publish):
    publish(SCORES, now_utc() - HOUR)
    async with serve(make_settings()) as (_, client):
        assert (await client.get(f"/v1/scores/{MODEL}/a")).json()["score"] == pytest.approx(0.8)
        new_run = publish({"a": 0.3}, now_utc())
        deadline, seen = time.monotonic() + 1.0, None
        while time.monotonic() < deadline and seen != new_run:
            seen = (await client.get(f"/v1/scores/{MODEL}/a")).json()["run_id"]
            await asyncio.sleep(0.05)
    assert seen == new_run


async def test_redis_killed_while_serving_degrades_then_recovers(make_settings, publish, redis_factory, home):
    """Kill Redis mid-traffic: every answer is 200 from fallback/default within the budget, /readyz says degraded;
    restart it on the same port, republish: precomputed answers come back without restarting the app."""
    server = redis_factory()
    publish(SCORES, now_utc() - HOUR, url=server.url)
    # the read cache off: it would answer the warmed id without Redis while the pointer stays fresh
    async with serve(make_settings(redis_url=server.url, read_cache=False)) as (_, client):
        assert (await client.get(f"/v1/scores/{MODEL}/a")).json()["source"] == "precomputed"
        server.kill()
        answers = []
        for i in range(12):
            t0 = time.perf_counter()
            r = await (post(client, "a", FEATS) if i % 2 else client.get(f"/v1/scores/{MODEL}/a"))
            answers.append((r.status_code, r.json()["source"], time.perf_counter() - t0))
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["breaker"] in ("open", "half_open")
        models = await client.get("/v1/models")
        assert models.status_code == 200

        restarted = redis_factory(port=server.port)
        publish(SCORES, now_utc() - HOUR, url=restarted.url)
        deadline, source = time.monotonic() + 5.0, None
        while time.monotonic() < deadline and source != "precomputed":
            await asyncio.sleep(0.05)
            source = (await client.get(f"/v1/scores/{MODEL}/a")).json()["source"]
        recovered = await client.get("/readyz")
    assert all(status == 200 for status, _, _ in answers)
    assert {s for _, s, _ in answers} == {"fallback", "default"}
    assert max(t for _, _, t in answers) < 0.25
    assert source == "precomputed" and recovered.json()["status"] == "ready"


async def test_metrics_and_models_expose_rungs_runs_and_breaker(make_settings, publish):
    run_id = publish(SCORES, now_utc() - HOUR)
    async with serve(make_settings()) as (_, client):
        await client.get(f"/v1/scores/{MODEL}/a")
        await client.get(f"/v1/scores/{MODEL}/missing")
        await post(client, "missing", FEATS)
        text = (await client.get("/metrics")).text
        models = (await client.get("/v1/models")).json()["models"]
    for rung, source, lookup in [("fresh", "precomputed", "hit"), ("default_miss", "default", "miss"),
                                 ("fallback_miss", "fallback", "miss")]:  # fmt: skip
        labels = f'lookup="{lookup}",model="churn",rung="{rung}",source="{source}",variant="champion"'
        assert f"prescore_answers_total{{{labels}}} 1.0" in text
    assert "prescore_breaker_state 0.0" in text and 'prescore_redis_seconds_count{op="get"}' in text
    assert 'prescore_model_run_age_seconds{model="churn"}' in text and "prescore_request_seconds_bucket" in text
    assert models[0]["run_id"] == run_id and models[0]["state"] == "fresh" and models[0]["fallback_version"]


async def test_prediction_log_reaches_the_stream_and_drains_exactly_once(make_settings, publish, redis_url, tmp_path):
    """Every answer is logged (batched XADDs); the drain moves each record to Parquet once."""
    publish(SCORES, now_utc() - HOUR)
    admin = redis.Redis.from_url(redis_url)
    async with serve(make_settings()) as (_, client):
        ids = [(await client.get(f"/v1/scores/{MODEL}/{e}")).json()["request_id"] for e in ["a", "b", "zz"] * 5]
        batch = (await client.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": ["a", "q"]})).json()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and admin.xlen(STREAM_KEY) == 0:
            await asyncio.sleep(0.02)
    entries = admin.xlen(STREAM_KEY)
    assert 1 <= entries < 17  # many records per entry
    report = drain_predictions(redis_url, tmp_path)
    again = drain_predictions(redis_url, tmp_path)
    rows = [r for p in report.files for r in pq.read_table(p).to_pylist()]
    assert sorted(r["request_id"] for r in rows) == sorted([*ids, batch["request_id"], batch["request_id"]])
    assert {r["source"] for r in rows} == {"precomputed", "default"} and again.entries == 0
    assert all(r["latency_us"] > 0 and r["model"] == MODEL for r in rows)
    assert np.isclose(rows[0]["score"], 0.8) or rows[0]["entity_id"] != "a"
