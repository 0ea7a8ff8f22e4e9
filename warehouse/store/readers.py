"""Read side of the Redis score store: ``ScoreReader`` (sync) and ``AsyncScoreReader`` (asyncio).

Contract (``ScoreLookup``): ``get_many`` returns exactly one entry per requested id, in order; a miss (unknown
id, or no published run) is ``None``; a hit carries the score, run id, model version and ``as_of`` (UTC); all
hits of one call come from one run. One Redis round trip per lookup on the hot path: the current-run pointer is
cached in process and re-read at most every ``refresh_s`` (piggy-backed on a lookup up to ``max_stale_s``), so
a publish is visible to every reader within 1 s. Invalid ids raise ``StoreError``; an unreachable Redis raises
``StoreUnavailableError``.

Both readers are I/O shells around one pure core, ``warehouse.store.lookup.LookupState``: it decides what to send
(pointer, metadata, one ``HGET``, ``HMGET`` per bucket) and turns replies into results; the readers only send and
return. Redis Cluster (a URL with ``?cluster=true``, see ``warehouse.store.connection``): ``from_url`` returns
readers over ``RedisCluster`` clients; ``get`` is one HGET to the node that owns the bucket; ``get_many`` pipelines
one HMGET per bucket, grouped per node and sent to every node at once (one round trip, in parallel); the pointer
keys live on the node of the ``{model}`` hash tag.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from redis.exceptions import RedisClusterException

from warehouse.store.connection import (
    UNAVAILABLE_ERRORS,
    AsyncClient,
    SyncClient,
    cluster_unreachable,
    connect,
    connect_async,
    store_error,
)
from warehouse.store.connection import unavailable as _unavailable
from warehouse.store.keys import RunInfo, StoredScore, validate_name
from warehouse.store.lookup import LookupState, hit, pointer_key

__all__ = ["AsyncScoreReader", "ScoreLookup", "ScoreReader"]


class ScoreLookup(Protocol):
    """Read side of the store. ``get_many`` returns exactly one entry per id, in order; a miss (unknown id, or no
    published run) is ``None``; a hit's ``as_of`` is UTC; all hits of one call come from one run. Invalid ids raise
    ``StoreError``; an unreachable Redis raises ``StoreUnavailableError``."""

    def get(self, model: str, entity_id: str) -> StoredScore | None: ...

    def get_many(self, model: str, entity_ids: Sequence[str]) -> list[StoredScore | None]: ...


class ScoreReader:
    """Synchronous ``ScoreLookup`` over ``redis.Redis`` or ``RedisCluster``: one round trip per lookup (HMGET per
    bucket, pipelined); the current-run pointer is cached and re-read at most every ``refresh_s`` (a publish shows
    within ~1 s)."""

    def __init__(self, client: SyncClient, *, refresh_s: float = 0.5, max_stale_s: float = 0.9) -> None:
        self.client = client
        self._state = LookupState(refresh_s, max_stale_s)

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 1.0, refresh_s: float = 0.5) -> ScoreReader:
        return cls(connect(url, socket_timeout=socket_timeout, connect_timeout=socket_timeout), refresh_s=refresh_s)

    def close(self) -> None:
        self.client.close()

    def _refresh(self, model: str, reply: Any, fetched: float) -> None:
        meta_key = self._state.pointer_read(model, reply, fetched)
        if meta_key is not None:
            self._state.meta_read(model, self.client.hgetall(meta_key), fetched)

    def current_run(self, model: str) -> RunInfo | None:
        """The run lookups are served from now (cached view)."""
        validate_name("model", model)
        with _unavailable(f"reading the current run of model {model}"):
            entry = self._state.entry(model, time.monotonic())
            if entry is not None:
                return entry.run
            now = time.monotonic()
            self._refresh(model, self.client.get(pointer_key(model)), now)
        return self._state.run(model)

    def get(self, model: str, entity_id: str) -> StoredScore | None:
        found = self._state.single(model, entity_id, time.monotonic())
        if found is None:
            return self.get_many(model, [entity_id])[0]
        run, key, field = found
        with _unavailable(f"reading scores of model {model}"):
            return hit(run, self.client.hget(key, field))

    def get_many(self, model: str, entity_ids: Sequence[str]) -> list[StoredScore | None]:
        state = self._state
        raw = state.query(model, entity_ids)
        with _unavailable(f"reading scores of model {model}"):
            now = time.monotonic()
            plan = state.plan(model, raw, now)
            if plan is None:
                self._refresh(model, self.client.get(pointer_key(model)), now)
                plan = state.plan(model, raw, now)
                assert plan is not None
            if plan.pointer is None:
                replies = [self.client.hmget(plan.keys[0], plan.fields[0])] if plan.keys else []
            else:
                with self.client.pipeline(transaction=False) as pipe:
                    for key, fields in zip(plan.keys, plan.fields, strict=True):
                        pipe.hmget(key, fields)
                    pipe.get(plan.pointer)
                    replies = pipe.execute()
                self._refresh(model, replies.pop(), now)
        return plan.answer(replies)


class AsyncScoreReader:
    """``ScoreReader`` for ``redis.asyncio`` (same contract, same core; methods are coroutines)."""

    def __init__(self, client: AsyncClient, *, refresh_s: float = 0.5, max_stale_s: float = 0.9) -> None:
        self.client = client
        self._state = LookupState(refresh_s, max_stale_s)

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 1.0, refresh_s: float = 0.5) -> AsyncScoreReader:
        client = connect_async(url, socket_timeout=socket_timeout, connect_timeout=socket_timeout)
        return cls(client, refresh_s=refresh_s)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _refresh(self, model: str, reply: Any, fetched: float) -> None:
        meta_key = self._state.pointer_read(model, reply, fetched)
        if meta_key is not None:
            self._state.meta_read(model, await self.client.hgetall(meta_key), fetched)

    async def current_run(self, model: str) -> RunInfo | None:
        validate_name("model", model)
        with _unavailable(f"reading the current run of model {model}"):
            entry = self._state.entry(model, time.monotonic())
            if entry is not None:
                return entry.run
            now = time.monotonic()
            await self._refresh(model, await self.client.get(pointer_key(model)), now)
        return self._state.run(model)

    async def get(self, model: str, entity_id: str) -> StoredScore | None:
        found = self._state.single(model, entity_id, time.monotonic())
        if found is None:
            return (await self.get_many(model, [entity_id]))[0]
        run, key, field = found
        try:  # inline rather than ``_unavailable``: this is the online hot path (a context manager costs ~2 µs)
            raw = await self.client.hget(key, field)
        except UNAVAILABLE_ERRORS as exc:
            raise store_error(f"reading scores of model {model}", exc) from exc
        except RedisClusterException as exc:  # cluster only: the slot map could not be refreshed
            if not cluster_unreachable(exc):
                raise
            raise store_error(f"reading scores of model {model}", exc) from exc
        return hit(run, raw)

    async def get_many(self, model: str, entity_ids: Sequence[str]) -> list[StoredScore | None]:
        state = self._state
        raw = state.query(model, entity_ids)
        with _unavailable(f"reading scores of model {model}"):
            now = time.monotonic()
            plan = state.plan(model, raw, now)
            if plan is None:
                await self._refresh(model, await self.client.get(pointer_key(model)), now)
                plan = state.plan(model, raw, now)
                assert plan is not None
            if plan.pointer is None:
                replies = [await self.client.hmget(plan.keys[0], plan.fields[0])] if plan.keys else []
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    for key, fields in zip(plan.keys, plan.fields, strict=True):
                        pipe.hmget(key, fields)
                    pipe.get(plan.pointer)
                    replies = await pipe.execute()
                await self._refresh(model, replies.pop(), now)
        return plan.answer(replies)
