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

from warehouse.store.connection import SyncClient

T = TypeVar("T")


def transact(client: SyncClient, body: Callable[[Any], T]) -> T:
    """``body(pipe)`` on a transaction pipeline of ``client``, retried until it returns without ``WatchError``;
    returns what ``body`` returned. ``body`` watches the keys it reads (``pipe.watch``), reads them (immediate
    commands), then either returns (``pipe.unwatch()`` first when it changes nothing, or raises to refuse) or
    queues its writes after ``pipe.multi()`` and calls ``pipe.execute()``, which raises ``WatchError`` when a
    watched key changed since it was watched."""
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                return body(pipe)
            except redis.WatchError:
                continue
