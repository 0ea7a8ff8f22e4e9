"""The pure core of the readers, without Redis: what a lookup sends for each state of the pointer cache, how
replies become results, and how a rollout route splits ids between the champion's and the challenger's runs."""

from __future__ import annotations

from datetime import UTC, datetime

from warehouse.rollout import CHALLENGER, CHAMPION, in_canary
from warehouse.store.keys import RunState, encode_score, store_key
from warehouse.store.lookup import LookupState, Refresh, Route, parse_override

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def _meta(run_id: str, n_buckets: int, version: str = "v1") -> dict[bytes, bytes]:
    fields = {"model": "churn", "run_id": run_id, "model_version": version, "as_of": str(DAY.timestamp()),
              "state": RunState.PUBLISHED.value, "expected_rows": "10", "n_buckets": str(n_buckets),
              "created_at": str(DAY.timestamp())}  # fmt: skip
    return {k.encode(): v.encode() for k, v in fields.items()}


def _canary(percent: float = 10.0, override: bytes | None = None, shadow: bool = False) -> LookupState:
    """A state following challenger v2 (run c1, 4 buckets) next to the champion's run r1 (4 buckets), read at 0."""
    state = LookupState(refresh_s=0.5, max_stale_s=0.9)
    state.set_route("churn", Route("v2", percent, shadow))
    reading = state.pointer_read("churn", [b"r1", b"c1", override], 0.0)
    assert reading is not None and reading.meta_keys == [store_key("churn", "meta", r) for r in ("r1", "c1")]
    state.meta_read(reading, [_meta("r1", 4), _meta("c1", 4, "v2")])
    return state


def test_a_cold_cache_reads_the_pointer_then_the_run_then_sends_one_hmget() -> None:
    """Cold: read the pointer first; a pointer naming an unknown run asks for its metadata; then a lookup whose ids
    share one bucket is one lone HMGET, and the replies become hits of that run, None for a miss."""
    state = LookupState(refresh_s=0.5, max_stale_s=0.9)
    raw = state.query("churn", ["a", "b"])
    assert state.plan("churn", raw, 10.0) is None
    assert state.refresh("churn") == Refresh(store_key("churn", "current"), layer=store_key("churn", "layer"))
    reading = state.pointer_read("churn", [b"r1"], 10.0)
    assert reading is not None and reading.meta_keys == [store_key("churn", "meta", "r1")]
    state.meta_read(reading, [_meta("r1", 1)])
    plan = state.plan("churn", raw, 10.0)
    assert plan is not None and plan.refresh is None
    assert plan.keys == [store_key("churn", "bucket", "r1", 0).encode()] and plan.fields == [[b"a", b"b"]]
    hits = plan.answer([[encode_score(0.25), None]])
    assert hits[1] is None and hits[0] is not None and (hits[0].score, hits[0].run_id) == (0.25, "r1")
    assert state.pointer_read("churn", [b"r1"], 10.2) is None  # the cached run: no metadata read


def test_an_aging_pointer_is_reread_with_the_lookup_and_an_expired_one_first() -> None:
    """Past ``refresh_s`` the pointer is read in the same pipeline as the HMGETs (and ``get`` falls back to
    ``get_many``); before, a lookup sends its HMGETs only; past ``max_stale_s`` the pointer is read before; no
    published run answers misses without I/O."""
    state = LookupState(refresh_s=0.5, max_stale_s=0.9)
    reading = state.pointer_read("churn", [b"r1"], 0.0)
    assert reading is not None
    state.meta_read(reading, [_meta("r1", 64)])
    raw = state.query("churn", [f"id-{i}" for i in range(40)])
    fresh = state.plan("churn", raw, 0.1)
    assert fresh is not None and len(fresh.keys) > 1 and fresh.refresh is None
    assert state.one("churn", "id-1", 0.1) is not None
    aging = state.plan("churn", raw[:1], 0.7)
    assert aging is not None and aging.refresh == state.refresh("churn") and len(aging.keys) == 1
    assert state.one("churn", "id-1", 0.7) is None
    assert state.plan("churn", raw, 1.0) is None
    assert state.pointer_read("churn", [None], 1.0) is None
    empty = state.plan("churn", raw, 1.1)
    assert empty is not None and (empty.keys, empty.refresh) == ([], None)
    assert empty.answer([]) == [None] * 40
    assert state.run("churn") is None


def test_a_route_reads_the_challenger_pointer_and_the_override_with_the_champions() -> None:
    """A model with a route refreshes three keys of its ``{model}`` slot in one pipeline; a new challenger version
    drops the cached pointers (read first again), a percent change does not."""
    state = _canary()
    assert state.refresh("churn") == Refresh(store_key("churn", "current"), store_key("churn", "challenger", "v2"),
                                             store_key("churn", "rollout"), store_key("churn", "layer"))  # fmt: skip
    assert state.refresh("churn").replies == 4
    view = state.view("churn")
    assert view is not None and view.challenger_run is not None and view.challenger_run.run_id == "c1"
    assert (view.percent, view.override, view.shadow) == (10.0, None, False)
    state.set_route("churn", Route("v2", 25.0))
    assert state.entry("churn", 0.1) is not None and state.view("churn").percent == 25.0  # type: ignore[union-attr]
    state.set_route("churn", Route("v3", 25.0))
    assert state.entry("churn", 0.1) is None
    state.set_route("churn", None)
    assert state.view("churn") is None and state.refresh("churn").replies == 2


def test_a_canary_splits_ids_by_variant_and_reads_each_from_its_run() -> None:
    """Each id goes to the run its variant names (``in_canary`` at the percent), one HMGET per bucket of each run;
    the results come back in request order, with the variant of each; a fresh single id is one HGET of its run."""
    state = _canary(percent=30.0)
    ids = [f"id-{i}" for i in range(200)]
    plan = state.plan_routed("churn", ids, state.query("churn", ids), 0.1)
    assert plan is not None and plan.refresh is None and plan.shadow_run is None
    expected = [CHALLENGER if in_canary("churn", e, 30.0) else CHAMPION for e in ids]
    assert plan.variants == expected and 0 < expected.count(CHALLENGER) < 200
    runs = {k.decode().split(":")[3] for k in plan.keys}
    assert runs == {"r1", "c1"} and len(plan.keys) == 8
    replies = [[encode_score(0.5 if part.run.run_id == "c1" else 0.25)] * len(f)  # type: ignore[union-attr]
               for part, _ in plan.parts for f in part.fields]  # fmt: skip
    routed = plan.answer(replies)
    for variant, score in zip(routed.variants, routed.scores, strict=True):
        assert score is not None
        assert (score.run_id, score.model_version, score.score) == (
            ("c1", "v2", 0.5) if variant == CHALLENGER else ("r1", "v1", 0.25)
        )
    one = next(e for e in ids if in_canary("churn", e, 30.0))
    found = state.one_routed("churn", one, 0.1)
    assert found is not None and found[0] == CHALLENGER and found[1].run_id == "c1"
    assert state.variants("churn", ids) == expected


def test_the_canary_is_inactive_without_a_challenger_run_and_obeys_the_override() -> None:
    """No challenger pointer (or its run gone): every id is the champion's. An override replaces the percent; an
    unreadable one counts as 0; an override pinned here outlives refreshes sent before it."""
    state = LookupState(refresh_s=0.5, max_stale_s=0.9)
    state.set_route("churn", Route("v2", 50.0))
    reading = state.pointer_read("churn", [b"r1", None, None], 0.0)
    assert reading is not None and reading.missing == ["r1"]
    state.meta_read(reading, [_meta("r1", 1)])
    ids = [f"id-{i}" for i in range(100)]
    plan = state.plan_routed("churn", ids, state.query("churn", ids), 0.1)
    assert plan is not None and set(plan.variants) == {CHAMPION} and len(plan.keys) == 1
    gone = state.pointer_read("churn", [b"r1", b"c-gone", None], 0.2)
    assert gone is not None and gone.missing == ["c-gone"]
    state.meta_read(gone, [{}])
    view = state.view("churn")
    assert view is not None and (view.challenger_run, view.challenger_run_id, view.percent) == (None, "c-gone", 0.0)

    canary = _canary(percent=50.0, override=b"5.0")
    assert canary.view("churn").percent == 5.0  # type: ignore[union-attr]
    assert parse_override(b"abc") == parse_override(b"150") == parse_override(b"nan") == 0.0
    assert parse_override(None) is None and parse_override(b"0.0") == 0.0
    canary.pin_override("churn", 0.0, since=0.3)
    assert canary.view("churn").percent == 0.0  # type: ignore[union-attr]
    assert canary.pointer_read("churn", [b"r1", b"c1", b"5.0"], 0.25) is None  # sent before the pin
    assert canary.view("churn").percent == 0.0  # type: ignore[union-attr]
    assert canary.pointer_read("churn", [b"r1", b"c1", None], 0.35) is None  # after: Redis decides again
    assert canary.view("churn").percent == 50.0  # type: ignore[union-attr]


def test_a_shadow_reads_every_id_from_both_runs_and_serves_the_champion() -> None:
    """Shadow: every variant is the champion; the challenger's run is read for the same ids (one more HMGET per
    bucket), its results apart; a single id needs two reads (no lone HGET); an override of 0 stops the shadow."""
    state = _canary(shadow=True)
    ids = ["a", "b", "c"]
    plan = state.plan_routed("churn", ids, state.query("churn", ids), 0.1)
    assert plan is not None and plan.variants == [CHAMPION] * 3 and plan.shadow_run is not None
    assert [is_shadow for _, is_shadow in plan.parts] == [False, True]
    replies = [[encode_score(0.5 if shadow else 0.25)] * len(f) for part, shadow in plan.parts for f in part.fields]
    routed = plan.answer(replies)
    assert [s.score for s in routed.scores] == [0.25] * 3  # type: ignore[union-attr]
    assert routed.shadow is not None and [s.score for s in routed.shadow] == [0.5] * 3  # type: ignore[union-attr]
    assert routed.shadow_run is not None and routed.shadow_run.run_id == "c1"
    assert state.one_routed("churn", "a", 0.1) is None
    state.pin_override("churn", 0.0, since=0.1)
    quiet = state.plan_routed("churn", ids, state.query("churn", ids), 0.2)
    assert quiet is not None and quiet.shadow_run is None and len(quiet.parts) == 1
