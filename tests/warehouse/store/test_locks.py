"""Store locks against a real redis-server: one holder, expiry, release only by the holder."""

from __future__ import annotations

import contextlib
import time

from tests.warehouse.store.sample_runs import MODEL
from warehouse.store import ScoreStore
from warehouse.store.keys import store_key


def test_the_lock_has_one_holder_and_expires(store: ScoreStore) -> None:
    with store.lock(MODEL, "restore", 60) as first:
        with store.lock(MODEL, "restore", 60) as second:
            assert first and not second
        assert store.client.exists(store_key(MODEL, "lock", "restore"))  # the refused one released nothing
    assert not store.client.exists(store_key(MODEL, "lock", "restore"))
    with contextlib.ExitStack() as stack:
        stalled = stack.enter_context(contextlib.ExitStack())
        assert stalled.enter_context(store.lock(MODEL, "restore", 0.2))
        time.sleep(0.4)  # its holder stalled past the TTL: another one takes the lock
        assert stack.enter_context(store.lock(MODEL, "restore", 60))
        stalled.close()  # the stalled holder's release must not remove the new holder's lock
        assert store.client.exists(store_key(MODEL, "lock", "restore"))
    assert not store.client.exists(store_key(MODEL, "lock", "restore"))
