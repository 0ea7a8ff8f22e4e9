"""Read side of the Redis score store: ``ScoreReader`` (sync) and ``AsyncScoreReader`` (asyncio).

Contract (``ScoreLookup``): ``get_many`` returns exactly one entry per requested id, in order; a miss (unknown
id, or no published run) is ``None``; a hit carries the score, run id, model version and ``as_of`` (UTC); all
hits of one call come from one run. One Redis round trip per lookup on the hot path: the pointers are cached in
process and re-read at most every ``refresh_s`` (piggy-backed on a lookup up to ``max_stale_s``), so a publish,
a new challenger run or a rollout override is visible to every reader within 1 s. Invalid ids raise
``StoreError``; an unreachable Redis raises ``StoreUnavailableError``.

Rollouts (``warehouse.rollout``): ``set_route(model, Route)`` makes a reader follow a challenger version's pointer
and the model's rollout override, read in the same pipeline as the champion's pointer. ``get_routed`` /
``get_many_routed`` return a ``Routed``: the variant each id is answered from and that variant's score (a canary:
one ``HGET`` for one id, ids grouped by variant for many; a shadow: both runs read in one pipeline, the
challenger's scores apart); ``get`` / ``get_many`` always read the champion. ``pin_override`` applies an override
written through this process at once; ``rollout`` reports what the reader knows; ``variants`` routes without I/O
(for answers given while Redis is unreachable).

Read cache (``cache=``, a ``warehouse.store.read_cache.ReadCache``; off by default here, on in the online reader):
a published run never changes, so each id's result is kept per ``(model, run id, id)`` of the run the pointer cache
names at the lookup; ``get`` / ``get_routed`` answer a cached id without Redis, ``get_many`` / ``get_many_routed``
send only the ids not cached (one round trip, or none when all were). A publish, rollback or canary change is seen
at the next pointer read as ever, and from then on every lookup reads other keys. ``Routed.from_cache`` tells a
caller that no round trip was made (no evidence of Redis's health either way).

Both readers are I/O shells around one pure core, ``warehouse.store.lookup.LookupState``: it decides what to send
(pointers, metadata, one ``HGET``, ``HMGET`` per bucket) and turns replies into results; the readers only send and
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
from warehouse.store.lookup import (
    OVERRIDE_FIELD,
    LookupPlan,
    LookupState,
    Refresh,
    RolloutView,
    Route,
    Routed,
    RoutedPlan,
    bucket_key,
    hit,
    layered_hit,
)
from warehouse.store.overlay import LayerInfo
from warehouse.store.read_cache import ABSENT, ReadCache

__all__ = ["AsyncScoreReader", "ScoreLookup", "ScoreReader"]


class ScoreLookup(Protocol):
    """Read side of the store. ``get_many`` returns exactly one entry per id, in order; a miss (unknown id, or no
    published run) is ``None``; a hit's ``as_of`` is UTC; all hits of one call come from one run. Invalid ids raise
    ``StoreError``; an unreachable Redis raises ``StoreUnavailableError``."""

    def get(self, model: str, entity_id: str) -> StoredScore | None: ...

    def get_many(self, model: str, entity_ids: Sequence[str]) -> list[StoredScore | None]: ...


def _queue_refresh(pipe: Any, refresh: Refresh) -> None:
    """Queue the pointer reads of ``refresh`` on a pipeline (sync or asyncio: queuing does no I/O)."""
    pipe.get(refresh.current)
    if refresh.challenger is not None:
        pipe.get(refresh.challenger)
        pipe.hget(refresh.rollout, OVERRIDE_FIELD)
    if refresh.layer is not None:
        pipe.get(refresh.layer)


class ScoreReader:
    """Synchronous ``ScoreLookup`` over ``redis.Redis`` or ``RedisCluster``: one round trip per lookup (HMGET per
    bucket, pipelined); the pointers are cached and re-read at most every ``refresh_s`` (a publish shows within
    ~1 s); with a ``cache``, ids it holds for the run read are answered without Redis."""

    def __init__(
        self, client: SyncClient, *, refresh_s: float = 0.5, max_stale_s: float = 0.9, cache: ReadCache | None = None
    ) -> None:
        self.client = client
        self._state = LookupState(refresh_s, max_stale_s, cache)

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout: float = 1.0, refresh_s: float = 0.5, cache: ReadCache | None = None
    ) -> ScoreReader:
        client = connect(url, socket_timeout=socket_timeout, connect_timeout=socket_timeout)
        return cls(client, refresh_s=refresh_s, cache=cache)

    @property
    def cache(self) -> ReadCache | None:
        """The read cache of this reader (None: off)."""
        return self._state.cache

    def close(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------- routes (pure: no I/O)

    def set_route(self, model: str, route: Route | None) -> None:
        """Follow ``route`` (a challenger version and how it is served) for ``model``; None: the champion only."""
        self._state.set_route(model, route)

    def pin_override(self, model: str, percent: float) -> None:
        """Apply an override just written to Redis (or that could not be) to this reader at once."""
        self._state.pin_override(model, percent, time.monotonic())

    def variants(self, model: str, entity_ids: Sequence[str]) -> list[str]:
        """Each id's variant by the last pointers read, without I/O."""
        return self._state.variants(model, entity_ids)

    def view(self, model: str) -> RolloutView | None:
        """The rollout of ``model`` as last read, without I/O (None: no route)."""
        return self._state.view(model)

    # ---------------------------------------------------------------- pointers

    def _refresh(self, model: str, replies: Sequence[Any], fetched: float) -> None:
        reading = self._state.pointer_read(model, replies, fetched)
        if reading is not None:
            self._state.meta_read(reading, [self.client.hgetall(k) for k in reading.meta_keys])

    def _read_pointers(self, model: str, now: float) -> None:
        refresh = self._state.refresh(model)
        if refresh.challenger is None:  # the keys share the {model} tag: one MGET on one node
            self._refresh(model, self.client.mget([refresh.current, str(refresh.layer)]), now)
            return
        with self.client.pipeline(transaction=False) as pipe:
            _queue_refresh(pipe, refresh)
            replies = pipe.execute()
        self._refresh(model, replies, now)

    def _ensure(self, model: str) -> None:
        validate_name("model", model)
        with _unavailable(f"reading the current run of model {model}"):
            if self._state.entry(model, time.monotonic()) is None:
                self._read_pointers(model, time.monotonic())

    def current_run(self, model: str) -> RunInfo | None:
        """The champion run lookups are served from now (cached view)."""
        self._ensure(model)
        return self._state.run(model)

    def layer(self, model: str) -> LayerInfo | None:
        """The overlay layer served over the champion run now (cached view; None: none live)."""
        self._ensure(model)
        return self._state.layer(model)

    def rollout(self, model: str) -> RolloutView | None:
        """What this reader serves of ``model``'s rollout now (cached view); None: no route."""
        self._ensure(model)
        return self._state.view(model)

    # ---------------------------------------------------------------- lookups

    def _send(self, model: str, plan: LookupPlan | RoutedPlan, now: float) -> list[Any]:
        """The HMGET replies of ``plan`` (one round trip), its pointer reads recorded."""
        if plan.refresh is None:
            if len(plan.keys) == 1:
                return [self.client.hmget(plan.keys[0], plan.fields[0])]
            if not plan.keys:
                return []
        with self.client.pipeline(transaction=False) as pipe:
            for key, fields in zip(plan.keys, plan.fields, strict=True):
                pipe.hmget(key, fields)
            if plan.refresh is not None:
                _queue_refresh(pipe, plan.refresh)
            replies = pipe.execute()
        if plan.refresh is not None:
            n = plan.refresh.replies
            self._refresh(model, replies[-n:], now)
            del replies[-n:]
        return replies

    def get(self, model: str, entity_id: str) -> StoredScore | None:
        found = self._state.one(model, entity_id, time.monotonic())
        if found is None:
            return self.get_many(model, [entity_id])[0]
        run, raw, cached = found
        if isinstance(cached, LayerInfo):
            return self._layered(model, run, raw, cached)
        if cached is not ABSENT:
            return cached
        with _unavailable(f"reading scores of model {model}"):
            reply = self.client.hget(bucket_key(run, raw), raw)
        return self._state.remember(run, raw, hit(run, reply))

    def _layered(self, model: str, run: RunInfo, raw: bytes, layer: LayerInfo) -> StoredScore | None:
        """One id of ``run`` its layer's filter may hold: both buckets' ``HGET``s in one pipeline."""
        with _unavailable(f"reading scores of model {model}"), self.client.pipeline(transaction=False) as pipe:
            pipe.hget(layer.bucket_key(raw), raw)
            pipe.hget(bucket_key(run, raw), raw)
            entry, value = pipe.execute()
        return layered_hit(run, entry, value)

    def get_many(self, model: str, entity_ids: Sequence[str]) -> list[StoredScore | None]:
        state = self._state
        raw = state.query(model, entity_ids)
        with _unavailable(f"reading scores of model {model}"):
            now = time.monotonic()
            plan = state.plan(model, raw, now)
            if plan is None:
                self._read_pointers(model, now)
                plan = state.plan(model, raw, now)
                assert plan is not None
            replies = self._send(model, plan, now)
        return plan.answer(replies)

    def get_routed(self, model: str, entity_id: str) -> Routed:
        """The variant ``entity_id`` is answered from and its score (``Routed`` of one id)."""
        found = self._state.one_routed(model, entity_id, time.monotonic())
        if found is None:
            return self.get_many_routed(model, [entity_id])
        variant, run, raw, cached = found
        if isinstance(cached, LayerInfo):
            return Routed([variant], [self._layered(model, run, raw, cached)])
        if cached is not ABSENT:
            return Routed([variant], [cached], from_cache=True)
        with _unavailable(f"reading scores of model {model}"):
            reply = self.client.hget(bucket_key(run, raw), raw)
        return Routed([variant], [self._state.remember(run, raw, hit(run, reply))])

    def get_many_routed(self, model: str, entity_ids: Sequence[str]) -> Routed:
        """Each id's variant and that variant's score, in one round trip (see the module docstring)."""
        state = self._state
        raw = state.query(model, entity_ids)
        with _unavailable(f"reading scores of model {model}"):
            now = time.monotonic()
            plan = state.plan_routed(model, entity_ids, raw, now)
            if plan is None:
                self._read_pointers(model, now)
                plan = state.plan_routed(model, entity_ids, raw, now)
                assert plan is not None
                plan.pointers_read = True  # Redis answered: the caller's breaker hears of it
            replies = self._send(model, plan, now)
        return plan.answer(replies)


class AsyncScoreReader:
    """``ScoreReader`` for ``redis.asyncio`` (same contract, same core, same read cache; methods are coroutines)."""

    def __init__(
        self, client: AsyncClient, *, refresh_s: float = 0.5, max_stale_s: float = 0.9, cache: ReadCache | None = None
    ) -> None:
        self.client = client
        self._state = LookupState(refresh_s, max_stale_s, cache)

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout: float = 1.0, refresh_s: float = 0.5, cache: ReadCache | None = None
    ) -> AsyncScoreReader:
        client = connect_async(url, socket_timeout=socket_timeout, connect_timeout=socket_timeout)
        return cls(client, refresh_s=refresh_s, cache=cache)

    @property
    def cache(self) -> ReadCache | None:
        """The read cache of this reader (None: off)."""
        return self._state.cache

    async def aclose(self) -> None:
        await self.client.aclose()

    # ---------------------------------------------------------------- routes (pure: no I/O)

    def set_route(self, model: str, route: Route | None) -> None:
        """Follow ``route`` (a challenger version and how it is served) for ``model``; None: the champion only."""
        self._state.set_route(model, route)

    def pin_override(self, model: str, percent: float) -> None:
        """Apply an override just written to Redis (or that could not be) to this reader at once."""
        self._state.pin_override(model, percent, time.monotonic())

    def variants(self, model: str, entity_ids: Sequence[str]) -> list[str]:
        """Each id's variant by the last pointers read, without I/O."""
        return self._state.variants(model, entity_ids)

    def view(self, model: str) -> RolloutView | None:
        """The rollout of ``model`` as last read, without I/O (None: no route)."""
        return self._state.view(model)

    # ---------------------------------------------------------------- pointers

    async def _refresh(self, model: str, replies: Sequence[Any], fetched: float) -> None:
        reading = self._state.pointer_read(model, replies, fetched)
        if reading is not None:
            self._state.meta_read(reading, [await self.client.hgetall(k) for k in reading.meta_keys])

    async def _read_pointers(self, model: str, now: float) -> None:
        refresh = self._state.refresh(model)
        if refresh.challenger is None:  # the keys share the {model} tag: one MGET on one node
            await self._refresh(model, await self.client.mget([refresh.current, str(refresh.layer)]), now)
            return
        async with self.client.pipeline(transaction=False) as pipe:
            _queue_refresh(pipe, refresh)
            replies = await pipe.execute()
        await self._refresh(model, replies, now)

    async def _ensure(self, model: str) -> None:
        validate_name("model", model)
        with _unavailable(f"reading the current run of model {model}"):
            if self._state.entry(model, time.monotonic()) is None:
                await self._read_pointers(model, time.monotonic())

    async def current_run(self, model: str) -> RunInfo | None:
        await self._ensure(model)
        return self._state.run(model)

    async def layer(self, model: str) -> LayerInfo | None:
        await self._ensure(model)
        return self._state.layer(model)

    async def rollout(self, model: str) -> RolloutView | None:
        await self._ensure(model)
        return self._state.view(model)

    # ---------------------------------------------------------------- lookups

    async def _send(self, model: str, plan: LookupPlan | RoutedPlan, now: float) -> list[Any]:
        if plan.refresh is None:
            if len(plan.keys) == 1:
                return [await self.client.hmget(plan.keys[0], plan.fields[0])]
            if not plan.keys:
                return []
        async with self.client.pipeline(transaction=False) as pipe:
            for key, fields in zip(plan.keys, plan.fields, strict=True):
                pipe.hmget(key, fields)
            if plan.refresh is not None:
                _queue_refresh(pipe, plan.refresh)
            replies = await pipe.execute()
        if plan.refresh is not None:
            n = plan.refresh.replies
            await self._refresh(model, replies[-n:], now)
            del replies[-n:]
        return replies

    async def _hget(self, model: str, key: str, field: bytes) -> Any:
        try:  # inline rather than ``_unavailable``: this is the online hot path (a context manager costs ~2 µs)
            return await self.client.hget(key, field)
        except UNAVAILABLE_ERRORS as exc:
            raise store_error(f"reading scores of model {model}", exc) from exc
        except RedisClusterException as exc:  # cluster only: the slot map could not be refreshed
            if not cluster_unreachable(exc):
                raise
            raise store_error(f"reading scores of model {model}", exc) from exc

    async def get(self, model: str, entity_id: str) -> StoredScore | None:
        found = self._state.one(model, entity_id, time.monotonic())
        if found is None:
            return (await self.get_many(model, [entity_id]))[0]
        run, raw, cached = found
        if isinstance(cached, LayerInfo):
            return await self._layered(model, run, raw, cached)
        if cached is not ABSENT:
            return cached
        reply = await self._hget(model, bucket_key(run, raw), raw)
        return self._state.remember(run, raw, hit(run, reply))

    async def _layered(self, model: str, run: RunInfo, raw: bytes, layer: LayerInfo) -> StoredScore | None:
        with _unavailable(f"reading scores of model {model}"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hget(layer.bucket_key(raw), raw)
                pipe.hget(bucket_key(run, raw), raw)
                entry, value = await pipe.execute()
        return layered_hit(run, entry, value)

    async def get_many(self, model: str, entity_ids: Sequence[str]) -> list[StoredScore | None]:
        state = self._state
        raw = state.query(model, entity_ids)
        with _unavailable(f"reading scores of model {model}"):
            now = time.monotonic()
            plan = state.plan(model, raw, now)
            if plan is None:
                await self._read_pointers(model, now)
                plan = state.plan(model, raw, now)
                assert plan is not None
            replies = await self._send(model, plan, now)
        return plan.answer(replies)

    async def get_routed(self, model: str, entity_id: str) -> Routed:
        found = self._state.one_routed(model, entity_id, time.monotonic())
        if found is None:
            return await self.get_many_routed(model, [entity_id])
        variant, run, raw, cached = found
        if isinstance(cached, LayerInfo):
            return Routed([variant], [await self._layered(model, run, raw, cached)])
        if cached is not ABSENT:
            return Routed([variant], [cached], from_cache=True)
        reply = await self._hget(model, bucket_key(run, raw), raw)
        return Routed([variant], [self._state.remember(run, raw, hit(run, reply))])

    async def get_many_routed(self, model: str, entity_ids: Sequence[str]) -> Routed:
        state = self._state
        raw = state.query(model, entity_ids)
        with _unavailable(f"reading scores of model {model}"):
            now = time.monotonic()
            plan = state.plan_routed(model, entity_ids, raw, now)
            if plan is None:
                await self._read_pointers(model, now)
                plan = state.plan_routed(model, entity_ids, raw, now)
                assert plan is not None
                plan.pointers_read = True  # Redis answered: the caller's breaker hears of it
            replies = await self._send(model, plan, now)
        return plan.answer(replies)
