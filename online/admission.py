"""Admission control, as one pure-ASGI middleware (no ``BaseHTTPMiddleware``): who gets in, and how much.

In order, for every HTTP request outside ``open_paths`` (health, readiness, metrics, docs):

1. load shedding: ``max_in_flight`` requests already being answered → 503 + ``Retry-After: 1``;
2. API keys (``X-API-Key``, compared as sha256 hex with ``hmac.compare_digest``): with ``api_keys`` configured,
   ``/v1/`` routes need one of them (or an admin key); ``/v1/admin/`` routes always need an admin key → 401;
3. body size: a declared ``Content-Length`` above ``max_body_bytes`` → 413 before reading; a body that grows
   past it while read raises ``PayloadTooLarge`` inside the app (mapped to 413 by the error handlers).

Keys are never logged; rejections are reported through ``on_reject(status, code)`` for metrics.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from online.errors import ApiError, Overloaded, PayloadTooLarge, Unauthorized, send_error

ADMIN_PREFIX = "/v1/admin/"
API_PREFIX = "/v1/"


def key_matches(presented: bytes, hashes: Iterable[str]) -> bool:
    """Whether sha256(presented) is one of ``hashes`` (every candidate compared, in constant time each)."""
    digest = hashlib.sha256(presented).hexdigest()
    found = False
    for candidate in hashes:
        found |= hmac.compare_digest(digest, candidate)
    return found


class AdmissionStats:
    """Shared with the app (the middleware is built lazily by Starlette): requests being answered now."""

    __slots__ = ("in_flight",)

    def __init__(self) -> None:
        self.in_flight = 0


class Admission:
    """The middleware (see the module docstring); it keeps the in-flight count in ``stats``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        max_body_bytes: int,
        api_keys: tuple[str, ...],
        admin_keys: tuple[str, ...],
        open_paths: frozenset[str],
        stats: AdmissionStats,
        on_reject: Callable[[int, str], None] = lambda status, code: None,
    ) -> None:
        self.app = app
        self.max_in_flight, self.max_body_bytes = max_in_flight, max_body_bytes
        self.api_keys, self.admin_keys = api_keys, admin_keys
        self.open_paths = open_paths
        self.on_reject = on_reject
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        rejection = self._check(scope)
        if rejection is not None:
            self.on_reject(rejection.status, rejection.code)
            await send_error(send, rejection)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            receive = _limited(receive, self.max_body_bytes)
        stats = self.stats
        stats.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            stats.in_flight -= 1

    def _check(self, scope: Scope) -> ApiError | None:
        if self.stats.in_flight >= self.max_in_flight:
            return Overloaded(f"{self.max_in_flight} requests already in flight (the limit); retry in a second")
        path: str = scope["path"]
        admin = path.startswith(ADMIN_PREFIX)
        need_key = admin or (bool(self.api_keys) and path.startswith(API_PREFIX))
        key = length = None
        if need_key or scope["method"] != "GET":
            for name, value in scope["headers"]:
                if name == b"x-api-key":
                    key = value
                elif name == b"content-length":
                    length = value
        if need_key:
            if admin and not self.admin_keys:
                return Unauthorized("admin routes are disabled: no admin keys are configured")
            if not key:
                return Unauthorized("missing X-API-Key header")
            allowed = self.admin_keys if admin else self.api_keys + self.admin_keys
            if not key_matches(key, allowed):
                return Unauthorized("admin key required" if admin else "invalid API key")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_body_bytes:
                return PayloadTooLarge(f"request body is {declared} bytes; at most {self.max_body_bytes} accepted")
        return None


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``PayloadTooLarge`` once more than ``limit`` body bytes arrived (chunked bodies)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        return message

    return wrapped
