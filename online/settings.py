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
    - ``prediction_log``: append every answer to the Redis prediction stream (``PRESCORE_PREDICTION_LOG_URL``,
      default the score store's Redis); ``prediction_log_max_mb``: the stream's memory budget in MiB. The
      oldest answers beyond it are trimmed (and counted) before a drain reaches them. Default 256: about 1.4M
      answers (~190 accounted bytes each), an hour of ~390 answers/s between the hourly drains; when the log
      shares the score store's Redis and that server has a ``maxmemory``, the budget is also capped at 10 % of
      it, so the log never crowds out the score runs.
    - ``store_check_s``: how often (seconds) the watch on the score store (``online.store_watch``) checks, off the
      request path, that every model's live run is in Redis (0: off); ``catalog_refresh_s``: how often it re-reads
      the catalog's live pointers, one query per model in a worker thread (0: never read the catalog).
    - ``batch_metrics_ttl_s``: how long (seconds) ``/metrics`` serves the batch figures read from the catalog
      (monitor drift and quality, failed runs, publishes: ``online.batch_metrics``) before reading them again, in a
      worker thread (0: not exported).
    - ``read_cache``: answer lookups from a per-process cache of the scores already read, keyed by run
      (``warehouse.store.ReadCache``: a published run never changes, and a pointer change moves lookups to other
      keys); ``read_cache_max_entries`` / ``read_cache_max_mb``: its bounds (ids, including cached misses, and
      their approximate size in MiB), the least recently used evicted beyond either. Defaults: on, 100,000 ids
      (about 30 MB of 13-byte ids, 91 % of requests on a Zipf s=1.1 workload over 1M ids), 64 MiB.
    - ``gc_freeze``: once started, freeze the start-up heap out of the garbage collector and make young
      collections rarer (``online.app``): full collections then walk only what the traffic left, instead of
      pausing every request in flight for tens of milliseconds. Off: the interpreter's defaults.
    - ``max_body_bytes``: largest accepted request body (413 beyond).
    - ``max_discard_bytes`` / ``discard_timeout_s``: after a 413 for body size, the rest of the body is read and
      dropped while the whole body stays within ``max_discard_bytes`` and the reading within ``discard_timeout_s``,
      then the connection closes; so a client that writes its whole body before reading still reads the 413
      (closing with unread bytes makes the kernel reset the connection: the client sees a broken pipe or a reset
      instead). A body declared or grown beyond the bound, or one that stalls past the timeout, is cut off at
      once. 0 bytes: never drain. Defaults: 64 MiB (64 times the default body limit: a batch far past it still
      gets its answer, while what one refused request can make the server read stays bounded) and 30 s (nginx's
      ``lingering_time``).
    """

    redis_timeout_ms: int = Field(default=50, ge=1, le=60_000)
    max_in_flight: int = Field(default=256, ge=1)
    batch_max: int = Field(default=500, ge=1, le=100_000)
    api_key_hashes: str = ""
    admin_key_hashes: str = ""
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=2.0, gt=0)
    prediction_log: bool = True
    prediction_log_max_mb: float = Field(default=256.0, ge=1.0, le=1 << 20)
    prediction_log_maxlen: int | None = None  # replaced by prediction_log_max_mb: refused when set
    store_check_s: float = Field(default=5.0, ge=0, le=3600)
    catalog_refresh_s: float = Field(default=30.0, ge=0, le=86_400)
    batch_metrics_ttl_s: float = Field(default=30.0, ge=0, le=86_400)
    read_cache: bool = True
    read_cache_max_entries: int = Field(default=100_000, ge=1, le=100_000_000)
    read_cache_max_mb: float = Field(default=64.0, ge=1.0, le=1 << 20)
    gc_freeze: bool = True
    max_body_bytes: int = Field(default=1 << 20, ge=64)
    max_discard_bytes: int = Field(default=64 << 20, ge=0)
    discard_timeout_s: float = Field(default=30.0, gt=0, le=600)

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

    @field_validator("prediction_log_maxlen")
    @classmethod
    def _maxlen_replaced(cls, value: int | None) -> None:
        if value is not None:
            raise ValueError(
                "PRESCORE_PREDICTION_LOG_MAXLEN counted stream entries (up to 2,000 answers each), which bounded "
                "nothing: unset it and set PRESCORE_PREDICTION_LOG_MAX_MB (the stream's memory budget, MiB)"
            )
        return None

    @property
    def prediction_log_budget_bytes(self) -> int:
        return int(self.prediction_log_max_mb * (1 << 20))

    @property
    def read_cache_max_bytes(self) -> int:
        return int(self.read_cache_max_mb * (1 << 20))

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
