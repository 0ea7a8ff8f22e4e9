"""Locks of the score store: one holder at a time per ``(model, name)``, with a TTL so a dead holder's lock expires.

``SET NX PX`` takes the lock with a random token; a Lua script deletes it only while it still holds that token, so a
holder that stalled past the TTL never removes the lock another holder took since (``jobs.restore`` holds one per
model while it restores).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from warehouse.errors import StoreUnavailableError
from warehouse.store.connection import SyncClient
from warehouse.store.connection import unavailable as _unavailable
from warehouse.store.keys import store_key

# Delete a lock only while it still holds the caller's token (an expired lock taken by another holder stays).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Locks:
    """The locks of every model on one client. ``ScoreStore.lock`` exposes ``lock`` with its contract."""

    def __init__(self, client: SyncClient) -> None:
        self.client = client
        self._release = client.register_script(_RELEASE)

    @contextmanager
    def lock(self, model: str, name: str, ttl_s: float) -> Iterator[bool]:
        key, token = store_key(model, "lock", name), uuid.uuid4().hex
        with _unavailable(f"taking the {name} lock of model {model}"):
            held = bool(self.client.set(key, token, nx=True, px=int(ttl_s * 1000)))
        try:
            yield held
        finally:
            if held:
                try:
                    with _unavailable(f"releasing the {name} lock of model {model}"):
                        self._release(keys=[key], args=[token])
                except StoreUnavailableError:
                    pass  # Redis went away meanwhile: the lock expires after ttl_s (and may be gone with the data)
