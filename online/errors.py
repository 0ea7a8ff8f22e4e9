"""Errors of the online reader and their one mapping to HTTP.

Handlers raise an ``ApiError`` subclass; ``install`` maps those (and FastAPI's / Starlette's own errors) to
``{"error": {"code": ..., "message": ...}}`` once, at the edge. Messages are written for the caller; the text of
an internal exception never reaches a response (an unexpected one becomes a generic 500, logged here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Send

log = logging.getLogger("prescore.online")


class ApiError(Exception):
    """An answer other than 2xx: ``status``, a stable ``code`` and a message for the caller."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    headers: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ApiError):
    status, code = 404, "not_found"


class InvalidInput(ApiError):
    """422; ``field`` is the offending field's path (``entity_id``, ``features.f03``...)."""

    status, code = 422, "invalid_input"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class BodyTooLarge(PayloadTooLarge):
    """The request body itself is over the size limit: the connection closes after the answer (its unread rest
    would otherwise be parsed as the next request)."""

    headers = (("Connection", "close"),)

    def __init__(self, message: str, declared: int | None = None) -> None:
        super().__init__(message)
        self.declared = declared  # the request's Content-Length; None: a chunked body that grew past the limit


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"
    headers = (("WWW-Authenticate", "X-API-Key"),)


class NotReady(ApiError):
    status, code = 503, "not_ready"
    headers = (("Retry-After", "1"),)


class Overloaded(ApiError):
    status, code = 503, "overloaded"
    headers = (("Retry-After", "1"),)


class ReloadFailed(ApiError):
    status, code = 409, "reload_failed"


class NoRollout(ApiError):
    """409: a rollout operation on a model whose models-file entry has no ``rollout``."""

    status, code = 409, "no_rollout"


class InvalidationRefused(ApiError):
    """409: an invalidation the store refused (no live run, or the overlay layer is full); nothing was changed."""

    status, code = 409, "invalidation_refused"


class StoreUnavailable(ApiError):
    """503: an admin operation that must write to Redis could not (the message says what was done anyway)."""

    status, code = 503, "store_unavailable"
    headers = (("Retry-After", "1"),)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Body of every error response (documentation model)."""

    error: ErrorDetail


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(code, message), status_code=status, headers=headers, media_type="application/json")


def api_error_response(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, dict(exc.headers))


async def send_error(send: Send, exc: ApiError, more_body: bool = False) -> None:
    """Send ``exc`` as a response from pure-ASGI middleware (before the app ran); with ``more_body`` the whole
    body is written but the response stays open until the caller sends a last, empty body message."""
    body = error_body(exc.code, exc.message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": more_body})


_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}


def _validation_message(errors: list[Any]) -> str:
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query", "header"))
    msg = "body is not valid JSON" if first.get("type") == "json_invalid" else str(first.get("msg", "invalid"))
    return f"{loc}: {msg}" if loc else msg


def install(app: FastAPI, on_error: Callable[[int, str], None] = lambda status, code: None) -> None:
    """Register the handlers that map every error to the JSON error body; ``on_error(status, code)`` counts."""

    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        on_error(exc.status, exc.code)
        return api_error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        on_error(422, "invalid_input")
        return error_response(422, "invalid_input", _validation_message(list(exc.errors())))

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STARLETTE_CODES.get(exc.status_code, "http_error")
        message = {404: "no such route", 405: "method not allowed on this route"}.get(exc.status_code, code)
        on_error(exc.status_code, code)
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        on_error(500, "internal")
        return error_response(500, "internal", "internal error; see the server log")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
