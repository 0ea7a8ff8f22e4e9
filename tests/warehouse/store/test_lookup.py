"""The pure core of the readers, without Redis: what a lookup sends for each state of the pointer cache, and how
replies become results."""

from __future__ import annotations

from datetime import UTC, datetime

from warehouse.store.keys import RunState, encode_score, store_key
from warehouse.store.lookup import LookupState

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def _meta(run_id: str, n_buckets: int) -> dict[bytes, bytes]:
    fields = {"model": "churn", "run_id": run_id, "model_version": "v1", "as_of": str(DAY.timestamp()),
              "state": RunState.PUBLISHED.value, "expected_rows": "10", "n_buckets": str(n_buckets),
              "created_at": str(DAY.timestamp())}  # fmt: skip
    return {k.encode(): v.encode() for k, v in fields.items()}


def test_a_cold_cache_reads_the_pointer_then_the_run_then_sends_one_hmget() -> None:
    """Cold: read the pointer first; a pointer naming an unknown run asks for its metadata; then a lookup whose ids
    share one bucket is one lone HMGET, and the replies become hits of that run, None for a miss."""
    state = LookupState(refresh_s=0.5, max_stale_s=0.9)
    raw = state.query("churn", ["a", "b"])
    assert state.plan("churn", raw, 10.0) is None
    assert state.pointer_read("churn", b"r1", 10.0) == store_key("churn", "meta", "r1")
    state.meta_read("churn", _meta("r1", 1), 10.0)
    plan = state.plan("churn", raw, 10.0)
    assert plan is not None and plan.pointer is None
    assert plan.keys == [store_key("churn", "bucket", "r1", 0).encode()] and plan.fields == [[b"a", b"b"]]
    hits = plan.answer([[encode_score(0.25), None]])
    assert hits[1] is None and hits[0] is not None and (hits[0].score, hits[0].run_id) == (0.25, "r1")
    assert state.pointer_read("churn", b"r1", 10.2) is None  # the cached run: no metadata read


def test_an_aging_pointer_is_reread_with_the_lookup_and_an_expired_one_first() -> None:
    """Past ``refresh_s`` the pointer is read in the same pipeline as the HMGETs (and ``get`` falls back to
    ``get_many``); past ``max_stale_s`` it is read before; no published run answers misses without I/O."""
    state = LookupState(refresh_s=0.5, max_stale_s=0.9)
    state.pointer_read("churn", b"r1", 0.0)
    state.meta_read("churn", _meta("r1", 64), 0.0)
    raw = state.query("churn", [f"id-{i}" for i in range(40)])
    fresh = state.plan("churn", raw, 0.1)
    assert fresh is not None and len(fresh.keys) > 1 and fresh.pointer == store_key("churn", "current")
    assert state.single("churn", "id-1", 0.1) is not None
    aging = state.plan("churn", raw[:1], 0.7)
    assert aging is not None and aging.pointer == store_key("churn", "current") and len(aging.keys) == 1
    assert state.single("churn", "id-1", 0.7) is None
    assert state.plan("churn", raw, 1.0) is None
    assert state.pointer_read("churn", None, 1.0) is None
    empty = state.plan("churn", raw, 1.1)
    assert empty is not None and (empty.keys, empty.pointer) == ([], None)
    assert empty.answer([]) == [None] * 40
    assert state.run("churn") is None
