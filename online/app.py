"""The online reader's HTTP surface: ``create_app`` (FastAPI factory), its lifespan, and its routes.

Routes (``/v1/*`` need an API or admin key when API keys are configured; ``/v1/admin/*`` always needs an admin key):

- ``GET /v1/scores/{model}/{entity_id}``: the score of one entity (precomputed, stale-flagged or the default);
- ``POST /v1/scores/{model}``: the same, with ``features`` for the fallback model;
- ``POST /v1/scores/{model}/batch``: many entities in one Redis round trip;
- ``GET /v1/models``: each served model's current run, age, freshness, fallback and rollout;
- ``POST /v1/admin/reload``: reload the models file and fallbacks (refused, 409, when the new ones are unusable,
  e.g. a rollout naming a version that is no registered challenger);
- ``POST /v1/admin/rollout/{model}/abort``: stop the model's canary (and shadow reads) on every replica: the rollout
  override 0 in Redis, applied to this process at once (409 without a rollout, 503 when Redis was not written);
- ``POST /v1/admin/invalidate/{model}``: ``{"entity_ids": [...], "reason": "..."}`` marks entities of the live run
  invalid until a later run rescores them (``jobs.invalidate``); 413 beyond ``PRESCORE_INVALIDATE_MAX_IDS`` ids;
- ``GET /healthz`` (liveness), ``GET /readyz`` (readiness: 503 until models are loaded and Redis answered),
  ``GET /metrics`` (Prometheus), ``GET /docs`` and ``GET /openapi.json`` (the API documentation).

Routes delegate to ``online.service.ScoringService`` (the ladder, metrics, prediction log); admission (shed /
auth / size) runs first as middleware. Hot routes use ``_DirectRoute``: documented by FastAPI like any route, but
called as ``endpoint(request, **path_params)`` without dependency solving or response validation; the endpoints
validate their own input (``online.validation``). The pydantic models here document the API (OpenAPI) and are
never on the hot path.

The hottest route, ``GET /v1/scores/{model}/{entity_id}``, skips most of the middleware stack (``_FastGet``, the
first middleware inside Starlette's error middleware: about 12 µs of the ~25 µs the app spent on a cached answer,
measured in process). It matches the path as the route would (the model up to the next ``/``, the rest the id),
asks admission's ``check`` and counts the request in flight as the admission middleware does, and sends what
``ScoringService.score_one`` returns. Anything else goes down the stack as before: a rejection, and an error
raised by ``score_one`` (validation, an unknown model; raised before anything was sent or looked up) are handed to
the rest of the stack, which answers the request from scratch with the same status, body and metrics as ever.

Garbage collection (``PRESCORE_GC_FREEZE``, on by default): once the lifespan has started the service (models,
fallbacks and the app loaded), ``gc.freeze()`` moves every object alive then out of the collector's reach, and the
young generation's threshold is raised (``GC_THRESHOLD``); both are undone when the lifespan ends. Under
concurrent load the objects of requests in flight survive young collections, reach the oldest generation and
trigger a full collection every second or so; without the freeze each of those walked the whole start-up heap
(50-90 ms on the benchmark machine, every request in flight waiting), which made prescore's p99 at 32 connections
several times its p50. Frozen, a full collection walks only what the traffic left.

``/docs`` (Swagger UI) loads its JavaScript and CSS from the app itself (``DOCS_ASSETS``, shipped by the
``fastapi-offline`` package), never from a CDN, so it renders in a closed network. Operations are grouped under
the tags of ``TAGS``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Path, Request
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from online import errors
from online.admission import Admission
from online.errors import ErrorBody, InvalidInput
from online.metrics import CONTENT_TYPE
from online.policy import Source
from online.responses import JSON
from online.service import ScoringService
from online.settings import OnlineSettings
from online.validation import json_object
from warehouse.store import MAX_ENTITY_ID_BYTES

DOCS_ASSETS = "/docs/assets"  # swagger-ui-bundle.js, swagger-ui.css, favicon.png
SCORES_PREFIX = "/v1/scores/"
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
    | {f"{DOCS_ASSETS}/{name}" for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")}
)
GC_THRESHOLD = (10_000, 10, 10)  # young collections ~14x rarer than the default (700, 10, 10): fewer promotions
TAGS = [
    {"name": "scores", "description": "Scores of entities: precomputed, from the fallback model, or the default."},
    {"name": "models", "description": "The served models: current run, age, staleness, fallback."},
    {"name": "operations", "description": "Liveness, readiness, metrics, the admin reload and the rollout abort."},
]

# ---------------------------------------------------------------- documentation models (never on the hot path)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_id: str
    # a number per fallback feature; true/false for a bool feature, a string for a category feature
    features: dict[str, float | bool | str] | None = None


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_ids: list[str]
    features: dict[str, dict[str, float | bool | str]] | None = None


class ScoreAnswer(BaseModel):
    model: str
    entity_id: str
    score: float
    source: Source
    stale: bool
    age_s: float | None
    as_of: datetime | None
    model_version: str | None
    run_id: str | None
    variant: Literal["champion", "challenger"]  # the rollout variant that answered
    policy_version: str
    fallback_used: bool
    request_id: str
    decision: str | None = None


class BatchAnswer(BaseModel):
    model: str
    request_id: str
    results: list[ScoreAnswer]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody} for s in statuses}


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


class _AnyText(PathConvertor):
    """Like ``path`` but also matching control characters (``%0A``...), so a bad id gets 422, not 404."""

    regex = "(?s:.*)"


class _DirectRoute(APIRoute):
    """An ``APIRoute`` documented as usual, called as ``await endpoint(request, **path_params)`` → ``Response``."""

    def __init__(self, path: str, endpoint: Callable[..., Coroutine[Any, Any, Response]], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(Request(scope, receive, send), **scope["path_params"])
            await response(scope, receive, send)

        self.app = app


FastGet = Callable[[Scope, Receive, Send, str, str], Awaitable[bool]]


class _FastGet:
    """Pure-ASGI middleware: the fast path of ``GET /v1/scores/{model}/{entity_id}`` (see the module docstring).
    ``answer`` answers it, or returns False having sent nothing, and the request goes down the stack."""

    def __init__(self, app: ASGIApp, *, answer: FastGet) -> None:
        self.app, self.answer = app, answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(SCORES_PREFIX):
                model, slash, entity_id = path[len(SCORES_PREFIX) :].partition("/")
                if slash and model and await self.answer(scope, receive, send, model, entity_id):
                    return
        await self.app(scope, receive, send)


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:  # the fast path's gate wraps no app
    raise AssertionError("the admission gate of the fast path is never called as an app")


# ---------------------------------------------------------------- garbage collection (see the module docstring)

_frozen: list[tuple[int, int, int]] = []  # the thresholds found by each app that froze and is still running


def _freeze_gc() -> None:
    """Freeze what is alive now out of the collector and raise its young threshold (every app that starts does;
    the thresholds the first one found come back when the last one stops)."""
    gc.collect()
    gc.freeze()
    _frozen.append(gc.get_threshold())
    gc.set_threshold(*GC_THRESHOLD)


def _unfreeze_gc() -> None:
    threshold = _frozen.pop()
    if not _frozen:
        gc.set_threshold(*threshold)
        gc.unfreeze()


# ---------------------------------------------------------------- the app


def create_app(settings: OnlineSettings | None = None, *, clock: Callable[[], float] = time.time) -> FastAPI:
    """The online reader app. Nothing is opened here: the lifespan loads models and opens Redis.

    ``clock`` (epoch seconds) is where the app reads the time to age scores; tests move it."""
    settings = settings or OnlineSettings()
    service = ScoringService(settings, clock=clock)
    register_url_convertor("any_text", _AnyText())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        if settings.gc_freeze:
            _freeze_gc()
        try:
            yield
        finally:
            if settings.gc_freeze:
                _unfreeze_gc()
            await service.stop()

    admission = dict(max_in_flight=settings.max_in_flight, max_body_bytes=settings.max_body_bytes, stats=service.stats,
                     max_discard_bytes=settings.max_discard_bytes, discard_timeout_s=settings.discard_timeout_s,
                     api_keys=settings.api_keys, admin_keys=settings.admin_keys, open_paths=OPEN_PATHS,
                     on_reject=service.metrics.error)  # fmt: skip
    gate = Admission(_no_app, **admission)  # type: ignore[arg-type]

    async def fast_get(scope: Scope, receive: Receive, send: Send, model: str, entity_id: str) -> bool:
        """``get_score`` without the rest of the stack; False: nothing sent, the stack answers."""
        if gate.check(scope) is not None:
            return False
        stats = service.stats
        stats.in_flight += 1
        try:
            scope["path_params"] = {"model": model, "entity_id": entity_id}
            try:
                response = await service.score_one(Request(scope, receive, send), model, entity_id, None, "get_score")
            except Exception:
                return False
            await response(scope, receive, send)
        finally:
            stats.in_flight -= 1
        return True

    app = FastAPIOffline(
        title="prescore online reader",
        version="1",
        description="Precomputed scores with a staleness ladder: precomputed → fallback model → safe default.",
        openapi_tags=TAGS,
        lifespan=lifespan,
        middleware=[Middleware(_FastGet, answer=fast_get), Middleware(Admission, **admission)],  # type: ignore[arg-type]
        redoc_url=None,
        static_url=DOCS_ASSETS,
    )
    app.state.service = service
    errors.install(app, on_error=service.metrics.error)
    scored = _errors(401, 404, 413, 422, 503)

    async def get_score(
        request: Request,
        model: str = Path(description="model name, as declared in the models file"),
        entity_id: str = Path(description=f"entity id: 1-{MAX_ENTITY_ID_BYTES} UTF-8 bytes, no control characters"),
    ) -> Response:
        """Score of one entity: precomputed when fresh enough, else stale (flagged) or the model's default."""
        return await service.score_one(request, model, entity_id, None, "get_score")

    async def post_score(request: Request, model: str = Path(description="model name")) -> Response:
        """Score of one entity; ``features`` feed the fallback model when the precomputed score is missing or
        too stale (they are validated against the model's fallback features and contract ranges)."""
        body = await json_object(request, frozenset({"entity_id", "features"}))
        if "entity_id" not in body:
            raise InvalidInput("entity_id", "is required")
        return await service.score_one(request, model, body["entity_id"], body.get("features"), "post_score")

    async def post_batch(request: Request, model: str = Path(description="model name")) -> Response:
        """Scores of many entities in one Redis round trip; fallback misses scored in one call."""
        return await service.score_batch(request, model)

    def add(path: str, endpoint: Any, method: str, **kw: Any) -> None:  # hot routes first: matched in order
        app.router.routes.insert(0, _DirectRoute(path, endpoint, methods=[method], tags=["scores"], **kw))

    add("/v1/scores/{model}/batch", post_batch, "POST", responses={200: {"model": BatchAnswer}, **scored},
        openapi_extra=_body_doc(BatchRequest), summary="Score a batch")  # fmt: skip
    add("/v1/scores/{model}", post_score, "POST", responses={200: {"model": ScoreAnswer}, **scored},
        openapi_extra=_body_doc(ScoreRequest), summary="Score one entity, with fallback features")  # fmt: skip
    add("/v1/scores/{model}/{entity_id:any_text}", get_score, "GET", responses={200: {"model": ScoreAnswer}, **scored},
        summary="Score one entity")  # fmt: skip

    @app.get("/v1/models", responses=_errors(401), tags=["models"],
             summary="Served models: current run, age, staleness, fallback")  # fmt: skip
    async def models() -> Response:
        return Response(orjson.dumps(await service.models(), option=orjson.OPT_UTC_Z), media_type=JSON)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> Response:
        return Response(b'{"status":"alive"}', media_type=JSON)

    @app.get("/readyz", responses=_errors(503), tags=["operations"],
             summary="Readiness: models loaded and warmed, Redis answered")  # fmt: skip
    async def readyz() -> Response:
        status, detail = await service.readiness()
        headers = {"Retry-After": "1"} if status == 503 else None
        return Response(orjson.dumps(detail), status_code=status, media_type=JSON, headers=headers)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {}}}})  # fmt: skip
    async def metrics() -> Response:
        await service.models()  # refreshes each model's current run (cached pointer) for the age gauge
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/admin/reload", responses=_errors(401, 409), tags=["operations"],
              summary="Reload the models file and fallbacks")  # fmt: skip
    async def reload() -> Response:
        return Response(orjson.dumps(await service.reload()), media_type=JSON)

    @app.post("/v1/admin/rollout/{model}/abort", responses=_errors(401, 404, 409, 503), tags=["operations"],
              summary="Abort a model's canary on every replica (rollout override 0)")  # fmt: skip
    async def abort_rollout(model: str = Path(description="model name")) -> Response:
        body = await service.abort_rollout(model)
        return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type=JSON)

    @app.post("/v1/admin/invalidate/{model}", responses=_errors(401, 404, 409, 413, 422, 503), tags=["operations"],
              summary="Invalidate entities of the live run until they are rescored")  # fmt: skip
    async def invalidate(request: Request, model: str = Path(description="model name")) -> Response:
        body = await service.invalidate(request, model)
        return Response(orjson.dumps(body), media_type=JSON)

    return app
