"""The online reader's watch on the score store: are the scores the catalog says are live still in Redis?

Redis is a cache that can lose its data (``FLUSHALL``, a restart without persistence, a replaced cluster node);
the catalog and the committed Parquet are the record. Lookups never wait for this watch. One background task per app,
every ``store_check_s`` seconds, for each served model:

- reads what Redis holds (``warehouse.store_health.inspect_async``: the pointer, the run's metadata, whether a
  random sample of its buckets exists), bounded by the Redis timeout, skipped unless the circuit breaker is closed
  (``allow``; the watch never takes a half-open breaker's probe from a lookup);
- judges it against the catalog's live pointer (``warehouse.store_health.judge``): ``lost`` when the catalog says a
  run is live that Redis does not (fully) hold, ``never_published``, ``serving`` or ``ahead`` otherwise;
- logs one line when a model's scores become lost and one when they are back, and calls ``on_lost_change(model)``
  on both (the service empties its read cache: misses cached while part of a run was gone must not outlive a
  restore of that run).

The catalog is read in a worker thread (one query per model), at most every ``catalog_refresh_s`` seconds and never
twice at once (a read that hangs past ``STUCK_READ_S`` counts as the catalog being unavailable); the answer is
cached. When the catalog cannot be read the last answer stays in use, and before the
first one the watch judges from Redis alone (a pointer to a run with missing buckets is still ``lost``; a missing
pointer is ``unchecked``): a catalog outage never fails the API. A catalog that does not exist (a SQLite file never
created on this machine) turns that comparison off (``absent``).

Also read once at start-up (and again each round until Redis has answered it): the server's ``maxmemory-policy``;
one that would evict score buckets (``allkeys-*``) is logged and makes ``/readyz`` degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import sqlalchemy as sa

from online.settings import OnlineSettings
from warehouse.catalog import Catalog, PointerRecord
from warehouse.errors import CatalogError, ConfigError, StoreError, StoreUnavailableError
from warehouse.store import AsyncClient
from warehouse.store_health import Health, StoreState, eviction_policies_async, eviction_problem, inspect_async, judge

log = logging.getLogger("prescore.online.store")

OK, UNAVAILABLE, ABSENT, OFF = "ok", "unavailable", "absent", "off"
STUCK_READ_S = 30.0  # a catalog read still running after this long counts as the catalog being unavailable


class StoreWatch:
    """See the module docstring. ``health`` (model → latest verdict), ``lost_since`` (model → epoch seconds, by the
    app's clock), ``catalog`` (ok | unavailable | absent | off) and ``eviction`` (why Redis may evict score buckets,
    or None) are read by ``/readyz``, ``/v1/models`` and ``/metrics``."""

    def __init__(
        self,
        settings: OnlineSettings,
        client: Callable[[], AsyncClient | None],
        models: Callable[[], list[str]],
        allow: Callable[[], bool],
        timeout_s: float,
        clock: Callable[[], float] = time.time,
        on_lost_change: Callable[[str], None] | None = None,
    ) -> None:
        self.settings, self.client, self.models, self.allow = settings, client, models, allow
        self.timeout_s, self.clock, self.on_lost_change = timeout_s, clock, on_lost_change
        self.health: dict[str, Health] = {}
        self.lost_since: dict[str, float] = {}
        self.records: dict[str, PointerRecord | None] | None = None  # the catalog's live pointers, last read
        self.catalog = OFF if settings.catalog_refresh_s == 0 or settings.store_check_s == 0 else UNAVAILABLE
        self.eviction: str | None = None
        self._policy_read = False
        self._catalog: Catalog | None = None
        self._catalog_due = self._refresh_started = 0.0  # monotonic
        self._refresh: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._task is None and self.settings.store_check_s > 0:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="store-watch")

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Stop after the current round (bounded by ``timeout_s``); a catalog read in flight is left to finish."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout_s)
            except TimeoutError:
                log.warning("the store watch did not stop within %.1f s", timeout_s)
        if self._refresh is not None:  # its worker thread finishes on its own (bounded by the catalog's timeouts)
            self._refresh.cancel()
        elif self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.check()
            except Exception:  # a bug: logged with its traceback, and the watch goes on (lookups never depend on it)
                log.exception("the store watch failed one round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.store_check_s)

    # -------------------------------------------------- one round

    async def check(self) -> None:
        """One round: start a catalog refresh when due, read the eviction policy until known, judge every model."""
        now = time.monotonic()
        if self.catalog not in (OFF, ABSENT) and now >= self._catalog_due and self._refresh is None:
            self._catalog_due = now + self.settings.catalog_refresh_s
            self._refresh_started = now
            self._refresh = asyncio.create_task(self._read_catalog(), name="store-watch-catalog")
        elif self._refresh is not None and now - self._refresh_started > STUCK_READ_S and self.catalog == OK:
            log.warning("catalog unavailable: a read has not returned for %.0f s, %s", now - self._refresh_started,
                        self._keeping())  # fmt: skip
            self.catalog = UNAVAILABLE  # never a second read beside it: the watch waits for this one
        client = self.client()
        if client is None or not self.allow():
            return
        if not self._policy_read:
            await self.check_eviction()
        for model in self.models():
            try:
                async with asyncio.timeout(self.timeout_s * 4):
                    check = await inspect_async(client, model)
            except (StoreUnavailableError, TimeoutError):
                return  # Redis is unavailable: the breaker and /readyz say so; nothing to judge until it answers
            except StoreError:
                continue  # a model name the store refuses: /readyz already says so
            records = self.records
            recorded = records.get(model) if records is not None else None
            self._judged(judge(model, recorded, check, catalog_read=records is not None))

    async def check_eviction(self) -> None:
        """Read the store's ``maxmemory-policy`` (bounded); log once when it would evict score buckets."""
        client = self.client()
        if client is None:
            return
        try:
            async with asyncio.timeout(max(self.timeout_s * 4, 1.0)):
                policies = await eviction_policies_async(client)
        except TimeoutError:
            return
        self._policy_read = True
        problem = eviction_problem(policies)
        if problem and problem != self.eviction:
            log.error("%s", problem)
        self.eviction = problem

    def _judged(self, health: Health) -> None:
        model, before = health.model, self.health.get(health.model)
        self.health[model] = health
        if health.lost != (model in self.lost_since) and self.on_lost_change is not None:
            self.on_lost_change(model)
        if health.lost and model not in self.lost_since:
            self.lost_since[model] = self.clock()
            log.error("scores of model %s are lost from Redis: %s; answering from fallback models and defaults until "
                      "they are restored (prescore restore --model %s, or the prescore_reconcile DAG)",
                      model, health.reason, model)  # fmt: skip
        elif not health.lost and model in self.lost_since:
            lost_for = self.clock() - self.lost_since.pop(model)
            if health.state in (StoreState.SERVING, StoreState.AHEAD):
                log.warning("scores of model %s are in Redis again: %s (lost for %.0f s)", model, health.reason,
                            lost_for)  # fmt: skip
            else:
                log.warning("scores of model %s are no longer judged lost: %s (after %.0f s)", model, health.reason,
                            lost_for)  # fmt: skip
        elif before is not None and before.lost and health.lost and before.reason != health.reason:
            log.info("scores of model %s still lost: %s", model, health.reason)

    # -------------------------------------------------- the catalog (worker thread)

    async def _read_catalog(self) -> None:
        try:
            self.records = await asyncio.to_thread(self._live_pointers, self.models())
            self.catalog = OK
        except CatalogError as exc:
            absent = str(exc).startswith("no catalog database")
            if absent:
                log.info("no catalog on this host (%s): lost scores are judged from Redis alone", exc)
            elif self.catalog != UNAVAILABLE or self.records is None:
                log.warning("catalog unavailable, %s: %s", self._keeping(), exc)
            self.catalog = ABSENT if absent else UNAVAILABLE
        except (sa.exc.SQLAlchemyError, ConfigError) as exc:
            if self.catalog != UNAVAILABLE:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                log.warning("catalog unavailable, %s: %s", self._keeping(), reason)
            self.catalog = UNAVAILABLE
        finally:
            self._refresh = None

    def _keeping(self) -> str:
        if self.records is None:
            return "judging lost scores from Redis alone"
        return "judging lost scores against its last answer"

    def _live_pointers(self, models: list[str]) -> dict[str, PointerRecord | None]:
        if self._catalog is None:
            self._catalog = Catalog.open(self.settings.resolved_catalog_url, migrate=False, create=False)
        return {model: self._catalog.live_pointer(model) for model in models}

    # -------------------------------------------------- what the routes read

    def lost(self) -> list[Health]:
        return [h for _, h in sorted(self.health.items()) if h.lost]

    def state_of(self, model: str) -> StoreState | None:
        health = self.health.get(model)
        return health.state if health else None
