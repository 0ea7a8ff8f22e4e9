"""The pre-encoded JSON answer: sent as given, with its length, content type and request id, status 200."""

from __future__ import annotations

import asyncio
from typing import Any

from online.responses import JSON, JsonResponse

BODY = b'{"model":"churn","score":0.5}'


def test_headers_are_built_from_the_bytes_and_the_request_id() -> None:
    response = JsonResponse(BODY, "trace-42")
    assert response.status_code == 200 and response.body == BODY and response.media_type == JSON
    assert dict(response.headers) == {
        "content-length": str(len(BODY)),
        "content-type": "application/json",
        "x-request-id": "trace-42",
    }


def test_the_asgi_messages_carry_the_bytes_unchanged() -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(JsonResponse(BODY, "r-1")({"type": "http"}, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200 and (b"x-request-id", b"r-1") in sent[0]["headers"]
    assert sent[1]["body"] == BODY
