"""The sync and async readers against a real redis-server: round trips, and one run per lookup while runs change."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from tests.warehouse.store.sample_runs import DAY, MODEL, load_run, scores_for, ten_digit_ids
from warehouse.store import ScoreStore
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
