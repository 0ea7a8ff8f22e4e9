"""Settings of the online reader: ``Settings`` plus the ``PRESCORE_*`` knobs of the HTTP service.

Only settings modules read the environment. API keys are configured as sha256 hex digests (never the keys
themselves), comma-separated; an empty list turns that check off (``admin_key_hashes`` empty: admin routes are
refused to everyone).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from warehouse.settings import Settings

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class OnlineSettings(Settings):
    """Settings of one online reader process.

    - ``redis_timeout_ms``: socket timeout of every Redis call on the request path (inside the latency budget).
    - ``max_in_flight``: concurrent requests beyond which new ones get 503 + ``Retry-After``.
    - ``batch_max``: most entity ids in one batch request (413 beyond).
    - ``api_key_hashes`` / ``admin_key_hashes``: comma-separated sha256 hex of accepted ``X-API-Key`` values.
    - ``breaker_failures`` / ``breaker_reset_s``: consecutive Redis failures that open the circuit breaker, and
      how long it stays open before one probe is let through.
    - ``prediction_log`` / ``prediction_log_maxlen``: append every answer to the Redis prediction stream, capped
      at about that many entries.
    - ``max_body_bytes``: largest accepted request body (413 beyond).
    """

    redis_timeout_ms: int = Field(default=50, ge=1, le=60_000)
    max_in_flight: int = Field(default=256, ge=1)
    batch_max: int = Field(default=500, ge=1, le=100_000)
    api_key_hashes: str = ""
    admin_key_hashes: str = ""
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=2.0, gt=0)
    prediction_log: bool = True
    prediction_log_maxlen: int = Field(default=1_000_000, ge=1)
    max_body_bytes: int = Field(default=1 << 20, ge=64)

    @field_validator("api_key_hashes", "admin_key_hashes")
    @classmethod
    def _sha256_list(cls, value: str) -> str:
        for item in _split(value):
            if not _SHA256_HEX.fullmatch(item):
                raise ValueError(
                    "must be comma-separated sha256 hex digests (64 characters 0-9a-f), e.g. the output of "
                    "`printf %s KEY | sha256sum`; never the keys themselves"
                )
        return value

    @property
    def api_keys(self) -> tuple[str, ...]:
        """sha256 hex of accepted API keys (empty: API-key auth off)."""
        return _split(self.api_key_hashes)

    @property
    def admin_keys(self) -> tuple[str, ...]:
        """sha256 hex of accepted admin keys (empty: admin routes refused)."""
        return _split(self.admin_key_hashes)


def _split(value: str) -> tuple[str, ...]:
    return tuple(item.strip().lower() for item in value.split(",") if item.strip())
