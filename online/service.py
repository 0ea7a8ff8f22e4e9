"""The scoring service behind the HTTP routes: the score ladder, ``/v1/models``, ``/readyz``, reload, the rollout
abort and scrape.

``ScoringService`` holds per-app state (settings, circuit breaker, metrics, admission stats, the loaded models, the
async store reader, the prediction log). Request path of a score: entity id + features validated
(``online.validation``; ``InvalidInput`` names the field) → ONE Redis round trip (skipped while the circuit breaker
is open) → ``online.policy.decide`` → precomputed | fallback | default → orjson-encoded ``JsonResponse`` → counted
in metrics and queued for the prediction log (never awaited). The service degrades only on
``StoreUnavailableError``.

Read cache (``PRESCORE_READ_CACHE``, on by default): the reader keeps each id's result per run it was read from
(``warehouse.store.ReadCache``, bounded by ``read_cache_max_entries`` and ``read_cache_max_mb``), so a repeated id is
answered without Redis while its run is the one the pointer names; a publish, rollback or canary change moves the
next lookups to the new run's keys. A lookup answered wholly from it (``Routed.from_cache``) is not a Redis call:
it is left out of ``prescore_redis_seconds`` and tells the circuit breaker nothing. The cache is emptied when the
store watch sees a model's scores lost or back (misses cached while Redis had lost part of a run must not outlive
its restore under the same run id).

Rollouts (``online.rollout``): the reader routes every lookup (``AsyncScoreReader.get_routed``): a canary answers the
entities ``warehouse.rollout.in_canary`` picks at the effective percent from the challenger's run, the rest from the
champion's; a shadow answers everyone from the champion and logs the challenger's score read in the same round
trip. The ladder applies to the score of the variant that answers, as it would to the champion's: a challenger's
miss or stale score falls to the fallback model or the default alike. While Redis cannot be asked, each entity keeps
the variant the last pointers read give it (its answer is the fallback's or the default, as for the champion).

Answers: ``variant`` is the rollout variant that answered (``champion`` for a model without a rollout);
``as_of``/``age_s`` describe the served score (fallback: scored now, age 0; default: null). ``model_version`` is
the precomputed run's model version (the challenger's for its answers), the fallback model's version, or null
(default); ``run_id`` is set for precomputed answers only. ``/v1/models`` states each model's current run and its
freshness (``StalenessPolicy.freshness``), or ``no_run``, ``lost`` or ``redis_unavailable``, its freshness contract
(``warehouse.schedule.contract``): the promise ``promise_s`` (``max_age_s``), ``late``, ``next_run_at``, and its
``rollout`` (``online.rollout.describe``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from redis.exceptions import RedisError
from starlette.responses import Response

from online import rollout
from online.admission import AdmissionStats
from online.batch_metrics import BatchFigures
from online.breaker import STATE_VALUE, BreakerState, CircuitBreaker
from online.errors import (
    InvalidationRefused,
    InvalidInput,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ReloadFailed,
    StoreUnavailable,
)
from online.metrics import Metrics
from online.policy import Rung, Source, decide, decide_invalid, label_for
from online.prediction_log import PredictionLog, effective_budget, record, server_maxmemory
from online.responses import JsonResponse
from online.settings import OnlineSettings
from online.snapshot import ModelRuntime, Snapshot, load_snapshot
from online.store_watch import StoreWatch
from online.validation import check_entity_id, check_features, json_object
from warehouse import schedule
from warehouse.errors import ConfigError, StoreAuthError, StoreError, StoreUnavailableError
from warehouse.rollout import CHAMPION
from warehouse.store import (
    MAX_REASON_BYTES,
    AsyncScoreReader,
    Invalidation,
    Overlays,
    ReadCache,
    Routed,
    ScoreStore,
    StoredScore,
    connect_async,
    ensure_local_redis,
    store_error,
)

log = logging.getLogger("prescore.online")


def invalidate_ids(
    url: str, model: str, ids: list[str], reason: str, settings: OnlineSettings, timeout_s: float,
    clock: Callable[[], float],
) -> Invalidation:  # fmt: skip
    """One invalidation written to Redis with the settings' bounds (blocking: run it in a thread)."""
    with ScoreStore.from_url(url, socket_timeout=timeout_s, clock=clock) as store:
        overlays = Overlays(store.client, store.clock, max_entities=settings.overlay_max_entities,
                            max_overlays=settings.overlay_max_deltas)  # fmt: skip
        return overlays.invalidate(model, ids, reason, max_ids=settings.invalidate_max_ids)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class ScoringService:
    """Per-app state and the score ladder. Created by ``create_app``; resources are opened in the lifespan."""

    def __init__(self, settings: OnlineSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock  # epoch seconds: the age of every answer and of every run in /v1/models
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        self.metrics = Metrics(self.scrape_values)
        # batch figures (monitor reports, failed runs, publishes) read from the catalog at scrape: online.batch_metrics
        self.batch_figures = BatchFigures(settings.resolved_catalog_url, lambda: {n: m.spec for n, m in (
            self.snapshot.models.items() if self.snapshot else ())}, settings.batch_metrics_ttl_s, clock)  # fmt: skip
        self.metrics.registry.register(self.batch_figures)
        self.stats = AdmissionStats()
        self.snapshot: Snapshot | None = None
        self.store: AsyncScoreReader | None = None
        self.read_cache = ReadCache(settings.read_cache_max_entries, settings.read_cache_max_bytes) \
            if settings.read_cache else None  # fmt: skip
        self.redis_url: str | None = None
        self.plog: PredictionLog | None = None
        self.redis_seen = False
        self.store_refused: str | None = None  # why Redis refused us (password, TLS trust), from the last PING
        self.timeout_s = settings.redis_timeout_ms / 1000
        self.run_as_of: dict[str, float | None] = {}
        self.watch = StoreWatch(settings, lambda: self.store.client if self.store else None, self._model_names,
                                self._breaker_closed, self.timeout_s, clock, self._lost_changed)  # fmt: skip
        self._prefix = uuid.uuid4().hex[:8] + "-"
        self._ids = itertools.count(1)

    # -------------------------------------------------- lifecycle

    async def start(self) -> None:
        s = self.settings
        self.snapshot = await asyncio.to_thread(load_snapshot, s)
        for problem in self.snapshot.problems:
            log.error("not ready: %s", problem)
        url = s.redis_url or (await asyncio.to_thread(ensure_local_redis, s.embedded_redis_dir)).url
        # Every Redis command on the request path is bounded by the socket timeout (and one immediate retry).
        self.store = AsyncScoreReader.from_url(url, socket_timeout=self.timeout_s, cache=self.read_cache)
        self.redis_url = url
        rollout.follow(self.store, None, self.snapshot)
        if s.prediction_log:
            log_url = s.prediction_log_url or url
            client = connect_async(log_url, socket_timeout=1.0, connect_timeout=1.0)  # single node or Redis Cluster
            shared = log_url == url
            budget = effective_budget(s.prediction_log_budget_bytes, await server_maxmemory(client), shared)
            if budget < s.prediction_log_budget_bytes:
                log.info("prediction log budget %.0f MB: 10 %% of the score store's maxmemory", budget / (1 << 20))
            self.plog = PredictionLog(client, budget_bytes=budget)
            self.plog.start()
        await self.ping()
        await self.watch.check_eviction()
        self.watch.start()

    async def stop(self) -> None:
        await self.watch.stop()
        self.batch_figures.close()  # online.batch_metrics
        if self.plog is not None:
            await self.plog.stop()
            await self.plog.client.aclose()
        if self.store is not None:
            await self.store.aclose()

    async def ping(self) -> bool:
        """One PING through the breaker; False while it is open or when Redis does not answer."""
        if self.store is None or not self.breaker.allow():
            return False
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.store.client.ping()
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            self.breaker.failure()
            problem = store_error("checking readiness", exc)
            if isinstance(problem, StoreAuthError):
                if str(problem) != self.store_refused:
                    log.error("%s", problem)  # a configuration error: say it once, not per request
                self.store_refused = str(problem)
            # A timeout or a dropped connection says nothing about the credentials: a refusal already seen stands
            # until a PING succeeds, so /readyz keeps naming the real cause through a slow probe.
            return False
        self.breaker.success()
        self.redis_seen = True
        self.store_refused = None
        return True

    def _lost_changed(self, model: str) -> None:
        """The store watch saw ``model``'s scores lost, or back: drop every cached result (see the module docstring)."""
        if self.read_cache is not None:
            self.read_cache.clear()

    def _breaker_closed(self) -> bool:
        """Whether Redis is answering (read without taking the half-open breaker's one probe from a lookup)."""
        return self.breaker.state is BreakerState.CLOSED

    def _model_names(self) -> list[str]:
        snapshot = self.snapshot
        return sorted(snapshot.models) if snapshot and not snapshot.problems else []

    def model(self, name: str) -> ModelRuntime:
        snapshot = self.snapshot
        if snapshot is None or snapshot.problems:
            raise NotReady("the reader is not ready; see GET /readyz")
        m = snapshot.models.get(name)
        if m is None:
            raise NotFound(f"unknown model {name!r}; GET /v1/models lists the served models")
        return m

    def request_id(self, request: Request) -> str:
        for name, value in request.scope["headers"]:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(text):
                    return text
                break
        return self.new_request_id()

    def new_request_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    # -------------------------------------------------- lookups (one round trip; degrade on unavailability only)

    def unanswered(self, model: str, ids: list[str]) -> Routed:
        """What a lookup that could not ask Redis gives: every id a miss, in the variant last read for it."""
        store = self.store
        variants = store.variants(model, ids) if store is not None else [CHAMPION] * len(ids)
        return Routed(variants, [None] * len(ids))

    async def lookup(self, model: str, ids: list[str]) -> tuple[Routed, bool]:
        """Each id's variant and that variant's stored score (one routed ``get``/``get_many``), and whether Redis
        answered."""
        store = self.store
        if store is None or not self.breaker.allow():
            return self.unanswered(model, ids), False
        t0 = time.perf_counter()
        try:
            found = await store.get_routed(model, ids[0]) if len(ids) == 1 else await store.get_many_routed(model, ids)
        except StoreUnavailableError:
            self.breaker.failure()
            self.metrics.redis_call("unavailable", time.perf_counter() - t0)
            return self.unanswered(model, ids), False
        if not found.from_cache:
            self.metrics.redis_call("get" if len(ids) == 1 else "get_many", time.perf_counter() - t0)
            self.breaker.success()
        return found, True

    def answer(
        self, m: ModelRuntime, entity_id: str, stored: StoredScore | None, answered: bool, has_features: bool,
        now: float, request_id: str, variant: str = CHAMPION,
    ) -> dict[str, Any]:  # fmt: skip
        """The response body of one entity answered by ``variant`` from its stored score ``stored`` (a fallback
        answer's score is filled in by the caller)."""
        st = m.spec.staleness
        if stored is None:
            d = decide(None, now, st.max_age_s, st.hard_max_age_s, has_features and m.fallback is not None)
            looked = "miss" if answered else "unavailable"
        elif stored.invalid is not None:
            d, looked = decide_invalid(has_features and m.fallback is not None), "invalidated"
        else:
            d = decide(stored.as_of.timestamp(), now, st.max_age_s, st.hard_max_age_s,
                       has_features and m.fallback is not None)  # fmt: skip
            looked = "stale" if d.rung is not Rung.FRESH else ("overlay" if stored.overlay else "hit")
        source = d.source
        self.metrics.answered(m.name, d.rung, source, looked, variant)
        if looked == "invalidated":
            assert stored is not None
            body = self._not_precomputed(m, entity_id, source, now, request_id, variant)
            body["reason"] = f"invalidated: {stored.invalid}"
            return body
        if source is Source.PRECOMPUTED:
            assert stored is not None
            return {"model": m.name, "entity_id": entity_id, "score": stored.score, "source": "precomputed",
                    "stale": d.stale, "age_s": d.age_s, "as_of": stored.as_of, "model_version": stored.model_version,
                    "run_id": stored.run_id, "variant": variant, "policy_version": m.policy_version,
                    "fallback_used": False, "request_id": request_id}  # fmt: skip
        return self._not_precomputed(m, entity_id, source, now, request_id, variant)

    def _not_precomputed(
        self, m: ModelRuntime, entity_id: str, source: Source, now: float, request_id: str, variant: str
    ) -> dict[str, Any]:
        """The body of an answer from the fallback (its score filled in by the caller) or the default."""
        if source is Source.FALLBACK:
            assert m.fallback is not None
            return {"model": m.name, "entity_id": entity_id, "score": None, "source": "fallback", "stale": False,
                    "age_s": 0.0, "as_of": datetime.fromtimestamp(now, UTC), "model_version": m.fallback.version,
                    "run_id": None, "variant": variant, "policy_version": m.policy_version, "fallback_used": True,
                    "request_id": request_id}  # fmt: skip
        return {"model": m.name, "entity_id": entity_id, "score": m.spec.default_score, "source": "default",
                "stale": False, "age_s": None, "as_of": None, "model_version": None, "run_id": None,
                "variant": variant, "policy_version": m.policy_version, "fallback_used": False,
                "request_id": request_id}  # fmt: skip

    def shadowed(self, m: ModelRuntime, routed: Routed) -> None:
        """Count the challenger scores a lookup read in shadow."""
        if routed.shadow is not None:
            for found in routed.shadow:
                self.metrics.shadow_read(m.name, found is not None)

    async def answer_many(
        self, m: ModelRuntime, ids: list[str], features: dict[str, list[float] | None], request_id: str
    ) -> tuple[float, list[dict[str, Any]], Routed]:
        """Answers for validated ``ids`` (one Redis round trip; every fallback miss scored in one call), and the
        lookup they came from."""
        routed, answered = await self.lookup(m.name, ids)
        self.shadowed(m, routed)
        now = self.clock()
        results, rows, matrix = [], [], []
        for entity_id, stored, variant in zip(ids, routed.scores, routed.variants, strict=True):
            values = features.get(entity_id)
            item = self.answer(m, entity_id, stored, answered, values is not None, now, request_id, variant)
            if item["source"] == "fallback" and values is not None:
                rows.append(item)
                matrix.append(values)
            results.append(item)
        if rows:
            assert m.fallback is not None
            for item, score in zip(rows, m.fallback.predict_many(matrix).tolist(), strict=True):
                item["score"] = score
        for item in results:
            self.finish(m, item)
        return now, results, routed

    def finish(self, m: ModelRuntime, body: dict[str, Any]) -> None:
        if m.cuts:
            body["decision"] = label_for(m.cuts, body["score"])

    # -------------------------------------------------- score routes

    async def score_one(self, request: Request, model: str, entity_id: Any, features: Any, route: str) -> Response:
        t0 = time.perf_counter()
        m = self.model(model)
        check_entity_id(entity_id)
        values = None if features is None else check_features(m, features)
        request_id = self.request_id(request)
        routed, answered, store = None, False, self.store
        if store is not None and self.breaker.allow():  # inlined ``lookup``: the hot path
            t1 = time.perf_counter()
            try:
                routed = await store.get_routed(model, entity_id)
            except StoreUnavailableError:
                self.breaker.failure()
                self.metrics.redis_call("unavailable", time.perf_counter() - t1)
            else:
                answered = True
                if not routed.from_cache:
                    self.metrics.redis_call("get", time.perf_counter() - t1)
                    self.breaker.success()
        if routed is None:
            routed = self.unanswered(model, [entity_id])
        elif routed.shadow is not None:
            self.shadowed(m, routed)
        now = self.clock()
        body = self.answer(m, entity_id, routed.scores[0], answered, values is not None, now, request_id,
                           routed.variants[0])  # fmt: skip
        if body["source"] == "fallback":
            assert m.fallback is not None and values is not None
            body["score"] = m.fallback.predict_row(values)
        if m.cuts:
            body["decision"] = label_for(m.cuts, body["score"])
        content = orjson.dumps(body, option=orjson.OPT_UTC_Z)
        elapsed = time.perf_counter() - t0
        if self.plog is not None:
            shadow = routed.shadow[0] if routed.shadow is not None else None
            self.plog.append(record(body, int(elapsed * 1e6), now, shadow, routed.shadow_run))
        self.metrics.request_done(route, body["source"], elapsed)
        return JsonResponse(content, request_id)

    async def score_batch(self, request: Request, model: str) -> Response:
        t0 = time.perf_counter()
        m = self.model(model)
        body = await json_object(request, frozenset({"entity_ids", "features"}))
        ids = body.get("entity_ids")
        if type(ids) is not list or not ids:
            raise InvalidInput("entity_ids", "must be a non-empty array of entity ids")
        if len(ids) > self.settings.batch_max:
            raise PayloadTooLarge(f"entity_ids: {len(ids)} ids; at most {self.settings.batch_max} per batch")
        for i, entity_id in enumerate(ids):
            check_entity_id(entity_id, f"entity_ids[{i}]")
        raw_features = body.get("features") or {}
        if type(raw_features) is not dict:
            raise InvalidInput("features", "must be an object of entity id → features, or null")
        wanted = set(ids)
        features = {}
        for entity_id, raw in raw_features.items():
            if entity_id not in wanted:
                raise InvalidInput(f"features.{entity_id}", "is not one of entity_ids")
            features[entity_id] = check_features(m, raw, f"features.{entity_id}")
        request_id = self.request_id(request)
        now, results, routed = await self.answer_many(m, ids, features, request_id)
        content = orjson.dumps({"model": m.name, "request_id": request_id, "results": results}, option=orjson.OPT_UTC_Z)
        elapsed = time.perf_counter() - t0
        if self.plog is not None:
            latency_us = int(elapsed * 1e6)
            shadows, run = routed.shadow, routed.shadow_run
            if shadows is None:
                self.plog.extend([record(item, latency_us, now) for item in results])
            else:
                self.plog.extend([record(item, latency_us, now, shadow, run)
                                  for item, shadow in zip(results, shadows, strict=True)])  # fmt: skip
        sources = {item["source"] for item in results}
        self.metrics.request_done("batch", sources.pop() if len(sources) == 1 else "mixed", elapsed)
        return JsonResponse(content, request_id)

    # -------------------------------------------------- operational routes

    async def models(self) -> dict[str, Any]:
        out, now = [], self.clock()
        snapshot = self.snapshot
        for name, m in sorted((snapshot.models if snapshot else {}).items()):
            entry: dict[str, Any] = {"model": name, "policy_version": m.policy_version,
                                     "fallback_version": m.fallback.version if m.fallback else None,
                                     "fallback": m.fallback_note, "run_id": None, "model_version": None,
                                     "as_of": None, "age_s": None, "state": "redis_unavailable"}  # fmt: skip
            as_of, view, read_at = None, None, None
            if self.store is not None and self.breaker.allow():
                try:
                    async with asyncio.timeout(self.timeout_s):
                        run = await self.store.current_run(name)
                        view = await self.store.rollout(name)
                        layer = await self.store.layer(name)
                    self.breaker.success()
                except (StoreUnavailableError, TimeoutError):
                    self.breaker.failure()
                else:
                    read_at = now
                    self.run_as_of[name] = run.as_of.timestamp() if run else None
                    if run is None:
                        entry["state"] = "no_run"
                    else:
                        age = max(0.0, now - run.as_of.timestamp())
                        entry.update(run_id=run.run_id, model_version=run.model_version, as_of=run.as_of,
                                     age_s=round(age, 3), state=m.spec.staleness.freshness(age),
                                     layer=layer.describe() if layer is not None else None)  # fmt: skip
                        as_of = run.as_of
            promise = schedule.contract(m.spec.schedule, m.spec.staleness.max_age_s, as_of,
                                        datetime.fromtimestamp(now, UTC))  # fmt: skip
            entry.update(promise_s=promise["promise_s"], late=promise["late"], next_run_at=promise["next_run_at"])
            entry["rollout"] = rollout.describe(m.spec, view, read_at)
            health = self.watch.health.get(name)
            entry["store"] = health.state.value if health else None
            if health is not None and health.lost:
                since = self.watch.lost_since.get(name)
                entry.update(state="lost", lost_run_id=health.live_run_id or health.served_run_id, reason=health.reason,
                             lost_since=datetime.fromtimestamp(since, UTC) if since else None)  # fmt: skip
            out.append(entry)
        return {"models": out, "catalog": self.watch.catalog}

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        snapshot = self.snapshot
        detail: dict[str, Any] = {"breaker": self.breaker.state.value, "in_flight": self.stats.in_flight}
        if snapshot is None:
            return 503, {"status": "starting", "reason": "models are still loading", **detail}
        detail["models"] = {n: {"fallback_version": m.fallback.version if m.fallback else None,
                                "fallback": m.fallback_note} for n, m in snapshot.models.items()}  # fmt: skip
        if snapshot.problems:
            return 503, {"status": "not_ready", "reason": "; ".join(snapshot.problems), **detail}
        redis_ok = await self.ping()
        detail["breaker"] = self.breaker.state.value
        detail["redis"] = "ok" if redis_ok else "refused" if self.store_refused else "unavailable"
        if not self.redis_seen:
            reason = self.store_refused or "Redis has not answered yet"
            return 503, {"status": "not_ready", "reason": reason, **detail}
        if not redis_ok:
            reason = f"{self.store_refused or 'Redis is unavailable'}: answering from fallback models and defaults"
            return 200, {"status": "degraded", "reason": reason, **detail}
        detail["catalog"] = self.watch.catalog
        detail["store"] = {n: h.state.value for n, h in sorted(self.watch.health.items())}
        problems = [f"scores lost: {h.reason}" for h in self.watch.lost()]
        if problems:
            problems[-1] += "; answering from fallback models and defaults until they are restored"
        if self.watch.eviction:
            problems.append(self.watch.eviction)
        if problems:
            return 200, {"status": "degraded", "reason": "; ".join(problems), **detail}
        return 200, {"status": "ready", **detail}

    async def reload(self) -> dict[str, Any]:
        try:
            snapshot = await asyncio.to_thread(load_snapshot, self.settings)
        except ConfigError as exc:
            raise ReloadFailed(f"models file rejected, still serving the previous one: {exc}") from None
        if snapshot.problems:
            raise ReloadFailed("reload refused, still serving the previous models: " + "; ".join(snapshot.problems))
        old, self.snapshot = self.snapshot, snapshot
        rollout.follow(self.store, old, snapshot)
        return {"status": "reloaded", "models": {n: m.fallback_note for n, m in snapshot.models.items()}}

    async def abort_rollout(self, model: str) -> dict[str, Any]:
        """``POST /v1/admin/rollout/{model}/abort`` (``online.rollout.abort``)."""
        assert self.store is not None and self.redis_url is not None
        return await rollout.abort(self.model(model), self.store, self.redis_url, max(self.timeout_s, 1.0), self.clock)

    async def invalidate(self, request: Request, model: str) -> dict[str, Any]:
        """``POST /v1/admin/invalidate/{model}`` with ``{"entity_ids": [...], "reason": "..."}`` (``jobs.invalidate``
        says what an invalidation does): 413 beyond ``invalidate_max_ids`` ids, 409 when the model has no live run or
        the layer is full, 503 when Redis could not be written (nothing was invalidated then)."""
        m = self.model(model)
        body = await json_object(request, frozenset({"entity_ids", "reason"}))
        ids, reason = body.get("entity_ids"), body.get("reason", "invalidated")
        if not isinstance(ids, list) or not ids:
            raise InvalidInput("entity_ids", "must be a non-empty list of entity ids")
        limit = self.settings.invalidate_max_ids
        if len(ids) > limit:
            raise PayloadTooLarge(f"entity_ids: {len(ids)} ids; at most {limit} per call "
                                  "(PRESCORE_INVALIDATE_MAX_IDS): nothing was invalidated; split the list")  # fmt: skip
        for i, entity_id in enumerate(ids):
            check_entity_id(entity_id, f"entity_ids[{i}]")
        if not isinstance(reason, str) or len(reason.encode()) > MAX_REASON_BYTES:
            raise InvalidInput("reason", f"must be a string of at most {MAX_REASON_BYTES} bytes")
        if self.redis_url is None:
            raise StoreUnavailable("Redis is not configured: nothing was invalidated")
        try:
            done = await asyncio.to_thread(invalidate_ids, self.redis_url, m.name, ids, reason or "invalidated",
                                           self.settings, max(self.timeout_s, 1.0), self.clock)  # fmt: skip
        except StoreUnavailableError as exc:
            raise StoreUnavailable(f"Redis is unavailable: nothing was invalidated ({exc}); retry") from None
        except StoreError as exc:
            raise InvalidationRefused(str(exc)) from None
        log.warning("invalidated %d entities of %s (%d unknown): %s", done.invalidated, m.name, done.unknown, reason)
        return {"status": "invalidated", "model": m.name, "run_id": done.base, "invalidated": done.invalidated,
                "unknown": done.unknown, "reason": reason or "invalidated",
                "generation": done.layer.generation if done.layer else None}  # fmt: skip

    def scrape_values(self) -> dict[str, Any]:
        plog = self.plog
        return {
            "breaker": STATE_VALUE[self.breaker.state],
            "ready": int(self.snapshot is not None and not self.snapshot.problems and self.redis_seen),
            "in_flight": self.stats.in_flight,
            "run_as_of": dict(self.run_as_of),
            "store_lost": {n: int(h.lost) for n, h in self.watch.health.items()},
            "catalog_available": None if self.watch.catalog in ("off", "absent") else int(self.watch.catalog == "ok"),
            "log_dropped": plog.dropped if plog else 0,
            "log_written": plog.written if plog else 0,
            "log_pending": plog.pending if plog else 0,
            "log_trimmed": plog.trimmed if plog else 0,
            "log_bytes": plog.stream_bytes if plog else 0,
            "log_budget_bytes": plog.budget_bytes if plog else 0,
            "rollouts": rollout.gauges(self.store, self._model_names()) if self.store else {},
            "read_cache": self.read_cache,
            "now": self.clock(),
        }
