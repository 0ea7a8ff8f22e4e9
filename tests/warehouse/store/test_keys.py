"""Key names of the store: per-model keys share a hash tag, bucket keys spread over cluster slots."""

from __future__ import annotations

import redis

from tests.warehouse.store.sample_runs import MODEL
from warehouse.store.keys import store_key


def test_keys_spread_over_slots_and_pointer_is_tagged() -> None:
    """Per-model keys share the {model} tag (one slot); bucket keys carry no tag, so they spread over slots."""
    assert store_key(MODEL, "current") == "ps:{churn}:current"
    assert store_key(MODEL, "meta", "r1").startswith("ps:{churn}:")
    slots = {redis.crc.key_slot(store_key(MODEL, "bucket", "r1", b).encode()) for b in range(200)}
    assert "{" not in store_key(MODEL, "bucket", "r1", 0)
    assert len(slots) > 150
