"""The Redis score store: published scores keyed for lookups, loaded run by run and switched atomically.

Modules, from the bottom up: ``connection`` (clients for one node or a Redis Cluster, and the errors that mean
"unavailable"), ``keys`` (key names, run states and metadata, score values), ``ids`` (the entity-id rule, id arrays
and buckets), ``wire`` (encoding a batch into pipelined ``HSET`` commands), ``pipeline`` (sending them with bounded
replies and cluster redirects), ``transaction`` (WATCH/MULTI retried on conflict), ``writer`` (loading one run),
``read_cache`` (a bounded cache of looked-up scores keyed by run), ``lookup`` (the pure core of a reader: pointer
cache, rollout routes and lookup plans), ``readers`` (lookups, blocking and asyncio, optionally through a
``ReadCache``), ``runs`` (create, count, finalize, reopen, abort), ``publication`` (publish, roll back,
restore the pointer), ``cleanup`` (retention), ``locks``, ``score_store`` (``ScoreStore``, composed of the four before
it) and ``local_server`` (an embedded ``redis-server`` for the demo and tests). ``layout`` re-exports ``keys`` and
``ids``.

Other packages import from here, not from the modules.
"""

from warehouse.store.cleanup import CleanupReport
from warehouse.store.connection import (
    UNAVAILABLE_ERRORS,
    AsyncClient,
    SyncClient,
    connect,
    connect_async,
    is_cluster,
    store_error,
    text,
    unavailable,
)
from warehouse.store.ids import MAX_ENTITY_ID_BYTES, bucket_of, buckets, entity_id_problem, id_array
from warehouse.store.keys import RunInfo, RunState, StoredScore, older_than_live, store_key, validate_name
from warehouse.store.local_server import (
    RedisProcess,
    ensure_local_redis,
    free_port,
    running_local_redis,
    start_redis,
    stop_local_redis,
)
from warehouse.store.lookup import RolloutView, Route, Routed
from warehouse.store.overlay import MAX_REASON_BYTES, LayerInfo
from warehouse.store.overlays import BaseNotLiveError, Invalidation, OverlayBoundError, Overlays, TooManyIdsError
from warehouse.store.publication import Publication
from warehouse.store.read_cache import ReadCache
from warehouse.store.readers import AsyncScoreReader, ScoreLookup, ScoreReader
from warehouse.store.runs import Mismatch
from warehouse.store.score_store import ScoreStore

__all__ = [
    "MAX_ENTITY_ID_BYTES",
    "MAX_REASON_BYTES",
    "UNAVAILABLE_ERRORS",
    "AsyncClient",
    "AsyncScoreReader",
    "BaseNotLiveError",
    "CleanupReport",
    "Invalidation",
    "LayerInfo",
    "Mismatch",
    "OverlayBoundError",
    "Overlays",
    "Publication",
    "ReadCache",
    "RedisProcess",
    "RolloutView",
    "Route",
    "Routed",
    "RunInfo",
    "RunState",
    "ScoreLookup",
    "ScoreReader",
    "ScoreStore",
    "StoredScore",
    "SyncClient",
    "TooManyIdsError",
    "bucket_of",
    "buckets",
    "connect",
    "connect_async",
    "ensure_local_redis",
    "entity_id_problem",
    "free_port",
    "id_array",
    "is_cluster",
    "older_than_live",
    "running_local_redis",
    "start_redis",
    "stop_local_redis",
    "store_error",
    "store_key",
    "text",
    "unavailable",
    "validate_name",
]
