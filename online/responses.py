"""The score routes' response type: JSON bytes encoded by the caller, sent with their ``X-Request-ID``.

``JsonResponse`` skips Starlette's ``Response.__init__`` (rendering, header normalisation): the score routes
encode their body once with orjson and hand the bytes over as they are, on the hot path.
"""

from __future__ import annotations

from starlette.responses import Response

JSON = "application/json"


class JsonResponse(Response):
    """A 200 JSON answer with its ``X-Request-ID`` header, headers built directly (hot path)."""

    media_type = JSON

    def __init__(self, content: bytes, request_id: str) -> None:
        self.status_code = 200
        self.background = None
        self.body = content
        self.raw_headers = [
            (b"content-length", b"%d" % len(content)),
            (b"content-type", b"application/json"),
            (b"x-request-id", request_id.encode("latin-1")),
        ]
