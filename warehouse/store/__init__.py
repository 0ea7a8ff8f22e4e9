"""The Redis score store: published scores keyed for lookups, loaded run by run and switched atomically.

Modules, from the bottom up: ``connection`` (clients for one node or a Redis Cluster, and the errors that mean
"unavailable"), ``layout`` (keys, entity ids, buckets and the run record), ``wire`` (encoding a batch into
pipelined ``HSET`` commands), ``pipeline`` (sending them with bounded replies and cluster redirects), ``writer``
(loading one run), ``readers`` (lookups, blocking and asyncio), ``score_store`` (the run lifecycle: create, load,
finalize, publish, roll back, clean up) and ``local_server`` (an embedded ``redis-server`` for the demo and tests).

Other packages import from here, not from the modules.
"""

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
from warehouse.store.layout import (
    MAX_ENTITY_ID_BYTES,
    RunInfo,
    RunState,
    StoredScore,
    bucket_of,
    buckets,
    entity_id_problem,
    id_array,
    store_key,
    validate_name,
)
from warehouse.store.local_server import (
    RedisProcess,
    ensure_local_redis,
    free_port,
    running_local_redis,
    start_redis,
    stop_local_redis,
)
from warehouse.store.readers import AsyncScoreReader, ScoreLookup, ScoreReader
from warehouse.store.score_store import CleanupReport, Mismatch, Publication, ScoreStore

__all__ = [
    "MAX_ENTITY_ID_BYTES",
    "UNAVAILABLE_ERRORS",
    "AsyncClient",
    "AsyncScoreReader",
    "CleanupReport",
    "Mismatch",
    "Publication",
    "RedisProcess",
    "RunInfo",
    "RunState",
    "ScoreLookup",
    "ScoreReader",
    "ScoreStore",
    "StoredScore",
    "SyncClient",
    "bucket_of",
    "buckets",
    "connect",
    "connect_async",
    "ensure_local_redis",
    "entity_id_problem",
    "free_port",
    "id_array",
    "is_cluster",
    "running_local_redis",
    "start_redis",
    "stop_local_redis",
    "store_error",
    "store_key",
    "text",
    "unavailable",
    "validate_name",
]
