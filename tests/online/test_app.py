"""The online reader over HTTP (in-process ASGI, lifespan run) against a real Redis and a real fallback model."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import redis

from jobs.prediction_drain import drain_predictions
from online.fallback import load_fallback
from online.settings import OnlineSettings
from tests.online.conftest import FEATURES, MODEL, now_utc, serve
from warehouse.prediction_stream import STREAM_KEY
from warehouse.registry import ARTIFACT, Registry

pytestmark = pytest.mark.asyncio
HOUR = timedelta(hours=1)
FEATS = {f: float(i * 10 - 35) for i, f in enumerate(FEATURES)}
SCORES = {"a": 0.8, "b": 0.45, "c": 0.1}


def fallback_score(home: Path, features: dict[str, float]) -> float:
    return load_fallback(home / "models", MODEL, FEATURES).predict_dict(features)


async def post(client: httpx.AsyncClient, entity_id: str, features: Any = None, **kw: Any) -> httpx.Response:
    return await client.post(f"/v1/scores/{MODEL}", json={"entity_id": entity_id, "features": features}, **kw)


async def test_fresh_hit_is_precomputed_with_every_field(make_settings: Callable[..., OnlineSettings], publish):
    """A score younger than max_age is served as is, with run, version, policy, decision and request id."""
    run_id = publish(SCORES, now_utc() - HOUR)
    async with serve(make_settings()) as (_, client):
        r = await client.get(f"/v1/scores/{MODEL}/a", headers={"X-Request-ID": "trace-42"})
        body = r.json()
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
    assert set(body) == {"model", "entity_id", "score", "source", "stale", "age_s", "as_of", "model_version",
                         "run_id", "policy_version", "fallback_used", "request_id", "decision"}  # fmt: skip
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
        model = app.state.reader.snapshot.models[MODEL].fallback
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


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "field"),
    [
        ("GET", "/v1/scores/nope/a", None, 404, "unknown model"),
        ("POST", "/v1/scores/nope/batch", {"entity_ids": ["a"]}, 404, "unknown model"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": ""}, 422, "entity_id"),
        ("GET", f"/v1/scores/{MODEL}/", None, 422, "entity_id"),
        ("GET", f"/v1/scores/{MODEL}/{'x' * 129}", None, 422, "entity_id"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "é" * 65}, 422, "entity_id"),
        ("GET", f"/v1/scores/{MODEL}/a%0Ab", None, 422, "entity_id"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "a\u0085b"}, 422, "entity_id"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": 7}, 422, "entity_id"),
        ("POST", f"/v1/scores/{MODEL}", {"features": FEATS}, 422, "entity_id"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "a", "extra": 1}, 422, "extra"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "a", "features": [1, 2]}, 422, "features"),
        ("POST", f"/v1/scores/{MODEL}/batch", {"entity_ids": ["a", "b\x00"]}, 422, "entity_ids[1]"),
        ("POST", f"/v1/scores/{MODEL}/batch", {"entity_ids": []}, 422, "entity_ids"),
        ("POST", f"/v1/scores/{MODEL}/batch", {"entity_ids": ["a"], "features": {"zz": FEATS}}, 422, "features.zz"),
        ("POST", f"/v1/scores/{MODEL}/batch", {"entity_ids": ["a", "b", "c", "d"]}, 413, "at most 3"),
    ],
)
async def test_bad_requests_get_json_errors_naming_the_problem(make_settings, method, path, payload, status, field):
    async with serve(make_settings(batch_max=3)) as (_, client):
        r = await client.request(method, path, json=payload)
    assert r.status_code == status, r.text
    assert field in r.json()["error"]["message"] and r.json()["error"]["code"]


@pytest.mark.parametrize(
    ("features", "field", "problem"),
    [
        ({k: v for k, v in FEATS.items() if k != "f03"}, "features.f03", "missing"),
        ({**FEATS, "f09": 1.0}, "features.f09", "unknown feature"),
        ({**FEATS, "f01": True}, "features.f01", "boolean"),
        ({**FEATS, "f02": "3"}, "features.f02", "string"),
        ({**FEATS, "f04": None}, "features.f04", "null"),
        ({**FEATS, "f05": 1001.0}, "features.f05", "outside the contract range"),
        ({**FEATS, "f06": -1e300}, "features.f06", "outside the contract range"),
    ],
)
async def test_invalid_features_are_refused_naming_the_feature(make_settings, publish, features, field, problem):
    """Features are validated even when the precomputed score would do (the answer must not depend on the store)."""
    publish(SCORES, now_utc() - HOUR)
    async with serve(make_settings()) as (_, client):
        r = await post(client, "a", features)
        rb = await client.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": ["a"], "features": {"a": features}})
    assert r.status_code == rb.status_code == 422
    assert r.json()["error"]["message"].startswith(f"{field}:") and problem in r.json()["error"]["message"]
    assert rb.json()["error"]["message"].startswith(f"features.a.{field.split('.')[1]}:")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"entity_id": NaN}', b"1e999"])
async def test_malformed_json_is_422(make_settings, body: bytes):
    async with serve(make_settings()) as (_, client):
        r = await client.post(f"/v1/scores/{MODEL}", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("body")


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
    with pytest.raises(ValueError, match="sha256"):
        OnlineSettings(home=home, api_key_hashes="plain-secret")


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
    async with serve(make_settings(redis_url=server.url)) as (_, client):
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


async def test_corrupted_fallback_artifact_keeps_the_app_unready(make_settings, home: Path):
    """A tampered artifact fails its hash check: /readyz 503 saying so, scores 503; restore + reload → ready."""
    registry = Registry(home / "models")
    version = registry.production_version(MODEL, "fallback")
    artifact = registry.kind_dir(MODEL, "fallback") / str(version) / ARTIFACT
    good = artifact.read_bytes()
    artifact.write_bytes(good[:-16] + b"\x00" * 16)
    async with serve(make_settings(admin_key_hashes=hashlib.sha256(b"adm").hexdigest())) as (_, client):
        ready = await client.get("/readyz")
        score = await client.get(f"/v1/scores/{MODEL}/a")
        refused = await client.post("/v1/admin/reload", headers={"X-API-Key": "adm"})
        artifact.write_bytes(good)
        reloaded = await client.post("/v1/admin/reload", headers={"X-API-Key": "adm"})
        after = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    assert "corrupted" in ready.json()["reason"] and str(home) not in ready.text
    assert score.status_code == 503 and refused.status_code == 409
    assert reloaded.status_code == 200 and after.status_code == 200 and after.json()["status"] == "ready"


async def test_no_production_fallback_means_no_fallback_rung(make_settings, home: Path, publish):
    (Registry(home / "models").kind_dir(MODEL, "fallback") / "production.json").unlink()
    async with serve(make_settings()) as (_, client):
        ready = await client.get("/readyz")
        body = (await post(client, "unknown", FEATS)).json()
    assert ready.status_code == 200 and "no production fallback" in ready.json()["models"][MODEL]["fallback"]
    assert body["source"] == "default" and body["score"] == 0.05


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
        assert f'prescore_answers_total{{lookup="{lookup}",model="churn",rung="{rung}",source="{source}"}} 1.0' in text
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
