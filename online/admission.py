"""Admission control, as one pure-ASGI middleware (no ``BaseHTTPMiddleware``): who gets in, and how much.

In order, for every HTTP request outside ``open_paths`` (health, readiness, metrics, docs):

1. load shedding: ``max_in_flight`` requests already being answered → 503 + ``Retry-After: 1``;
2. API keys (``X-API-Key``, compared as sha256 hex with ``hmac.compare_digest``): with ``api_keys`` configured,
   ``/v1/`` routes need one of them (or an admin key); ``/v1/admin/`` routes always need an admin key → 401;
3. body size: a declared ``Content-Length`` above ``max_body_bytes`` → 413 before reading; a body that grows
   past it while read raises ``BodyTooLarge`` inside the app (mapped to 413 by the error handlers).

After a body-size 413 the rest of the body is read and dropped (``discard_body``: while the whole body stays
within ``max_discard_bytes`` and for at most ``discard_timeout_s``), then the connection closes (the 413 says
``Connection: close``). Closing a socket with unread request bytes makes the kernel answer with a reset, and a
client still writing its body would see a broken pipe or a reset instead of the 413. A declared body gets its
413 at once and is drained after it (a client that reads while it writes can stop early); a chunked body is
drained before its 413 is written. A declared body beyond the bound is not drained at all, nor one sent with
``Expect: 100-continue`` (that client sends nothing before it is invited, and the 413 is the answer): the
connection closes right after the 413. Bodies within ``max_body_bytes`` pay nothing for this: the only
per-message work is the running total that ``_limited`` keeps.

Keys are never logged; rejections are reported through ``on_reject(status, code)`` for metrics. ``check`` is the
decision alone (no I/O, nothing counted): the app's fast path for single GETs (``online.app``) asks it before it
answers without the middleware stack, and hands every rejection to the stack.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from online.errors import ApiError, BodyTooLarge, Overloaded, Unauthorized, send_error

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
        max_discard_bytes: int,
        discard_timeout_s: float,
        api_keys: tuple[str, ...],
        admin_keys: tuple[str, ...],
        open_paths: frozenset[str],
        stats: AdmissionStats,
        on_reject: Callable[[int, str], None] = lambda status, code: None,
    ) -> None:
        self.app = app
        self.max_in_flight, self.max_body_bytes = max_in_flight, max_body_bytes
        self.max_discard_bytes, self.discard_timeout_s = max_discard_bytes, discard_timeout_s
        self.api_keys, self.admin_keys = api_keys, admin_keys
        self.open_paths = open_paths
        self.on_reject = on_reject
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        rejection = self.check(scope)
        if rejection is not None:
            self.on_reject(rejection.status, rejection.code)
            if isinstance(rejection, BodyTooLarge):
                await self._refuse_declared_body(scope, receive, send, rejection)
            else:
                await send_error(send, rejection)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            receive = _limited(receive, self.max_body_bytes, self.max_discard_bytes, self.discard_timeout_s)
        stats = self.stats
        stats.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            stats.in_flight -= 1

    def check(self, scope: Scope) -> ApiError | None:
        """The rejection of a request outside ``open_paths`` (shedding, API keys, declared body size), or None."""
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
                message = f"request body is {declared} bytes; at most {self.max_body_bytes} accepted"
                return BodyTooLarge(message, declared)
        return None

    async def _refuse_declared_body(self, scope: Scope, receive: Receive, send: Send, exc: BodyTooLarge) -> None:
        """The 413 at once, then (when the declared body fits the bound) its bytes dropped, then the close."""
        await send_error(send, exc, more_body=True)
        assert exc.declared is not None
        if exc.declared <= self.max_discard_bytes and not _expects_continue(scope):
            await discard_body(receive, self.max_discard_bytes, self.discard_timeout_s)
        await send({"type": "http.response.body", "body": b""})


async def discard_body(receive: Receive, budget: int, timeout_s: float, read: int = 0) -> bool:
    """Read and drop request body messages until the body ends (True), or until more than ``budget`` bytes were
    read in all (``read`` of them before the call), ``timeout_s`` passed or the client went away (False)."""
    try:
        async with asyncio.timeout(timeout_s):
            while read <= budget:
                message = await receive()
                if message["type"] != "http.request":
                    return False
                read += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return read <= budget
    except TimeoutError:
        pass
    return False


def _expects_continue(scope: Scope) -> bool:
    return any(k == b"expect" and v.lower() == b"100-continue" for k, v in scope["headers"])


def _limited(receive: Receive, limit: int, discard_bytes: int, discard_timeout_s: float) -> Receive:
    """``receive`` that raises ``BodyTooLarge`` once more than ``limit`` body bytes arrived (chunked bodies),
    after dropping the rest of the body (``discard_body`` within ``discard_bytes`` / ``discard_timeout_s``)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                if message.get("more_body", False):
                    await discard_body(receive, discard_bytes, discard_timeout_s, seen)
                raise BodyTooLarge(f"request body exceeds {limit} bytes")
        return message

    return wrapped
