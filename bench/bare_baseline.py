"""The bare baseline of the online benchmarks, lean: Starlette + orjson + redis.asyncio and nothing else imported.

``bench_online`` and ``bench_read_cache`` serve it as ``bare_baseline:make_baseline``. It lives apart from them because
their modules import numpy, xgboost and the warehouse: a heap the garbage collector walks in every full collection,
pauses that the baseline's own tail latency would then pay. This one imports only what it serves with, so its p99 is
what a bare app's is.
The key and bucket rules are the store's (``warehouse.store.keys.store_key``, ``warehouse.store.ids.bucket_of``),
written out here to keep the import light; ``bench_read_cache`` checks that its answers equal prescore's.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any


def make_baseline() -> Any:
    """GET /v1/scores/{model}/{entity_id}: one HGET of the id's bucket of the run in ``BENCH_RUN_ID`` → orjson."""
    import orjson
    import redis.asyncio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    url, run_id, n_buckets = os.environ["BENCH_REDIS_URL"], os.environ["BENCH_RUN_ID"], int(os.environ["BENCH_BUCKETS"])
    client = redis.asyncio.Redis.from_url(url)

    async def score(request: Request) -> Response:
        model, entity_id = request.path_params["model"], request.path_params["entity_id"]
        raw = entity_id.encode()
        value = await client.hget(f"ps:s:{model}:{run_id}:{zlib.crc32(raw) % n_buckets}", raw)  # type: ignore[misc]
        body = {
            "model": model,
            "entity_id": entity_id,
            "score": None if value is None else struct.unpack("<f", value)[0],
        }
        return Response(orjson.dumps(body), media_type="application/json")

    async def healthz(_: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    return Starlette(routes=[Route("/v1/scores/{model}/{entity_id}", score), Route("/healthz", healthz)])
