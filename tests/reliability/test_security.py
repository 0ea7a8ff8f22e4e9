"""Security checks: no secret or feature value in logs or in the prediction log; Redis AUTH in the store URL.

Already covered elsewhere (referenced, not repeated): 401 for a missing or wrong ``X-API-Key`` and admin-only routes
(``tests/online/test_app.py::test_api_keys_and_admin_keys``); keys configured only as sha256 digests, plain keys
refused at start-up (``tests/online/test_app.py``, ``OnlineSettings``); keys compared with ``hmac.compare_digest``
against every configured digest (``online/admission.py::key_matches``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import redis

from online.settings import OnlineSettings
from tests.online.conftest import FEATURES, MODEL, now_utc, serve
from tests.reliability.async_reads import async_refusal, async_score
from warehouse.errors import ConfigError, StoreAuthError, StoreUnavailableError
from warehouse.prediction_stream import STREAM_KEY
from warehouse.store import ScoreReader, ScoreStore
from warehouse.store.local_server import RedisProcess

API_KEY = "reader-K3y-7f1c0e9d"
WRONG_KEY = "n0t-the-K3y-52ab"
# Distinctive values: any of them in a log line can only come from a request body.
FEATS = {name: round(101.25 + 7.0625 * i, 4) for i, name in enumerate(FEATURES)}
OUT_OF_RANGE = 5555.4375
PASSWORD, WRONG_PASSWORD = "C0rrect-Horse-91", "Wr0ng-Battery-73"


@pytest.mark.asyncio
async def test_logs_and_prediction_log_never_carry_features_or_keys(
    make_settings: Callable[..., OnlineSettings],
    publish: Callable[..., str],
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    observe: Callable[..., None],
) -> None:
    """With API keys on and every logger at INFO: lookups with features (fallback and precomputed), a batch, a
    wrong key, a missing key and an out-of-range feature (422). Neither the captured logs nor the Redis prediction
    stream contain a feature value or either key; the 422 names the field for the caller."""
    caplog.set_level(logging.INFO)
    publish({"a": 0.8}, now_utc() - timedelta(hours=1))
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    key = {"X-API-Key": API_KEY}
    batch = {"entity_ids": ["a", "new-2"], "features": {"new-2": FEATS}}
    out_of_range = {"entity_id": "new-3", "features": {**FEATS, FEATURES[2]: OUT_OF_RANGE}}
    async with serve(make_settings(api_key_hashes=digest)) as (_, client):
        statuses = [
            await client.post(f"/v1/scores/{MODEL}", json={"entity_id": "new-1", "features": FEATS}, headers=key),
            await client.post(f"/v1/scores/{MODEL}", json={"entity_id": "a", "features": FEATS}, headers=key),
            await client.post(f"/v1/scores/{MODEL}/batch", json=batch, headers=key),
            await client.get(f"/v1/scores/{MODEL}/a", headers={"X-API-Key": WRONG_KEY}),
            await client.get(f"/v1/scores/{MODEL}/a"),
        ]
        bad = await client.post(f"/v1/scores/{MODEL}", json=out_of_range, headers=key)
        sources = [statuses[0].json()["source"], statuses[1].json()["source"]]
    assert [r.status_code for r in statuses] == [200, 200, 200, 401, 401]
    assert sources == ["fallback", "precomputed"]
    assert bad.status_code == 422 and bad.json()["error"]["message"].startswith(f"features.{FEATURES[2]}")

    client = redis.Redis.from_url(redis_url)
    try:
        stream = b"".join(b"".join(v for v in fields.values()) for _, fields in client.xrange(STREAM_KEY))
    finally:
        client.close()
    assert stream.count(b"new-1") == 1  # the prediction log was written (and flushed at shutdown)
    logs = caplog.text + "".join(str(r.args) for r in caplog.records)
    secrets = [API_KEY, WRONG_KEY, digest, *(repr(v) for v in [*FEATS.values(), OUT_OF_RANGE])]
    leaked = [s for s in secrets if s in logs or s.encode() in stream]
    assert leaked == []
    observe("log_hygiene", requests=len(statuses) + 1, log_records=len(caplog.records),
            prediction_log_bytes=len(stream), secrets_checked=len(secrets), leaked=len(leaked))  # fmt: skip


def test_redis_auth_in_the_url_and_a_wrong_password_is_a_clear_error(
    redis_factory: Callable[..., RedisProcess], observe: Callable[..., None]
) -> None:
    """Redis started with ``requirepass`` (from an owner-only config file, never the command line):
    ``redis://:pw@host:port/0`` loads, publishes and
    reads (sync and asyncio readers); a wrong or missing password raises StoreAuthError — a configuration error
    saying to fix the URL, not to retry (still a StoreUnavailableError, so the online reader degrades on it) — with
    neither password in the message."""
    server = redis_factory(password=PASSWORD)
    conf = Path(server.workdir) / "auth.conf"
    assert conf.stat().st_mode & 0o077 == 0, "the password file is readable by others"
    assert all(PASSWORD not in arg for arg in Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0"))
    good = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    ids = [f"e{i}" for i in range(100)]
    with ScoreStore.from_url(good) as store:
        store.create_run(MODEL, "r1", "v1", now_utc() - timedelta(hours=1), len(ids))
        store.writer(MODEL, "r1").write_batch(ids, np.full(len(ids), 0.25, np.float32))
        store.finalize_run(MODEL, "r1")
        store.publish(MODEL, "r1")
    reader = ScoreReader.from_url(good)
    try:
        assert [h.run_id if h else None for h in reader.get_many(MODEL, ids)] == ["r1"] * len(ids)
    finally:
        reader.close()

    assert async_score(good, MODEL, "e1") == 0.25

    messages = []
    for url in (f"redis://:{WRONG_PASSWORD}@127.0.0.1:{server.port}/0", f"redis://127.0.0.1:{server.port}/0"):
        reader = ScoreReader.from_url(url)
        try:
            with pytest.raises(StoreAuthError) as err:
                reader.get_many(MODEL, ids[:3])
        finally:
            reader.close()
        with ScoreStore.from_url(url) as store, pytest.raises(StoreAuthError) as store_err:
            store.current_run(MODEL)

        async_error = async_refusal(url, MODEL, "e1", StoreAuthError)
        for exc in (err.value, store_err.value, async_error):
            message = str(exc)
            assert isinstance(exc, StoreUnavailableError) and isinstance(exc, ConfigError)
            assert PASSWORD not in message and WRONG_PASSWORD not in message
            assert message.startswith("Redis refused the credentials while"), message
            assert "fix the user and password in PRESCORE_REDIS_URL" in message and "retry when" not in message
        messages.append(str(err.value))
    observe("redis_auth", auth_url_works=True, wrong_password_error=messages[0], no_password_error=messages[1],
            password_in_messages=False)  # fmt: skip


@pytest.mark.asyncio
async def test_api_with_a_refused_password_says_why_in_readyz_and_keeps_answering(
    redis_factory: Callable[..., RedisProcess],
    make_settings: Callable[..., OnlineSettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong password in PRESCORE_REDIS_URL: /readyz is 503 saying Redis refused the credentials (not "has not
    answered yet"), the reason is logged once however often it is probed, lookups still answer from the ladder, and
    no password appears anywhere."""
    server = redis_factory(password=PASSWORD)
    settings = make_settings(redis_url=f"redis://:{WRONG_PASSWORD}@127.0.0.1:{server.port}/0")
    caplog.set_level(logging.INFO)
    async with serve(settings) as (_, client):
        probes = [await client.get("/readyz") for _ in range(3)]
        lookup = await client.get(f"/v1/scores/{MODEL}/someone")
    for probe in probes:
        assert probe.status_code == 503, probe.text
        body = probe.json()
        assert body["reason"].startswith("Redis refused the credentials"), body
        assert body["redis"] == "refused"
    assert lookup.status_code == 200 and lookup.json()["source"] in ("fallback", "default"), lookup.text
    refused_logs = [r for r in caplog.records if "Redis refused the credentials" in r.getMessage()]
    assert len(refused_logs) == 1, [r.getMessage() for r in caplog.records]
    everything = caplog.text + "".join(p.text for p in probes) + lookup.text
    assert PASSWORD not in everything and WRONG_PASSWORD not in everything
