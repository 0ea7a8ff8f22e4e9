"""The sync and async readers against a real redis-server: round trips, one run per lookup while runs change, and
rollout routes (a canary split by variant, an override, a shadow read)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import redis

from tests.warehouse.store.sample_runs import DAY, MODEL, load_run, scores_for, ten_digit_ids
from warehouse.store import ScoreStore
from warehouse.store.lookup import Route
from warehouse.store.readers import AsyncScoreReader, ScoreReader


def test_round_trip_of_many_entities(store: ScoreStore, redis_url: str) -> None:
    """Mixed ids written in several batches read back exactly (sync and async readers); unknown ids are None."""
    ids = ten_digit_ids(3000) + [f"cust-{i}-é" for i in range(2000)] + ["a", "x" * 128]
    scores = scores_for(len(ids))
    store.create_run(MODEL, "r1", "v7", DAY, len(ids))
    writer = store.writer(MODEL, "r1")
    added = sum(writer.write_batch(ids[i : i + 1500], scores[i : i + 1500]) for i in range(0, len(ids), 1500))
    assert added == len(ids)
    assert store.finalize_run(MODEL, "r1").loaded_rows == len(ids)
    assert store.sample_check(MODEL, "r1", ids, scores) == []
    store.publish(MODEL, "r1")
    reader = ScoreReader.from_url(redis_url)
    asked = [*ids, "missing-1", "missing-2"]
    got = reader.get_many(MODEL, asked)
    assert len(got) == len(asked)
    assert [g.score if g else None for g in got] == [*scores.tolist(), None, None]
    assert {(g.run_id, g.model_version, g.as_of) for g in got if g} == {("r1", "v7", DAY)}
    single = reader.get(MODEL, ids[42])
    assert single is not None and single.score == float(scores[42]) and single.as_of.tzinfo is not None
    assert reader.get(MODEL, "nobody") is None
    assert reader.get_many("other", ["a"]) == [None]

    async def read_async() -> list[float | None]:
        areader = AsyncScoreReader.from_url(redis_url)
        try:
            hits = await areader.get_many(MODEL, asked)
            assert (await areader.get(MODEL, ids[0])) == got[0]
            return [h.score if h else None for h in hits]
        finally:
            await areader.aclose()

    assert asyncio.run(read_async()) == [*scores.tolist(), None, None]


def test_reader_sees_old_or_new_run_never_a_mix(store: ScoreStore, redis_url: str) -> None:
    """A reader thread running through publishes, rollbacks and cleanups gets, in each get_many, hits from exactly
    one run, with that run's value for every entity, and never a miss for an entity present in every run."""
    ids = ten_digit_ids(2000, seed=4)
    expected = {f"r{k}": dict(zip(ids, scores_for(2000, k).tolist(), strict=True)) for k in range(1, 4)}
    for k in range(1, 4):
        load_run(store, f"r{k}", ids, scores_for(2000, k), as_of=DAY, publish=k == 1)
    stop, seen, problems = threading.Event(), set(), []
    reader = ScoreReader.from_url(redis_url, refresh_s=0.1)

    def read() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            asked = [ids[i] for i in rng.integers(0, len(ids), 50)]
            got = reader.get_many(MODEL, asked)
            runs = {g.run_id if g else None for g in got}
            if len(runs) != 1 or None in runs:
                problems.append(f"mixed or missing: {runs}")
                continue
            run = str(runs.pop())
            seen.add(run)
            scores = [g.score if g else None for g in got]
            problems.extend(f"{run}:{e}" for e, v in zip(asked, scores, strict=True) if v != expected[run][e])

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for step in (lambda: store.publish(MODEL, "r2"), lambda: store.rollback(MODEL),
                     lambda: store.publish(MODEL, "r3"), lambda: store.cleanup(MODEL, keep_runs=1),
                     lambda: store.rollback(MODEL, to_run="r1"), lambda: store.publish(MODEL, "r2")):  # fmt: skip
            step()
            time.sleep(0.4)
    finally:
        stop.set()
        thread.join(10)
    assert problems == []
    assert seen == {"r1", "r2", "r3"}
    assert reader.current_run(MODEL).run_id == "r2"  # type: ignore[union-attr]


def _commands(admin: redis.Redis) -> dict[str, int]:
    """Calls per command since the last ``CONFIG RESETSTAT`` (the statistics commands left out)."""
    stats = admin.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()
            if not k.startswith(("cmdstat_config", "cmdstat_info"))}  # fmt: skip


def _challenger(store: ScoreStore, run_id: str, version: str, ids: list[str], scores: np.ndarray) -> None:
    store.create_run(MODEL, run_id, version, DAY, len(ids))
    store.writer(MODEL, run_id).write_batch(ids, scores)
    store.finalize_run(MODEL, run_id)
    store.publish_challenger(MODEL, version, run_id)


def test_a_canary_answers_each_id_from_its_variants_run_in_one_round_trip(store: ScoreStore, redis_url: str) -> None:
    """A 20 % canary: each id's score is its variant's (champion r1 or challenger c1), the share is near 20 %, a
    warm single lookup is one HGET of the chosen run, a batch one pipeline of HMGETs (no pointer reads while the
    cache is fresh); the async reader routes every id alike."""
    ids = ten_digit_ids(5000, seed=2)
    champion, challenger = scores_for(5000, 1), scores_for(5000, 2)
    load_run(store, "r1", ids, champion)
    _challenger(store, "c1", "v2", ids, challenger)
    want = {"champion": dict(zip(ids, champion.tolist(), strict=True)),
            "challenger": dict(zip(ids, challenger.tolist(), strict=True))}  # fmt: skip
    reader = ScoreReader.from_url(redis_url, refresh_s=30)
    reader.set_route(MODEL, Route("v2", 20.0))
    routed = reader.get_many_routed(MODEL, ids)
    assert 0.18 < routed.variants.count("challenger") / len(ids) < 0.22
    for entity_id, variant, hit in zip(ids, routed.variants, routed.scores, strict=True):
        assert hit is not None and hit.score == want[variant][entity_id]
        assert (hit.run_id, hit.model_version) == (("c1", "v2") if variant == "challenger" else ("r1", "v1"))
    admin = redis.Redis.from_url(redis_url)
    admin.config_resetstat()
    one = reader.get_routed(MODEL, ids[7])
    assert _commands(admin) == {"hget": 1}
    assert one.variants == [routed.variants[7]] and one.scores == [routed.scores[7]]
    admin.config_resetstat()
    reader.get_many_routed(MODEL, ids[:300])
    stats = _commands(admin)
    assert set(stats) == {"hmget"} and stats["hmget"] > 1
    view = reader.rollout(MODEL)
    assert view is not None and view.percent == 20.0 and view.challenger_run.run_id == "c1"  # type: ignore[union-attr]

    async def read_async() -> list[str]:
        areader = AsyncScoreReader.from_url(redis_url)
        areader.set_route(MODEL, Route("v2", 20.0))
        try:
            single = await areader.get_routed(MODEL, ids[7])
            assert single.scores == one.scores
            return (await areader.get_many_routed(MODEL, ids)).variants
        finally:
            await areader.aclose()

    assert asyncio.run(read_async()) == routed.variants
    assert reader.get(MODEL, ids[7]).run_id == "r1"  # type: ignore[union-attr]  # get: always the champion
    admin.close()


def test_an_override_reaches_a_reader_within_its_refresh_and_a_shadow_reads_both_runs(
    store: ScoreStore, redis_url: str
) -> None:
    """An override of 0 written to Redis stops a reader's canary within ``max_stale_s`` (every id champion); a
    missing challenger run makes the canary inactive; a shadow route serves the champion and returns the
    challenger's scores read in the same pipeline."""
    ids = ten_digit_ids(1000, seed=3)
    load_run(store, "r1", ids, scores_for(1000, 1))
    _challenger(store, "c1", "v2", ids, scores_for(1000, 2))
    reader = ScoreReader.from_url(redis_url, refresh_s=0.1)
    reader.set_route(MODEL, Route("v2", 50.0))
    assert "challenger" in reader.get_many_routed(MODEL, ids).variants
    store.set_rollout_override(MODEL, 0.0)
    deadline = time.monotonic() + 1.0
    while "challenger" in reader.get_many_routed(MODEL, ids).variants:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert reader.rollout(MODEL).override == 0.0  # type: ignore[union-attr]
    store.clear_rollout_override(MODEL)
    store.drop_challenger(MODEL, "v2")
    time.sleep(0.25)
    assert set(reader.get_many_routed(MODEL, ids).variants) == {"champion"}
    assert reader.rollout(MODEL).challenger_run is None  # type: ignore[union-attr]

    _challenger(store, "c2", "v2", ids, scores_for(1000, 3))
    shadow = ScoreReader.from_url(redis_url)
    shadow.set_route(MODEL, Route("v2", shadow=True))
    routed = shadow.get_many_routed(MODEL, ids)
    assert set(routed.variants) == {"champion"} and routed.shadow_run is not None
    assert [s.score for s in routed.scores] == scores_for(1000, 1).tolist()  # type: ignore[union-attr]
    assert [s.score for s in routed.shadow or []] == scores_for(1000, 3).tolist()  # type: ignore[union-attr]
    assert {s.run_id for s in routed.shadow or []} == {"c2"}  # type: ignore[union-attr]
