"""Read side of the Redis score store: ``ScoreReader`` (sync) and ``AsyncScoreReader`` (asyncio).

Contract (``ScoreLookup``): ``get_many`` returns exactly one entry per requested id, in order; a miss (unknown
id, or no published run) is ``None``; a hit carries the score, run id, model version and ``as_of`` (UTC); all
hits of one call come from one run. One Redis round trip per lookup on the hot path: the current-run pointer is
cached in process and re-read at most every ``refresh_s`` (piggy-backed on a lookup up to ``max_stale_s``), so
a publish is visible to every reader within 1 s. Invalid ids raise ``StoreError``; an unreachable Redis raises
``StoreUnavailableError``.

Redis Cluster (a URL with ``?cluster=true``, see ``warehouse.store.connection``): ``from_url`` returns readers over
``RedisCluster`` clients; ``get`` is still one HGET to the node that owns the bucket; ``get_many`` pipelines one
HMGET per bucket, grouped per node and sent to every node at once (one round trip, in parallel); the pointer keys
live on the node of the ``{model}`` hash tag. The single-server path is unchanged. The writer side
(``warehouse.store.score_store``) shares the layout in ``warehouse.store.layout``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
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
from warehouse.store.connection import text as _text
from warehouse.store.connection import unavailable as _unavailable
from warehouse.store.layout import (
    RunInfo,
    StoredScore,
    assemble,
    bucket_of,
    decode_score,
    encode_entity_id,
    plan_lookup,
    store_key,
    validate_name,
)

__all__ = ["AsyncScoreReader", "ScoreLookup", "ScoreReader"]


class ScoreLookup(Protocol):
    """Read side of the store. ``get_many`` returns exactly one entry per id, in order; a miss (unknown id, or no
    published run) is ``None``; a hit's ``as_of`` is UTC; all hits of one call come from one run. Invalid ids raise
    ``StoreError``; an unreachable Redis raises ``StoreUnavailableError``."""

    def get(self, model: str, entity_id: str) -> StoredScore | None: ...

    def get_many(self, model: str, entity_ids: Sequence[str]) -> list[StoredScore | None]: ...


def _single(run: RunInfo, entity_id: str) -> tuple[str, bytes]:
    """Bucket key and field of one id in ``run`` (the one-HGET fast path of ``get``)."""
    raw = encode_entity_id(entity_id)
    return store_key(run.model, "bucket", run.run_id, bucket_of(raw, run.n_buckets)), raw


def _hit(run: RunInfo, value: Any) -> StoredScore | None:
    return None if value is None else StoredScore(decode_score(value), run.run_id, run.model_version, run.as_of)


@dataclass
class _Pointer:
    run: RunInfo | None
    fetched: float


class _PointerCache:
    """Per-model cache of the current run. Younger than ``refresh_s``: used as is. Up to ``max_stale_s``: used,
    and the pointer is re-read in the same round trip as the lookup. Older (or never read): read first."""

    def __init__(self, refresh_s: float, max_stale_s: float) -> None:
        self.refresh_s, self.max_stale_s = refresh_s, max_stale_s
        self.entries: dict[str, _Pointer] = {}

    def state(self, model: str, now: float) -> tuple[_Pointer | None, bool]:
        entry = self.entries.get(model)
        if entry is None or now - entry.fetched > self.max_stale_s:
            return None, False
        return entry, now - entry.fetched > self.refresh_s

    def known(self, model: str, run_id: str | None, fetched: float) -> bool:
        """Record a pointer read; False when it names a run whose metadata must be fetched."""
        entry = self.entries.get(model)
        if run_id is None or (entry is not None and entry.run is not None and entry.run.run_id == run_id):
            self.entries[model] = _Pointer(entry.run if (entry and run_id) else None, fetched)
            return True
        return False


class ScoreReader:
    """Synchronous ``ScoreLookup`` over ``redis.Redis`` or ``RedisCluster``: one round trip per lookup (HMGET per
    bucket, pipelined); the current-run pointer is cached and re-read at most every ``refresh_s`` (a publish shows
    within ~1 s)."""

    def __init__(self, client: SyncClient, *, refresh_s: float = 0.5, max_stale_s: float = 0.9) -> None:
        self.client = client
        self._cache = _PointerCache(refresh_s, max_stale_s)

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 1.0, refresh_s: float = 0.5) -> ScoreReader:
        return cls(connect(url, socket_timeout=socket_timeout, connect_timeout=socket_timeout), refresh_s=refresh_s)

    def close(self) -> None:
        self.client.close()

    def _refresh(self, model: str, run_id: str | None, fetched: float) -> _Pointer:
        if not self._cache.known(model, run_id, fetched):
            meta = self.client.hgetall(store_key(model, "meta", str(run_id)))
            self._cache.entries[model] = _Pointer(RunInfo.from_meta(meta) if meta else None, fetched)
        return self._cache.entries[model]

    def current_run(self, model: str) -> RunInfo | None:
        """The run lookups are served from now (cached view)."""
        validate_name("model", model)
        with _unavailable(f"reading the current run of model {model}"):
            entry, _ = self._cache.state(model, time.monotonic())
            if entry is None:
                now = time.monotonic()
                entry = self._refresh(model, _text(self.client.get(store_key(model, "current"))), now)
        return entry.run

    def get(self, model: str, entity_id: str) -> StoredScore | None:
        entry, piggyback = self._cache.state(model, time.monotonic())
        if entry is None or entry.run is None or piggyback:
            return self.get_many(model, [entity_id])[0]
        key, field = _single(entry.run, entity_id)
        with _unavailable(f"reading scores of model {model}"):
            return _hit(entry.run, self.client.hget(key, field))

    def get_many(self, model: str, entity_ids: Sequence[str]) -> list[StoredScore | None]:
        validate_name("model", model)
        raw = [encode_entity_id(e) for e in entity_ids]
        with _unavailable(f"reading scores of model {model}"):
            now = time.monotonic()
            entry, piggyback = self._cache.state(model, now)
            if entry is None:
                entry = self._refresh(model, _text(self.client.get(store_key(model, "current"))), now)
            if entry.run is None and not piggyback:
                return [None] * len(raw)
            run = entry.run
            plan = plan_lookup(run, raw) if run is not None else None
            if plan is not None and len(plan.keys) == 1 and not piggyback:
                replies = [self.client.hmget(plan.keys[0], plan.fields[0])]
            else:
                with self.client.pipeline(transaction=False) as pipe:
                    for key, fields in zip(plan.keys, plan.fields, strict=True) if plan else ():
                        pipe.hmget(key, fields)
                    pipe.get(store_key(model, "current"))
                    replies = pipe.execute()
                self._refresh(model, _text(replies.pop()), now)
        return assemble(run, plan, replies) if run is not None and plan is not None else [None] * len(raw)


class AsyncScoreReader:
    """``ScoreReader`` for ``redis.asyncio`` (same contract, same layout code; methods are coroutines)."""

    def __init__(self, client: AsyncClient, *, refresh_s: float = 0.5, max_stale_s: float = 0.9) -> None:
        self.client = client
        self._cache = _PointerCache(refresh_s, max_stale_s)

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 1.0, refresh_s: float = 0.5) -> AsyncScoreReader:
        client = connect_async(url, socket_timeout=socket_timeout, connect_timeout=socket_timeout)
        return cls(client, refresh_s=refresh_s)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _refresh(self, model: str, run_id: str | None, fetched: float) -> _Pointer:
        if not self._cache.known(model, run_id, fetched):
            meta = await self.client.hgetall(store_key(model, "meta", str(run_id)))
            self._cache.entries[model] = _Pointer(RunInfo.from_meta(meta) if meta else None, fetched)
        return self._cache.entries[model]

    async def current_run(self, model: str) -> RunInfo | None:
        validate_name("model", model)
        with _unavailable(f"reading the current run of model {model}"):
            entry, _ = self._cache.state(model, time.monotonic())
            if entry is None:
                now = time.monotonic()
                entry = await self._refresh(model, _text(await self.client.get(store_key(model, "current"))), now)
        return entry.run

    async def get(self, model: str, entity_id: str) -> StoredScore | None:
        entry, piggyback = self._cache.state(model, time.monotonic())
        if entry is None or entry.run is None or piggyback:
            return (await self.get_many(model, [entity_id]))[0]
        key, field = _single(entry.run, entity_id)
        try:  # inline rather than ``_unavailable``: this is the online hot path (a context manager costs ~2 µs)
            raw = await self.client.hget(key, field)
        except UNAVAILABLE_ERRORS as exc:
            raise store_error(f"reading scores of model {model}", exc) from exc
        except RedisClusterException as exc:  # cluster only: the slot map could not be refreshed
            if not cluster_unreachable(exc):
                raise
            raise store_error(f"reading scores of model {model}", exc) from exc
        return _hit(entry.run, raw)

    async def get_many(self, model: str, entity_ids: Sequence[str]) -> list[StoredScore | None]:
        validate_name("model", model)
        raw = [encode_entity_id(e) for e in entity_ids]
        with _unavailable(f"reading scores of model {model}"):
            now = time.monotonic()
            entry, piggyback = self._cache.state(model, now)
            if entry is None:
                pointer = _text(await self.client.get(store_key(model, "current")))
                entry = await self._refresh(model, pointer, now)
            if entry.run is None and not piggyback:
                return [None] * len(raw)
            run = entry.run
            plan = plan_lookup(run, raw) if run is not None else None
            if plan is not None and len(plan.keys) == 1 and not piggyback:
                replies = [await self.client.hmget(plan.keys[0], plan.fields[0])]
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    for key, fields in zip(plan.keys, plan.fields, strict=True) if plan else ():
                        pipe.hmget(key, fields)
                    pipe.get(store_key(model, "current"))
                    replies = await pipe.execute()
                await self._refresh(model, _text(replies.pop()), now)
        return assemble(run, plan, replies) if run is not None and plan is not None else [None] * len(raw)
