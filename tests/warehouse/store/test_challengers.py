"""Challenger pointers of the score store against a real redis-server: publish, drop, retention, promotion."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from tests.warehouse.store.sample_runs import DAY, MODEL, scores_for, ten_digit_ids
from warehouse.errors import PointerMovedError, StoreError
from warehouse.store import ScoreReader, ScoreStore
from warehouse.store.keys import RunState, store_key

IDS = ten_digit_ids(400)


def loaded(store: ScoreStore, run_id: str, version: str, days: int = 0, seed: int = 0) -> None:
    store.create_run(MODEL, run_id, version, DAY + timedelta(days=days), len(IDS))
    store.writer(MODEL, run_id).write_batch(IDS, scores_for(len(IDS), seed))
    store.finalize_run(MODEL, run_id)


def test_a_challenger_pointer_never_moves_the_live_one(store: ScoreStore) -> None:
    loaded(store, "champ", "v1")
    store.publish(MODEL, "champ")
    loaded(store, "chal1", "v2", seed=1)
    pub = store.publish_challenger(MODEL, "v2", "chal1")
    assert (pub.run_id, pub.previous_run_id) == ("chal1", None)
    assert store.current_run(MODEL).run_id == "champ"  # type: ignore[union-attr]
    assert store.challengers(MODEL) == {"v2": "chal1"}
    assert store.get_run(MODEL, "chal1").state is RunState.LOADED  # type: ignore[union-attr]
    assert store.publish_challenger(MODEL, "v2", "chal1").already_current  # a retry is a no-op
    # the next night's run replaces it; the old one is retired (cleanup removes it after its grace)
    loaded(store, "chal2", "v2", days=1, seed=2)
    assert store.publish_challenger(MODEL, "v2", "chal2").previous_run_id == "chal1"
    assert store.get_run(MODEL, "chal1").state is RunState.RETIRED  # type: ignore[union-attr]
    # history never replaces a challenger's newer run either
    loaded(store, "chal0", "v2", days=-1, seed=3)
    declined = store.publish_challenger(MODEL, "v2", "chal0")
    assert declined.declined and "older than" in declined.declined
    assert store.challengers(MODEL) == {"v2": "chal2"}


def test_publish_challenger_refusals(store: ScoreStore) -> None:
    with pytest.raises(StoreError, match="unknown run"):
        store.publish_challenger(MODEL, "v2", "nope")
    store.create_run(MODEL, "half", "v2", DAY, len(IDS))
    with pytest.raises(StoreError, match="must be a verified run of that version"):
        store.publish_challenger(MODEL, "v2", "half")  # still loading
    loaded(store, "other", "v3")
    with pytest.raises(StoreError, match="version v3"):
        store.publish_challenger(MODEL, "v2", "other")  # a run of another version
    with pytest.raises(StoreError, match="invalid version"):
        store.publish_challenger(MODEL, "v2*", "other")


def test_cleanup_keeps_each_challengers_run_and_drop_retires_it(store: ScoreStore) -> None:
    clock = [(DAY + timedelta(days=2)).timestamp()]
    timed = ScoreStore(store.client, clock=lambda: clock[0])
    loaded(timed, "champ", "v1")
    timed.publish(MODEL, "champ")
    loaded(timed, "chal1", "v2", seed=1)
    timed.publish_challenger(MODEL, "v2", "chal1")
    loaded(timed, "chal2", "v2", days=1, seed=2)
    timed.publish_challenger(MODEL, "v2", "chal2")
    clock[0] += 60
    report = timed.cleanup(MODEL, keep_runs=0, grace_s=5)
    assert set(report.removed) == {"chal1"}  # the replaced challenger run; the live one and chal2 stay
    assert {r.run_id for r in timed.list_runs(MODEL)} == {"champ", "chal2"}
    assert timed.drop_challenger(MODEL, "v2") == "chal2"
    assert timed.challengers(MODEL) == {}
    clock[0] += 60
    assert set(timed.cleanup(MODEL, keep_runs=0, grace_s=5).removed) == {"chal2"}
    assert not store.client.keys(store_key(MODEL, "bucket", "chal2", "*"))
    assert timed.drop_challenger(MODEL, "v2") is None  # dropping again is fine


def test_promotion_moves_the_live_pointer_to_the_loaded_challenger_run(redis_url: str, store: ScoreStore) -> None:
    loaded(store, "champ", "v1")
    store.publish(MODEL, "champ")
    loaded(store, "chal", "v2", seed=1)
    store.publish_challenger(MODEL, "v2", "chal")
    reader = ScoreReader.from_url(redis_url, refresh_s=0.0)
    before = reader.get(MODEL, IDS[0])
    pub = store.publish(MODEL, "chal", challenger="v2")
    assert (pub.previous_run_id, pub.run_id) == ("champ", "chal")
    assert store.challengers(MODEL) == {}
    assert store.client.lrange(store_key(MODEL, "history"), 0, -1) == [b"chal", b"champ"]  # rollback target kept
    reader.get(MODEL, IDS[0])  # the pointer is re-read with this lookup (refresh_s=0): the next one follows it
    after = reader.get(MODEL, IDS[0])
    assert before is not None and after is not None
    assert (before.model_version, after.model_version) == ("v1", "v2")
    assert after.score == pytest.approx(float(scores_for(len(IDS), 1)[0]))
    assert store.rollback(MODEL).run_id == "champ"  # one step back, as after any publish
    reader.close()


def test_promotion_refuses_when_a_nightly_run_replaced_the_challenger_run(store: ScoreStore) -> None:
    loaded(store, "champ", "v1")
    store.publish(MODEL, "champ")
    loaded(store, "chal1", "v2", seed=1)
    store.publish_challenger(MODEL, "v2", "chal1")
    loaded(store, "chal2", "v2", days=1, seed=2)
    store.publish_challenger(MODEL, "v2", "chal2")
    with pytest.raises(PointerMovedError, match="now names run 'chal2'"):
        store.publish(MODEL, "chal1", challenger="v2")
    assert store.current_run(MODEL).run_id == "champ"  # type: ignore[union-attr]


def test_promotion_racing_a_nightly_publish_one_wins_nothing_mixed(store: ScoreStore) -> None:
    """A promotion and the champion's nightly publish at once: both are single pointer changes, so the live pointer
    ends on one of the two runs with the other retired or in history; never a half state."""
    for attempt in range(5):
        store.client.flushall()
        loaded(store, "champ", "v1")
        store.publish(MODEL, "champ")
        loaded(store, "chal", "v2", days=1, seed=1)
        store.publish_challenger(MODEL, "v2", "chal")
        loaded(store, "night", "v1", days=1, seed=2)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def go(fn: Callable[[], object], barrier: threading.Barrier = barrier, errors: list[BaseException] = errors
               ) -> None:  # fmt: skip
            barrier.wait()
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(lambda: store.publish(MODEL, "chal", challenger="v2"),)),
                   threading.Thread(target=go, args=(lambda: store.publish(MODEL, "night"),))]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, attempt
        current = store.current_run(MODEL)
        assert current is not None and current.run_id in ("chal", "night")
        history = [h.decode() for h in store.client.lrange(store_key(MODEL, "history"), 0, -1)]
        assert history[0] == current.run_id and set(history) == {"champ", "chal", "night"}
        states = {r.run_id: r.state for r in store.list_runs(MODEL)}
        assert [s for s in states.values() if s is RunState.PUBLISHED] == [RunState.PUBLISHED]
        assert store.challengers(MODEL) == {}


def test_rollout_override(store: ScoreStore) -> None:
    assert store.rollout_override(MODEL) is None
    store.set_rollout_override(MODEL, 0.0)
    assert store.rollout_override(MODEL) == 0.0
    store.clear_rollout_override(MODEL)
    assert store.rollout_override(MODEL) is None
