"""The overlay layer against a real redis-server: delta runs and invalidations over the live run, served by both
readers in one round trip, in generations (never half of one), bounded, dropped by the next pointer change, swept
when unreachable, and kept across a Redis restart."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis

from tests.warehouse.store.sample_runs import DAY, MODEL, load_run, scores_for, ten_digit_ids
from warehouse.store import (
    AsyncScoreReader,
    BaseNotLiveError,
    OverlayBoundError,
    Overlays,
    ReadCache,
    RedisProcess,
    ScoreReader,
    ScoreStore,
    connect,
    connect_async,
)
from warehouse.store.overlay import generation_key, layer_key, overlay_bucket_key

IDS = ten_digit_ids(2000)
BASE = scores_for(2000)
LATER = (DAY + timedelta(hours=6)).timestamp()
DURABLE = ["--appendonly", "yes", "--appendfsync", "always"]


def _reader(url: str, cache: bool = True) -> ScoreReader:
    """A reader whose pointer cache is always re-read (``refresh_s`` 0): each lookup sees the latest flip."""
    return ScoreReader(connect(url), refresh_s=0.0, max_stale_s=0.0, cache=ReadCache() if cache else None)


def _based(store: ScoreStore) -> None:
    load_run(store, "r1", IDS, BASE)


def test_a_delta_is_served_over_its_base_with_its_own_as_of_and_new_entities_too(
    store: ScoreStore, redis_url: str
) -> None:
    """Rescored ids answer the delta's score and as_of (``overlay``), new ids are hits, the rest the base's; single
    and batch lookups, sync and async readers, with the read cache on (an id cached before the delta is not
    answered from the cache after it)."""
    _based(store)
    reader = _reader(redis_url)
    before = reader.get(MODEL, IDS[0])
    assert before is not None and not before.overlay and before.score == pytest.approx(float(BASE[0]))
    changed, new = IDS[:50], [f"new-{i}" for i in range(20)]
    layer = store.overlays.publish_delta(MODEL, "r1", "d1", changed + new, [0.5] * 70, [LATER] * 70)
    assert (layer.rescored, layer.invalidated, layer.overlays, layer.deltas) == (70, 0, 1, ("d1",))
    assert layer.newest_as_of is not None and layer.newest_as_of.timestamp() == LATER
    got = reader.get_many(MODEL, [*changed, *new, *IDS[50:100]])
    for found in got[:70]:
        assert found is not None and found.overlay and found.score == 0.5 and found.as_of.timestamp() == LATER
        assert found.run_id == "r1" and found.invalid is None
    for found, expected in zip(got[70:], BASE[50:100], strict=True):
        assert found is not None and not found.overlay and found.score == pytest.approx(float(expected))
        assert found.as_of == DAY
    one = reader.get(MODEL, IDS[0])
    assert one is not None and one.overlay and one.score == 0.5
    fresh = ScoreReader(connect(redis_url), refresh_s=60.0, max_stale_s=120.0, cache=ReadCache())
    fresh.current_run(MODEL)  # pointers read: the gets below take the single-id path (two HGETs for a layered id)
    singles = [fresh.get(MODEL, e) for e in (IDS[1], "new-2", IDS[70], "nobody")]
    assert [(g.score, g.overlay) if g else None for g in singles] == [
        (0.5, True), (0.5, True), (pytest.approx(float(BASE[70])), False), None]  # fmt: skip
    routed = fresh.get_routed(MODEL, "new-3")
    assert routed.scores[0] is not None and routed.scores[0].overlay and not routed.from_cache
    assert reader.layer(MODEL) == layer

    async def read_async() -> list:
        areader = AsyncScoreReader(connect_async(redis_url), refresh_s=0.0, max_stale_s=0.0, cache=ReadCache())
        try:
            return [await areader.get(MODEL, "new-3"), *(await areader.get_many(MODEL, [IDS[1], IDS[60]]))]
        finally:
            await areader.aclose()

    a_new, a_changed, a_base = asyncio.run(read_async())
    assert a_new is not None and a_new.overlay and a_changed is not None and a_changed.score == 0.5
    assert a_base is not None and not a_base.overlay


def test_ten_deltas_are_one_generation_and_the_old_ones_expire(store: ScoreStore, redis_url: str) -> None:
    """Each delta writes a new merged generation: after ten, one layer holds them all (the newest score of each
    id), the replaced generations carry a TTL, and publishing a delta again changes nothing."""
    _based(store)
    client = redis.Redis.from_url(redis_url)
    layers = []
    for k in range(10):
        ids = IDS[k * 10 : k * 10 + 20]  # overlapping: the next delta rescores half of the previous one's
        layers.append(store.overlays.publish_delta(MODEL, "r1", f"d{k}", ids, [k / 10] * 20, [LATER + k] * 20))
    last = layers[-1]
    assert (last.overlays, last.rescored) == (10, 110)
    assert client.get(layer_key(MODEL)) == f"r1:{last.generation}".encode()
    for old in layers[:-1]:
        assert 0 < client.pttl(generation_key(MODEL, "r1", old.generation)) <= 60_000
    assert client.pttl(generation_key(MODEL, "r1", last.generation)) == -1
    reader = _reader(redis_url)
    got = reader.get_many(MODEL, IDS[:110])
    newest = [k / 10 for k in range(10) for _ in range(10)] + [0.9] * 10  # ids 10k..10k+9: delta k rescored them last
    assert [g.score for g in got if g is not None] == pytest.approx(newest)
    again = store.overlays.publish_delta(MODEL, "r1", "d9", IDS[:5], [0.99] * 5, [LATER] * 5)
    assert again.generation == last.generation


def test_invalidation_skips_the_score_counts_unknown_ids_and_a_rescore_clears_it(
    store: ScoreStore, redis_url: str
) -> None:
    """Invalidated ids come back ``invalid`` with the reason (score NaN); ids the live run does not hold are
    counted, not marked; a later delta rescoring an id clears its mark; the mark survives a new reader."""
    _based(store)
    store.overlays.publish_delta(MODEL, "r1", "d1", ["new-1"], [0.25], [LATER])
    done = store.overlays.invalidate(MODEL, [IDS[3], IDS[4], "new-1", "nobody", IDS[3]], "account closed")
    assert (done.invalidated, done.unknown) == (3, 1) and done.layer is not None and done.layer.invalidated == 3
    reader = _reader(redis_url)
    got = reader.get_many(MODEL, [IDS[3], "new-1", IDS[5], "nobody"])
    for found in got[:2]:
        assert found is not None and found.invalid == "account closed" and math.isnan(found.score)
    assert got[2] is not None and got[2].invalid is None and got[3] is None
    single = reader.get(MODEL, IDS[4])
    assert single is not None and single.invalid == "account closed"
    nothing = store.overlays.invalidate(MODEL, ["nobody"], "x")
    assert (nothing.invalidated, nothing.unknown, nothing.layer) == (0, 1, None)
    store.overlays.publish_delta(MODEL, "r1", "d2", [IDS[3]], [0.75], [LATER + 60])
    cleared = _reader(redis_url).get_many(MODEL, [IDS[3], IDS[4]])
    assert cleared[0] is not None and cleared[0].invalid is None and cleared[0].score == 0.75
    assert cleared[1] is not None and cleared[1].invalid == "account closed"


def test_the_next_run_and_a_rollback_drop_the_layer(store: ScoreStore, redis_url: str) -> None:
    """A publish replaces base and overlays with one pointer flip; rolling back to the base does not bring its
    overlays back; a delta over a base that is no longer live is refused (nothing written)."""
    _based(store)
    store.overlays.publish_delta(MODEL, "r1", "d1", IDS[:10], [0.5] * 10, [LATER] * 10)
    store.overlays.invalidate(MODEL, IDS[10:12], "fraud")
    load_run(store, "r2", IDS, scores_for(2000, seed=2), as_of=DAY + timedelta(days=1))
    reader = _reader(redis_url)
    got = reader.get_many(MODEL, IDS[:12])
    assert all(g is not None and not g.overlay and g.run_id == "r2" for g in got) and reader.layer(MODEL) is None
    with pytest.raises(BaseNotLiveError, match="not the live run"):
        store.overlays.publish_delta(MODEL, "r1", "d2", IDS[:1], [0.1], [LATER])
    store.rollback(MODEL)
    back = _reader(redis_url).get_many(MODEL, IDS[:12])
    assert all(g is not None and not g.overlay and g.run_id == "r1" for g in back)


def test_bounds_refuse_a_change_with_what_to_do_and_change_nothing(redis_url: str) -> None:
    """Beyond ``max_entities`` or ``max_overlays`` the change is refused naming the bound and its setting; the live
    generation stays as it was."""
    store = ScoreStore.from_url(redis_url)
    _based(store)
    small = Overlays(store.client, max_entities=30, max_overlays=2)
    first = small.publish_delta(MODEL, "r1", "d1", IDS[:20], [0.5] * 20, [LATER] * 20)
    with pytest.raises(OverlayBoundError, match=r"31 entities.*PRESCORE_OVERLAY_MAX_ENTITIES.*prescore score"):
        small.publish_delta(MODEL, "r1", "d2", IDS[20:31], [0.5] * 11, [LATER] * 11)
    small.publish_delta(MODEL, "r1", "d2", IDS[20:25], [0.5] * 5, [LATER] * 5)
    with pytest.raises(OverlayBoundError, match="PRESCORE_OVERLAY_MAX_DELTAS"):
        small.publish_delta(MODEL, "r1", "d3", IDS[25:26], [0.5], [LATER])
    live = small.live(MODEL)[1]
    assert live is not None and live.generation == first.generation + 1 and live.rescored == 25


def test_a_publish_between_write_and_flip_wins_and_the_orphan_is_removed(store: ScoreStore, redis_url: str) -> None:
    """The nightly pointer flip lands while a delta's generation is written: the delta is refused, its keys are
    removed and readers never saw them."""
    _based(store)
    load_run(store, "r2", IDS, scores_for(2000, seed=2), as_of=DAY + timedelta(days=1), publish=False)
    overlays = store.overlays
    write = overlays._write

    def racing_write(*args: object, **kwargs: object):  # the nightly publish lands right after the write
        layer = write(*args, **kwargs)  # type: ignore[arg-type]
        store.publish(MODEL, "r2")
        return layer

    overlays._write = racing_write  # type: ignore[method-assign]
    with pytest.raises(BaseNotLiveError, match="'r2'"):
        overlays.publish_delta(MODEL, "r1", "d1", IDS[:10], [0.5] * 10, [LATER] * 10)
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(match=overlay_bucket_key(MODEL, "*", "*", "*")))
    assert client.get(layer_key(MODEL)) is None
    assert all(g is not None and g.run_id == "r2" for g in _reader(redis_url).get_many(MODEL, IDS[:10]))


def test_a_writer_killed_before_its_flip_is_invisible_and_swept_later(redis_url: str) -> None:
    """A generation written but never flipped (the writer died) is not served; cleanup keeps it while it could be a
    live writer's and removes it after ``orphan_after_s``; the live generation stays."""
    now = [DAY.timestamp() + 3600]
    store = ScoreStore(connect(redis_url), clock=lambda: now[0])
    _based(store)
    live = store.overlays.publish_delta(MODEL, "r1", "d1", IDS[:5], [0.5] * 5, [LATER] * 5)
    crashed = store.overlays._write(MODEL, "r1", {IDS[9].encode(): b"!crash"}, live, "d2", None)
    assert crashed.generation > live.generation
    got = _reader(redis_url).get(MODEL, IDS[9])
    assert got is not None and got.invalid is None
    assert store.cleanup(MODEL, orphan_after_s=600).keys_deleted == 0
    now[0] += 601
    assert store.cleanup(MODEL, orphan_after_s=600).keys_deleted == 1 + crashed.n_buckets
    client = redis.Redis.from_url(redis_url)
    assert client.exists(generation_key(MODEL, "r1", live.generation))
    assert _reader(redis_url).get(MODEL, IDS[0]).score == 0.5  # type: ignore[union-attr]


def test_overlays_and_invalidations_survive_a_redis_restart(redis_factory: Callable[..., RedisProcess]) -> None:
    """Redis stopped and started again from its append-only file: the layer pointer, generation and buckets are
    back, and lookups answer as before."""
    server = redis_factory(extra_args=DURABLE)
    store = ScoreStore.from_url(server.url)
    _based(store)
    store.overlays.publish_delta(MODEL, "r1", "d1", IDS[:5], [0.5] * 5, [LATER] * 5)
    store.overlays.invalidate(MODEL, IDS[5:7], "fraud")
    store.close()
    server.stop()
    again = redis_factory(extra_args=[*DURABLE, "--dir", server.workdir], port=server.port)
    got = _reader(again.url).get_many(MODEL, IDS[:7])
    assert [g.score for g in got[:5] if g is not None] == [0.5] * 5
    assert [g.invalid for g in got[5:] if g is not None] == ["fraud", "fraud"]


def test_concurrent_lookups_see_whole_versions_from_base_to_deltas_to_invalidation_to_next_run(
    store: ScoreStore, redis_url: str
) -> None:
    """Under concurrent single and batch lookups (read caches on), a nightly base, three deltas with changed and new
    entities, an invalidation, then the next nightly run: every answer is the entity's value in a version that was
    live during its lookup (pointer cache age included), and all answers of one batch come from one version."""
    import threading
    import time

    import numpy as np

    ids = IDS[:300]
    new = [f"new-{i}" for i in range(30)]
    versions: list[dict[str, float | str | None]] = []
    base = {e: float(np.float32(s)) for e, s in zip(ids, BASE[:300], strict=True)}
    versions.append({**base, **dict.fromkeys(new)})

    def delta(lo: int, hi: int, fresh: list[str], value: float) -> dict[str, float | str | None]:
        out = dict(versions[-1])
        out.update(dict.fromkeys([*ids[lo:hi], *fresh], float(np.float32(value))))
        return out

    steps: list[Callable[[], None]] = []
    plan = [(0, 50, new[:20], 0.61), (25, 75, new[10:30], 0.62), (60, 100, [], 0.63)]
    for k, (lo, hi, fresh, value) in enumerate(plan):
        versions.append(delta(lo, hi, fresh, value))
        batch = [*ids[lo:hi], *fresh]
        steps.append(lambda k=k, batch=batch, value=value: store.overlays.publish_delta(
            MODEL, "r1", f"d{k}", batch, [value] * len(batch), [LATER + k] * len(batch)) and None)  # fmt: skip
    doomed = [ids[5], ids[30], ids[65], new[3]]
    versions.append({**versions[-1], **dict.fromkeys(doomed, "invalid")})
    steps.append(lambda: store.overlays.invalidate(MODEL, doomed, "fraud") and None)
    nightly = scores_for(330, seed=9)
    versions.append({e: float(np.float32(s)) for e, s in zip([*ids, *new], nightly, strict=True)})

    def next_nightly() -> None:
        load_run(store, "r2", [*ids, *new], nightly, as_of=DAY + timedelta(days=1))

    steps.append(next_nightly)
    load_run(store, "r1", ids, BASE[:300])
    max_stale_s = 0.2
    live: list[list[float]] = [[time.monotonic(), math.inf]]  # version k: [flip started, next flip returned)
    answers: list[tuple[float, float, list[str], list]] = []
    stop = threading.Event()

    def look_up(seed: int) -> None:
        reader = ScoreReader(connect(redis_url), refresh_s=0.05, max_stale_s=max_stale_s, cache=ReadCache())
        rng = np.random.default_rng(seed)
        pool = [*ids[:110], *new]
        while not stop.is_set():
            picked = [pool[i] for i in rng.integers(0, len(pool), 1 if seed % 2 else 8)]
            t0 = time.monotonic()
            got = [reader.get(MODEL, picked[0])] if seed % 2 else reader.get_many(MODEL, picked)
            answers.append((t0, time.monotonic(), picked, got))
        reader.close()

    threads = [threading.Thread(target=look_up, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        for step in steps:
            time.sleep(0.25)
            started = time.monotonic()
            step()
            live[-1][1] = time.monotonic()
            live.append([started, math.inf])
        time.sleep(0.25)
    finally:
        stop.set()
        for t in threads:
            t.join()

    def value(found: object) -> float | str | None:
        if found is None:
            return None
        return "invalid" if found.invalid is not None else found.score  # type: ignore[attr-defined]

    seen = set()
    assert len(answers) > 200
    for sent, received, picked, got in answers:
        candidates = [k for k, (start, end) in enumerate(live) if start <= received and end >= sent - max_stale_s]
        matching = [k for k in candidates if all(versions[k][e] == value(g) for e, g in zip(picked, got, strict=True))]
        assert matching, f"lookup of {picked} answered {[value(g) for g in got]}: no version live then gives that"
        seen.update(matching)
    assert {0, len(versions) - 1} <= seen and len(seen) >= 4  # the lookups really ran across the changes
