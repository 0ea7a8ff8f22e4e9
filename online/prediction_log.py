"""The prediction log: every answer goes to a bounded in-process buffer, a background task ships it to Redis.

- ``append`` never blocks and never awaits: a full buffer drops the record and counts it.
- The writer task wakes every ``flush_s`` and sends what accumulated as one stream entry per
  ``MAX_RECORDS_PER_ENTRY`` records (``warehouse.prediction_stream`` encoding), each with one script call that
  appends it and trims the oldest entries beyond ``budget_bytes`` (a bound on the stream's memory, not its entry
  count; the records trimmed before a drain reached them are counted in ``trimmed``). It uses its own connection
  with its own, looser timeout: the log never competes with lookups for the request-path pool.
- ``effective_budget`` keeps the log from crowding out the score runs when it shares their Redis: at most
  ``SHARE_OF_MAXMEMORY`` of that server's ``maxmemory``.
- When Redis is unreachable the records stay buffered (still bounded) and are retried on the next tick.
- ``stop`` flushes what is left (best effort, bounded by the client timeout).

``record`` builds an answer's record: every answer carries its rollout variant; an answer of a model whose
challenger is read in shadow also carries the challenger's score (null: a miss) and the run it was read from
(``warehouse.prediction_stream`` format 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.exceptions import RedisError

from warehouse.prediction_stream import (
    APPEND_SCRIPT,
    MAX_RECORDS_PER_ENTRY,
    MIN_BUDGET_BYTES,
    STREAM_KEY,
    Record,
    encode_entry,
    side_keys,
)
from warehouse.store import AsyncClient, RunInfo, StoredScore

log = logging.getLogger("prescore.online.prediction_log")

SHARE_OF_MAXMEMORY = 0.1


def record(
    body: dict[str, Any],
    latency_us: int,
    ts: float,
    shadow: StoredScore | None = None,
    shadow_run: RunInfo | None = None,
) -> Record:
    """The log record of one answer ``body`` (as the score routes build it); ``shadow_run``: the challenger's run
    read in shadow for it, ``shadow`` its score there (None: a miss)."""
    base = (body["request_id"], body["model"], body["entity_id"], body["model_version"], body["run_id"],
            body["source"], body["score"], latency_us, ts, body["variant"])  # fmt: skip
    if shadow_run is None:
        return base
    return (*base, None if shadow is None else shadow.score, shadow_run.model_version, shadow_run.run_id)


def effective_budget(budget_bytes: int, maxmemory: int | None, shared: bool) -> int:
    """The stream's byte budget: ``budget_bytes``, capped at ``SHARE_OF_MAXMEMORY`` of the server's ``maxmemory``
    when the log shares the score store's Redis and that server has one (0 or None: no limit), never under
    ``MIN_BUDGET_BYTES``."""
    if shared and maxmemory:
        budget_bytes = min(budget_bytes, int(maxmemory * SHARE_OF_MAXMEMORY))
    return max(budget_bytes, MIN_BUDGET_BYTES)


async def server_maxmemory(client: AsyncClient) -> int | None:
    """The server's ``maxmemory`` in bytes (0: none), or None when it does not say (``CONFIG`` refused)."""
    try:
        reply = await client.config_get("maxmemory")
    except (RedisError, OSError):
        return None
    values = [v for v in reply.values() if v is not None] if isinstance(reply, dict) else []
    try:
        return int(values[0]) if values else None
    except (TypeError, ValueError):
        return None


class PredictionLog:
    """See the module docstring. ``dropped``, ``written`` and ``trimmed`` count records and ``stream_bytes`` is the
    stream's accounted size after the last append (metrics read them at scrape)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        budget_bytes: int,
        capacity: int = 100_000,
        flush_s: float = 0.05,
        stream_key: str = STREAM_KEY,
    ) -> None:
        if budget_bytes < MIN_BUDGET_BYTES:
            raise ValueError(f"budget_bytes must be >= {MIN_BUDGET_BYTES}, got {budget_bytes}")
        self.client = client
        self.budget_bytes, self.capacity, self.flush_s, self.stream_key = budget_bytes, capacity, flush_s, stream_key
        self._keys = (stream_key, *side_keys(stream_key))
        self._buffer: list[Record] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.dropped = 0
        self.written = 0
        self.trimmed = 0
        self.stream_bytes = 0
        self.failed_flushes = 0

    def append(self, record: Record) -> None:
        """Queue one record (never blocks); drop and count it when the buffer is full."""
        if len(self._buffer) < self.capacity:
            self._buffer.append(record)
        else:
            self.dropped += 1

    def extend(self, records: list[Record]) -> None:
        room = self.capacity - len(self._buffer)
        if room >= len(records):
            self._buffer.extend(records)
        else:
            self._buffer.extend(records[: max(room, 0)])
            self.dropped += len(records) - max(room, 0)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="prediction-log-writer")

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the writer after its current send, then flush what is left (both bounded by ``timeout_s``)."""
        self._stopping.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(task, timeout_s)
            except TimeoutError:
                log.warning("prediction log writer did not stop within %.1fs; %d records lost", timeout_s, self.pending)
                return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout_s)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_s)
            await self.flush()

    async def flush(self) -> int:
        """Send what is buffered now (records appended meanwhile wait for the next tick); returns records written.

        A failed send puts its records back at the buffer's head (oldest dropped beyond ``capacity``)."""
        pending, self._buffer = self._buffer, []
        for start in range(0, len(pending), MAX_RECORDS_PER_ENTRY):
            batch = pending[start : start + MAX_RECORDS_PER_ENTRY]
            fields = encode_entry(batch)
            args = (self.budget_bytes, fields[b"b"], fields[b"n"], fields[b"v"], fields[b"r"])
            try:
                reply = await self.client.eval(APPEND_SCRIPT, 3, *self._keys, *args)
            except (RedisError, OSError) as exc:
                self.failed_flushes += 1
                if self.failed_flushes == 1 or self.failed_flushes % 100 == 0:
                    log.warning("prediction log not written (%s); %d records kept", type(exc).__name__, len(pending))
                keep = pending[start:] + self._buffer
                self.dropped += max(0, len(keep) - self.capacity)
                self._buffer = keep[-self.capacity :]
                return start
            self.written += len(batch)
            if int(reply[2]) and not self.trimmed:
                log.warning(
                    "prediction log %s reached its budget of %.0f MB: its oldest answers are trimmed before a drain "
                    "reached them (counted in prescore_prediction_log_trimmed); drain it more often, raise "
                    "PRESCORE_PREDICTION_LOG_MAX_MB or give it its own Redis (PRESCORE_PREDICTION_LOG_URL)",
                    self.stream_key, self.budget_bytes / (1 << 20),
                )  # fmt: skip
            self.trimmed += int(reply[2])
            self.stream_bytes = int(reply[3])
        return len(pending)
