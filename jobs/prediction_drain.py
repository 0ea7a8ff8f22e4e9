"""Drain the prediction-log stream (``warehouse.prediction_stream``) into Parquet, exactly once.

Layout: ``<out_root>/prediction_logs/dt=YYYY-MM-DD/part-<first-id>-<last-id>.parquet``; ``dt`` is the UTC day of
the stream entries (their ids are Redis timestamps), ``first``/``last`` the ids of the first and last entry in the
file. Every file holds consecutive entries of one day.

Exactly once, crash-safe:

1. the watermark is the highest ``last-id`` among the part files already written: stream entries up to it are
   already durable, so they are only deleted (a crash after a write and before its ``XDEL`` leaves exactly those);
2. the next entries (up to ``batch_entries``, one day) are written to a temp file, fsynced and renamed into place —
   the name depends only on the entry range, so nothing half-written is ever visible under a part name;
3. only then are the drained entries deleted from the stream (``DELETE_SCRIPT``: ``XDEL`` and the stream's
   accounted bytes lowered by the entries it removed, in one step).

A crash anywhere loses nothing (entries leave the stream only after their file is in place) and duplicates
nothing (step 1). One drainer at a time: a Redis lock (``SET NX`` with a TTL) refuses a second one. Answers that
the online writer trimmed before a drain reached them (the stream is bounded in bytes on purpose:
``warehouse.prediction_stream``) are gone; each drain reports how many since the previous one
(``lost_to_trimming``, read and reset after a successful drain). A drain that finds such a loss also records it as a
gap, ``dt=YYYY-MM-DD/gap-<ms>-<seq>.json`` under the day of the first entry it drained (``GAP_GLOB``; JSON
``{"lost": N, "after": <the previous watermark id or null>, "before": <that first entry id or null>}``): the
answers between those two ids are missing from the log, and ``jobs.monitor`` reports them for the days the gap
spans. Retention removes a gap file with its day.

``out_root`` may be on object storage (``warehouse.datasets.storage``): step 2 then writes the file straight under its
name, as one object, which appears whole or not at all (there is no rename to do it with).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.datasets import storage
from warehouse.datasets.storage import ObjectPath, StoragePath
from warehouse.errors import UserError
from warehouse.prediction_stream import (
    DELETE_SCRIPT,
    STREAM_KEY,
    decode_entry,
    entry_bytes,
    parse_entry_id,
    records_table,
    side_keys,
)
from warehouse.store import UNAVAILABLE_ERRORS, SyncClient, connect, store_error

LOG_DIR = "prediction_logs"
GAP_GLOB = "dt=*/gap-*.json"  # trimming losses recorded by a drain, under LOG_DIR
LOCK_SUFFIX = ":drain-lock"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass
class DrainReport:
    """What one drain did: entries and records moved, files written, entries found already drained (deleted),
    and the records that the writer trimmed (over the stream's memory budget) before any drain reached them."""

    entries: int = 0
    records: int = 0
    files: list[StoragePath] = field(default_factory=list)
    already_drained: int = 0
    lost_to_trimming: int = 0


def part_name(first_id: str, last_id: str) -> str:
    return f"part-{first_id}-{last_id}.parquet"


def _last_id(path: StoragePath) -> tuple[int, int] | None:
    """``(ms, seq)`` of the last entry in a part file name, or None for a foreign file."""
    parts = path.name.removeprefix("part-").removesuffix(".parquet").split("-")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[2]), int(parts[3])


def watermark(root: StoragePath) -> tuple[int, int] | None:
    """Highest entry id already written under ``root`` (``prediction_logs``), or None."""
    ids = [i for p in root.glob("dt=*/part-*.parquet") if (i := _last_id(p)) is not None]
    return max(ids) if ids else None


def _day(entry_id: str) -> str:
    return datetime.fromtimestamp(parse_entry_id(entry_id)[0] / 1000, UTC).strftime("%Y-%m-%d")


def _write_atomic(table: pa.Table, path: StoragePath) -> None:
    if isinstance(path, ObjectPath):
        where, filesystem = storage.arrow(path)
        pq.write_table(table, where, filesystem=filesystem)  # one object: whole or absent
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def drain_predictions(
    redis_url: str,
    out_root: StoragePath | str,
    *,
    batch_entries: int = 1000,
    max_entries: int | None = None,
    stream_key: str = STREAM_KEY,
    lock_ttl_s: int = 600,
    after_write: Callable[[StoragePath], None] | None = None,
) -> DrainReport:
    """Move stream entries to Parquet under ``out_root`` (see the module docstring); returns a ``DrainReport``.

    ``max_entries`` bounds one call (None: until the stream is empty). ``after_write(path)`` runs after each file
    is in place and before its entries are deleted (tests use it to simulate a crash there). Raises
    ``StoreUnavailableError`` when Redis cannot be reached and ``UserError`` when another drain holds the lock.
    """
    if batch_entries < 1:
        raise UserError(f"batch_entries must be >= 1, got {batch_entries}")
    root = storage.as_path(out_root) / LOG_DIR
    client = connect(redis_url, socket_timeout=10.0, connect_timeout=5.0)  # single node or Redis Cluster
    token = uuid.uuid4().hex
    lock = stream_key + LOCK_SUFFIX
    report = DrainReport()
    try:
        if not client.set(lock, token, nx=True, ex=lock_ttl_s):
            raise UserError(f"another drain of {stream_key} is running (lock {lock}); retry when it has finished")
        try:
            before = watermark(root)
            _drain(client, root, report, batch_entries, max_entries, stream_key, after_write)
            lost = client.getdel(side_keys(stream_key)[1])
            report.lost_to_trimming = int(lost) if lost is not None else 0
            if report.lost_to_trimming:
                _record_gap(root, report, before)
        finally:
            client.eval(_RELEASE, 1, lock, token)
    except UNAVAILABLE_ERRORS as exc:
        raise store_error(f"draining {stream_key}", exc, suffix="rerun: nothing is lost or duplicated") from exc
    finally:
        client.close()
    return report


def _record_gap(root: StoragePath, report: DrainReport, before: tuple[int, int] | None) -> None:
    """Write the gap file of a drain that found answers trimmed before it (module docstring)."""
    import json

    first = report.files[0].name.removeprefix("part-").split("-")[:2] if report.files else None
    first_id = "-".join(first) if first else None
    stamp = first_id or f"{int(datetime.now(UTC).timestamp() * 1000)}-0"
    doc = {"lost": report.lost_to_trimming, "after": None if before is None else f"{before[0]}-{before[1]}",
           "before": first_id}  # fmt: skip
    path = root / f"dt={_day(stamp)}" / f"gap-{stamp}.json"
    if isinstance(path, ObjectPath):
        path.write_text(json.dumps(doc))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _drain(
    client: SyncClient,
    root: StoragePath,
    report: DrainReport,
    batch_entries: int,
    max_entries: int | None,
    stream_key: str,
    after_write: Callable[[StoragePath], None] | None,
) -> None:
    mark = watermark(root)
    while max_entries is None or report.entries < max_entries:
        count = batch_entries if max_entries is None else min(batch_entries, max_entries - report.entries)
        raw: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(stream_key, "-", "+", count=count)  # type: ignore[assignment]
        if not raw:
            return
        entries = [(eid.decode(), fields) for eid, fields in raw]
        done = [(eid, f) for eid, f in entries if mark is not None and parse_entry_id(eid) <= mark]
        if done:  # written by an earlier drain that stopped before deleting them
            _delete(client, stream_key, done)
            report.already_drained += len(done)
            entries = entries[len(done) :]
            if not entries:
                continue
        day = _day(entries[0][0])
        batch = [(eid, fields) for eid, fields in entries if _day(eid) == day]  # ids ascend: a leading run
        decoded = [(eid, decode_entry(eid, fields)) for eid, fields in batch]
        path = root / f"dt={day}" / part_name(batch[0][0], batch[-1][0])
        _write_atomic(records_table(decoded), path)
        if after_write is not None:
            after_write(path)
        _delete(client, stream_key, batch)
        mark = parse_entry_id(batch[-1][0])
        report.entries += len(batch)
        report.records += sum(len(records) for _, records in decoded)
        report.files.append(path)


def _delete(client: SyncClient, stream_key: str, entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
    """Delete drained entries and uncharge their bytes from the stream's budget (one script call)."""
    args = [value for eid, fields in entries for value in (eid, entry_bytes(fields))]
    client.eval(DELETE_SCRIPT, 2, stream_key, side_keys(stream_key)[0], *args)
