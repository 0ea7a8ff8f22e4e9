"""The prediction log: every answer goes to a bounded in-process buffer, a background task ships it to Redis.

- ``append`` never blocks and never awaits: a full buffer drops the record and counts it.
- The writer task wakes every ``flush_s`` and sends what accumulated as ONE ``XADD ps:predlog MAXLEN ~ n``
  entry (``warehouse.prediction_stream`` encoding), over its own connection with its own, looser timeout: the
  log never competes with lookups for the request-path pool.
- When Redis is unreachable the records stay buffered (still bounded) and are retried on the next tick.
- ``stop`` flushes what is left (best effort, bounded by the client timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from warehouse.prediction_stream import STREAM_KEY, Record, encode_entry
from warehouse.redis_conn import AsyncClient

log = logging.getLogger("prescore.online.prediction_log")

MAX_RECORDS_PER_ENTRY = 2000


class PredictionLog:
    """See the module docstring. ``dropped`` and ``written`` count records (metrics read them at scrape)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        maxlen: int,
        capacity: int = 100_000,
        flush_s: float = 0.05,
        stream_key: str = STREAM_KEY,
    ) -> None:
        self.client = client
        self.maxlen, self.capacity, self.flush_s, self.stream_key = maxlen, capacity, flush_s, stream_key
        self._buffer: list[Record] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.dropped = 0
        self.written = 0
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
            try:
                await self.client.xadd(self.stream_key, encode_entry(batch), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
            except (RedisError, OSError) as exc:
                self.failed_flushes += 1
                if self.failed_flushes == 1 or self.failed_flushes % 100 == 0:
                    log.warning("prediction log not written (%s); %d records kept", type(exc).__name__, len(pending))
                keep = pending[start:] + self._buffer
                self.dropped += max(0, len(keep) - self.capacity)
                self._buffer = keep[-self.capacity :]
                return start
            self.written += len(batch)
        return len(pending)
