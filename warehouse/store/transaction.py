"""Optimistic transactions of the score store: WATCH, read, MULTI, EXEC, and again from the start when a watched
key changed meanwhile (``redis.WatchError``).

Every change of a model's pointer, history or run metadata (create, finalize, reopen, publish, rollback, restore,
cleanup) is one such transaction on the node of the model's ``{model}`` hash tag, so readers and other writers see
it whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis

from warehouse.errors import StoreError
from warehouse.store.connection import SyncClient

T = TypeVar("T")
MAX_ATTEMPTS = 100  # a watched key changed this many times in a row: something rewrites it in a loop


def transact(client: SyncClient, body: Callable[[Any], T], max_attempts: int = MAX_ATTEMPTS) -> T:
    """``body(pipe)`` on a transaction pipeline of ``client``, retried while it raises ``WatchError`` (at most
    ``max_attempts`` times, then ``StoreError``); returns what ``body`` returned. ``body`` watches the keys it reads
    (``pipe.watch``), reads them (immediate commands), then either returns (``pipe.unwatch()`` first when it changes
    nothing, or raises to refuse) or queues its writes after ``pipe.multi()`` and calls ``pipe.execute()``, which
    raises ``WatchError`` when a watched key changed since it was watched."""
    with client.pipeline(transaction=True) as pipe:
        for _ in range(max_attempts):
            try:
                return body(pipe)
            except redis.WatchError:
                continue
    raise StoreError(
        f"gave up after {max_attempts} attempts: the keys this change reads were rewritten by another client each "
        "time; find what keeps writing the model's pointer or run record, then retry"
    )
