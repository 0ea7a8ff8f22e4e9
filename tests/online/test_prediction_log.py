"""The prediction log's memory bound against real Redis servers: millions of answers stay within the budget in
``MEMORY USAGE``, what is trimmed before a drain is counted and reported, and the score runs keep their room."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
import redis.asyncio

from jobs.prediction_drain import drain_predictions
from online.prediction_log import PredictionLog, effective_budget, server_maxmemory
from online.settings import OnlineSettings
from tests.online.conftest import MODEL, now_utc, serve
from warehouse.errors import ConfigError
from warehouse.prediction_stream import MIN_BUDGET_BYTES, STREAM_KEY, Record, side_keys
from warehouse.store import ScoreStore
from warehouse.store.local_server import RedisProcess

MIB = 1 << 20
CHUNK = 100_000


def answers(n: int, start: int) -> list[Record]:
    """``n`` realistic answers (ten-digit ids, run and version names as prescore writes them)."""
    now = time.time()
    return [
        (f"{start + i:08x}-{i:06d}", MODEL, str(1_000_000_000 + start + i), "primary-20261130-1a2b3c4d",
         "20261130-020000-deadbeef", "precomputed", 0.123456789, 412, now)
        for i in range(n)
    ]  # fmt: skip


async def push(plog: PredictionLog, total: int) -> None:
    for start in range(0, total, CHUNK):
        plog.extend(answers(min(CHUNK, total - start), start))
        assert await plog.flush() > 0


def stream_records(client: redis.Redis) -> int:
    return sum(int(fields[b"n"]) for _, fields in client.xrange(STREAM_KEY))  # type: ignore[union-attr]


def load_scores(url: str, n: int, run_id: str) -> dict[str, float]:
    ids = [str(2_000_000_000 + i) for i in range(n)]
    scores = np.random.default_rng(n).random(n, dtype=np.float32)
    with ScoreStore.from_url(url) as store:
        store.create_run(MODEL, run_id, "primary-v1", now_utc() - timedelta(hours=1), n)
        store.writer(MODEL, run_id).write_batch(ids, scores)
        store.finalize_run(MODEL, run_id)
        store.publish(MODEL, run_id, force=True)
    return dict(zip(ids[:100], scores[:100].tolist(), strict=True))


@pytest.mark.slow
@pytest.mark.asyncio
async def test_five_million_answers_stay_within_the_budget_and_publishing_still_works(
    redis_factory: Callable[..., RedisProcess],
    make_settings: Callable[..., OnlineSettings],
) -> None:
    """A score store with maxmemory 64 MB (noeviction) shares its Redis with the log (default budget, 256 MB):
    the log takes at most 10 % of it. After 5M answers (~950 MB of records) the stream's MEMORY USAGE is within
    that budget, every answer is either still in the stream or counted as trimmed, a 300k-entity run then
    publishes, and known entities are served precomputed."""
    server = redis_factory(["--maxmemory", str(64 * MIB), "--maxmemory-policy", "noeviction"])
    admin = redis.Redis.from_url(server.url)
    client = redis.asyncio.Redis.from_url(server.url)
    settings = make_settings(redis_url=server.url)
    budget = effective_budget(settings.prediction_log_budget_bytes, await server_maxmemory(client), shared=True)
    assert budget == int(64 * MIB * 0.1)
    plog = PredictionLog(client, budget_bytes=budget)
    try:
        await push(plog, 5_000_000)
        used = admin.memory_usage(STREAM_KEY, samples=0)
        bytes_key, trimmed_key = side_keys()
        assert used is not None and used <= budget, (used, budget)
        assert int(admin.get(bytes_key)) <= budget  # type: ignore[arg-type]
        remaining = stream_records(admin)
        assert plog.written == 5_000_000 and remaining > 0
        assert plog.trimmed == int(admin.get(trimmed_key)) == 5_000_000 - remaining  # type: ignore[arg-type]

        known = load_scores(server.url, 300_000, "after-the-log")
    finally:
        await client.aclose()
    async with serve(settings) as (_, api):
        got = (await api.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": list(known)})).json()["results"]
    assert {r["source"] for r in got} == {"precomputed"}
    assert [r["score"] for r in got] == pytest.approx(list(known.values()), abs=1e-6)
    assert admin.memory_usage(STREAM_KEY, samples=0) <= budget  # type: ignore[operator]
    admin.close()


@pytest.mark.asyncio
async def test_api_trims_counts_and_the_drain_reports_the_loss(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], redis_url: str, tmp_path: Path
) -> None:
    """Through the API with a 1 MB budget: the stream stays within it, /metrics counts what was trimmed, and the
    drain reports exactly that many answers lost, then zero on the next drain; drained + lost = answered."""
    publish({"a": 0.8}, now_utc() - timedelta(hours=1))
    admin = redis.Redis.from_url(redis_url)
    ids = [str(3_000_000_000 + i) for i in range(500)]
    async with serve(make_settings(prediction_log_max_mb=1)) as (app, api):
        for _ in range(40):  # 20,000 answers, ~3.8 MB accounted
            assert (await api.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": ids})).status_code == 200
            await app.state.service.plog.flush()
        metrics = (await api.get("/metrics")).text
        trimmed = app.state.service.plog.trimmed
    assert admin.memory_usage(STREAM_KEY, samples=0) <= MIN_BUDGET_BYTES  # type: ignore[operator]
    assert trimmed > 0 and f"prescore_prediction_log_trimmed_total {float(trimmed)}" in metrics
    assert "prescore_prediction_log_budget_bytes 1.048576e+06" in metrics

    report = drain_predictions(redis_url, tmp_path)
    drained = sum(pq.read_metadata(p).num_rows for p in report.files)
    assert report.lost_to_trimming == trimmed and drained + trimmed == 20_000
    assert int(admin.get(side_keys()[0]) or 0) == 0 and admin.xlen(STREAM_KEY) == 0  # uncharged by the drain
    assert drain_predictions(redis_url, tmp_path).lost_to_trimming == 0
    admin.close()


@pytest.mark.asyncio
async def test_log_on_its_own_redis(
    make_settings: Callable[..., OnlineSettings],
    publish: Callable[..., str],
    redis_factory: Callable[..., RedisProcess],
    redis_url: str,
    tmp_path: Path,
) -> None:
    """PRESCORE_PREDICTION_LOG_URL: answers go to that Redis only, and the store's maxmemory does not cap the
    log's budget there; the drain reads it from that URL."""
    publish({"a": 0.8}, now_utc() - timedelta(hours=1))
    logs = redis_factory()
    async with serve(make_settings(prediction_log_url=logs.url)) as (app, api):
        for _ in range(3):
            assert (await api.get(f"/v1/scores/{MODEL}/a")).json()["source"] == "precomputed"
        await app.state.service.plog.flush()
        assert app.state.service.plog.budget_bytes == 256 * MIB
    store, own = redis.Redis.from_url(redis_url), redis.Redis.from_url(logs.url)
    assert store.exists(STREAM_KEY) == 0 and own.xlen(STREAM_KEY) >= 1
    assert drain_predictions(logs.url, tmp_path).records == 3
    store.close()
    own.close()


@pytest.mark.asyncio
async def test_counter_heals_when_the_stream_was_deleted_by_hand(redis_url: str) -> None:
    """The stream removed behind the writer's back (its byte counter left over): the next append that must trim
    finds nothing older and resets the counter to that entry's size, instead of trimming forever."""
    client = redis.asyncio.Redis.from_url(redis_url)
    admin = redis.Redis.from_url(redis_url)
    try:
        plog = PredictionLog(client, budget_bytes=MIN_BUDGET_BYTES)
        await push(plog, 20_000)
        admin.delete(STREAM_KEY)
        admin.set(side_keys()[0], 50 * MIB)
        plog.extend(answers(10, 0))
        await plog.flush()
        assert admin.xlen(STREAM_KEY) == 1
        assert 0 < int(admin.get(side_keys()[0])) < 10_000  # type: ignore[arg-type]
    finally:
        await client.aclose()
        admin.close()


@pytest.mark.asyncio
async def test_redis_down_keeps_records_buffered_and_bounded(redis_factory: Callable[..., RedisProcess]) -> None:
    """While the log's Redis is down, flushes fail, records stay buffered up to capacity (the rest dropped and
    counted), and they reach the stream within the budget once it is back."""
    server = redis_factory()
    client = redis.asyncio.Redis.from_url(server.url, socket_timeout=0.5)
    plog = PredictionLog(client, budget_bytes=MIN_BUDGET_BYTES, capacity=5_000)
    server.kill()
    plog.extend(answers(8_000, 0))
    assert await plog.flush() == 0 and plog.pending == 5_000 and plog.dropped == 3_000
    back = redis_factory(port=server.port)
    await asyncio.sleep(0.1)
    assert await plog.flush() == 5_000 and plog.pending == 0
    admin = redis.Redis.from_url(back.url)
    assert admin.memory_usage(STREAM_KEY, samples=0) <= MIN_BUDGET_BYTES  # type: ignore[operator]
    admin.close()
    await client.aclose()


def test_budget_policy() -> None:
    assert effective_budget(256 * MIB, None, shared=True) == 256 * MIB  # CONFIG refused: the setting
    assert effective_budget(256 * MIB, 0, shared=True) == 256 * MIB  # no maxmemory
    assert effective_budget(256 * MIB, 1024 * MIB, shared=True) == int(102.4 * MIB)
    assert effective_budget(256 * MIB, 1024 * MIB, shared=False) == 256 * MIB  # its own Redis
    assert effective_budget(256 * MIB, 4 * MIB, shared=True) == MIN_BUDGET_BYTES
    with pytest.raises(ValueError, match="budget_bytes must be"):
        PredictionLog(None, budget_bytes=1000)  # type: ignore[arg-type]


def test_the_old_entry_count_setting_is_refused_naming_its_replacement(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("PRESCORE_PREDICTION_LOG_MAXLEN", "1000000")
    with pytest.raises((ConfigError, ValueError), match="PRESCORE_PREDICTION_LOG_MAX_MB"):
        OnlineSettings(home=home)
