"""Pure layout of the Redis score store: key names, the bucket function, validation, value encoding, lookups.

No I/O here; ``warehouse.store.score_store`` (run lifecycle), ``warehouse.store.writer`` and ``warehouse.store.readers``
are the shell around it, and ``warehouse.store.wire`` builds the bulk commands (HSET, RESTORE payloads).

Layout of one model ``m`` (names built only by ``store_key``):

- ``ps:{m}:current``   string, the published run id (the pointer readers follow)
- ``ps:{m}:history``   list of published run ids, newest first; its head is the current run
- ``ps:{m}:runs``      sorted set of every known run id (score = created_at)
- ``ps:{m}:run:<id>``  hash, the run's metadata (see ``RunInfo``)
- ``ps:{m}:lock:<name>`` string, a lock with a TTL (``ScoreStore.lock``: one restore of a model at a time)
- ``ps:s:<m>:<id>:<b>`` hash bucket ``b`` of run ``<id>``: field = entity id (UTF-8), value = float32 little-endian

The per-model keys share the hash tag ``{m}`` (one cluster slot, so create, publish, rollback and cleanup can each
be one WATCH/MULTI transaction on one node); bucket keys carry no tag, so a run's buckets spread over all slots and
every node of a Redis Cluster (writes, counts and lookups are grouped per node by the store). Bucket of an entity =
CRC-32 (IEEE, as ``zlib.crc32``) of its UTF-8 bytes modulo the run's bucket count: stable across processes,
machines and Python versions.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa

from warehouse.errors import StoreError

MAX_ENTITY_ID_BYTES = 128
TARGET_FIELDS_PER_BUCKET = 64  # half of the default hash-max-listpack-entries: Poisson tails stay < 128
SCORE_BYTES = 4
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class RunState(StrEnum):
    LOADING = "loading"  # being written; heartbeat shows the loader is alive
    LOADED = "loaded"  # counts verified by finalize_run; may be published
    PUBLISHED = "published"  # the current run (exactly one per model)
    RETIRED = "retired"  # was current; kept for rollback until cleanup removes it


def validate_name(kind: str, value: str) -> str:
    """A model name or run id: 1-64 chars of ``[A-Za-z0-9_.-]``, starting alphanumeric (no glob/tag characters)."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise StoreError(
            f"invalid {kind} {value!r}: use 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return value


def store_key(model: str, kind: str, run_id: str = "", bucket: int | str = "") -> str:
    """The one place key names are built. ``kind``: current, history, runs, meta, bucket (``bucket="*"`` → pattern),
    lock (``run_id`` is the lock's name)."""
    if kind == "bucket":
        return f"ps:s:{model}:{run_id}:{bucket}"
    if kind == "meta":
        return f"ps:{{{model}}}:run:{run_id}"
    if kind == "lock":
        return f"ps:{{{model}}}:lock:{run_id}"
    if kind in ("current", "history", "runs"):
        return f"ps:{{{model}}}:{kind}"
    raise ValueError(f"unknown key kind {kind!r}")


def run_of_bucket_key(key: bytes | str) -> str:
    """Run id of a bucket key built by ``store_key(..., "bucket", ...)``."""
    text = key.decode() if isinstance(key, bytes) else key
    return text.split(":")[3]


def bucket_count(expected_rows: int, max_listpack_entries: int = 128) -> int:
    """Buckets for a run: ~64 fields each on average, so the fullest bucket stays listpack-encoded."""
    fill = max(1, min(TARGET_FIELDS_PER_BUCKET, max_listpack_entries // 2))
    return max(1, math.ceil(max(0, expected_rows) / fill))


# ---------------------------------------------------------------- entity ids


def entity_id_problem(entity_id: str) -> str | None:
    """What is wrong with one entity id string, or None when it is valid: the one id rule the store and the API
    share. Valid: 1-``MAX_ENTITY_ID_BYTES`` UTF-8 bytes, no control characters (C0, DEL, C1), no lone surrogates.
    The answer reads after the id ("is empty", "contains a control character"). Callers check the type first."""
    if entity_id.isascii() and entity_id.isprintable() and 0 < len(entity_id) <= MAX_ENTITY_ID_BYTES:
        return None  # the common case, without encoding
    if not entity_id:
        return "is empty"
    try:
        size = len(entity_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode (lone surrogate)"
    if size > MAX_ENTITY_ID_BYTES:
        return f"is {size} UTF-8 bytes long (at most {MAX_ENTITY_ID_BYTES})"
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in entity_id):
        return "contains a control character"
    return None


def _bad_id_error(entity_id: object, row: int | None, problem: str) -> StoreError:
    shown = repr(entity_id)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    where = f" (row {row})" if row is not None else ""
    return StoreError(
        f"entity id {shown}{where} is invalid: {problem}; entity ids must be 1-{MAX_ENTITY_ID_BYTES} UTF-8 bytes "
        "without control characters: fix or drop the id upstream and rerun"
    )


def encode_entity_id(entity_id: str) -> bytes:
    """UTF-8 bytes of one entity id, or ``StoreError`` naming the id and the problem."""
    if not isinstance(entity_id, str):
        raise _bad_id_error(entity_id, None, f"it is a {type(entity_id).__name__}, not a string")
    try:
        raw = entity_id.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad_id_error(entity_id, None, "it is not valid Unicode (lone surrogate)") from None
    problem = entity_id_problem(entity_id)
    if problem is not None:
        raise _bad_id_error(entity_id, None, f"it {problem}")
    return raw


def binary_array(items: list[bytes], data: bytes | None = None, lens: np.ndarray | None = None) -> pa.Array:
    """A large_binary array built from buffers (``pa.array`` would import pandas: seconds per worker process)."""
    if lens is None:
        lens = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(items) if data is None else data)]
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(lens), buffers)


def _encode_ids(entity_ids: Sequence[str]) -> pa.Array:
    joined = "".join(entity_ids)  # TypeError unless all are str
    if joined.isascii():  # common case: one encode, lengths in characters == lengths in bytes
        return binary_array([], joined.encode("ascii"), np.fromiter(map(len, entity_ids), np.int64, len(entity_ids)))
    return binary_array([e.encode("utf-8") for e in entity_ids])


def indices(rows: np.ndarray) -> pa.Array:
    """Row numbers as an Arrow int64 array (for ``Array.take``)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(rows), [None, pa.py_buffer(rows)])


def id_array(entity_ids: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Entity ids as an Arrow large_binary array of their UTF-8 bytes, validated: ``StoreError`` names the first bad
    id (empty, longer than 128 bytes, control characters, not a string)."""
    if isinstance(entity_ids, pa.ChunkedArray | pa.Array):
        arr = entity_ids.combine_chunks() if isinstance(entity_ids, pa.ChunkedArray) else entity_ids
        try:
            if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                arr = arr.cast(pa.large_string())  # binary: checks the bytes are valid UTF-8
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise StoreError(f"entity ids must be strings (valid UTF-8), got Arrow type {arr.type}: {exc}") from exc
        if arr.null_count:
            row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise _bad_id_error(None, row, "it is null")
        arr = arr.cast(pa.large_binary())
    else:
        try:
            arr = _encode_ids(entity_ids.tolist() if isinstance(entity_ids, np.ndarray) else entity_ids)
        except (TypeError, UnicodeEncodeError):
            for row, e in enumerate(entity_ids):
                if not isinstance(e, str):
                    kind = "null" if e is None else f"a {type(e).__name__}, not a string"
                    raise _bad_id_error(e, row, f"it is {kind}") from None
                if not e.isascii():
                    try:
                        e.encode("utf-8")
                    except UnicodeEncodeError:
                        raise _bad_id_error(e, row, "it is not valid Unicode (lone surrogate)") from None
            raise
    offsets, data = offsets_data(arr)
    lens = np.diff(offsets)
    bad = np.flatnonzero((lens == 0) | (lens > MAX_ENTITY_ID_BYTES))
    region = data[offsets[0] : offsets[-1]]
    ctrl = (region < 0x20) | (region == 0x7F)
    ctrl[:-1] |= (region[:-1] == 0xC2) & (region[1:] >= 0x80) & (region[1:] <= 0x9F)  # C1 controls
    hits = np.flatnonzero(ctrl)
    if len(hits):
        bad = np.append(bad, np.searchsorted(offsets, offsets[0] + hits[0], side="right") - 1)
    if len(bad):
        row = int(bad.min())
        raw = arr[row].as_py()
        text = raw.decode("utf-8")
        raise _bad_id_error(text, row, f"it {entity_id_problem(text) or 'is invalid'}")
    return arr


def offsets_data(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64, len n+1) and the data bytes of a (large_)binary array, slice-aware."""
    buffers = arr.buffers()
    dtype = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=dtype)[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


# ---------------------------------------------------------------- bucket function


def crc_table(poly: int, dtype: type[np.unsignedinteger[Any]]) -> np.ndarray:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (poly if crc & 1 else 0)
        table.append(crc)
    return np.array(table, dtype=dtype)


_CRC32_TABLE = crc_table(0xEDB88320, np.uint32)  # zlib.crc32


def bucket_of(entity_id: bytes, n_buckets: int) -> int:
    """Bucket of one entity (UTF-8 bytes): ``zlib.crc32(id) % n_buckets``. ``buckets`` is its vectorised twin."""
    return zlib.crc32(entity_id) % n_buckets


def buckets(ids: pa.Array, n_buckets: int) -> np.ndarray:
    """``bucket_of`` for every id of an ``id_array`` (int64), computed column-wise per id length with numpy."""
    return (crc32s(ids) % n_buckets).astype(np.int64)


def crc32s(ids: pa.Array) -> np.ndarray:
    """``zlib.crc32`` of every id of an ``id_array`` (uint32)."""
    offsets, data = offsets_data(ids)
    lens = np.diff(offsets)
    crc = np.empty(len(lens), dtype=np.uint32)
    for length in np.unique(lens).tolist():
        if bool((lens == length).all()):  # every id this long: one contiguous matrix (checked, never inferred)
            rows = slice(None)
            mat = data[offsets[0] : offsets[-1]].reshape(len(lens), length).T
        else:
            idx = np.flatnonzero(lens == length)
            rows = idx  # type: ignore[assignment]
            mat = data[offsets[idx][None, :] + np.arange(length)[:, None]]
        acc = np.full(mat.shape[1], 0xFFFFFFFF, dtype=np.uint32)
        for column in mat:
            acc = _CRC32_TABLE[(acc ^ column) & 0xFF] ^ (acc >> 8)
        crc[rows] = acc ^ 0xFFFFFFFF
    return crc


# ---------------------------------------------------------------- values


def score_array(scores: Sequence[float] | np.ndarray | pa.Array, ids: pa.Array) -> np.ndarray:
    """Scores as float32 (one per id), or ``StoreError`` for a length mismatch or a non-finite score."""
    values = np.asarray(scores.to_numpy(zero_copy_only=False) if isinstance(scores, pa.Array) else scores)
    values = values.astype(np.float32)
    if values.shape != (len(ids),):
        raise StoreError(f"got {len(ids)} entity ids but scores of shape {values.shape}: pass one score per id")
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        raise StoreError(
            f"score of entity {ids[row].as_py().decode()!r} (row {row}) is {values[row]}: scores must be finite"
        )
    return values


def encode_score(score: float) -> bytes:
    return struct.pack("<f", score)


def decode_score(raw: bytes) -> float:
    return float(struct.unpack("<f", raw)[0])


def to_utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


@dataclass(frozen=True, slots=True)
class StoredScore:
    """A hit: the score and the run it came from. ``as_of`` is UTC."""

    score: float
    run_id: str
    model_version: str
    as_of: datetime


@dataclass(frozen=True)
class RunInfo:
    """Metadata of one run (all timestamps UTC; ``None`` where the event has not happened)."""

    model: str
    run_id: str
    model_version: str
    as_of: datetime
    state: RunState
    expected_rows: int
    loaded_rows: int
    n_buckets: int
    created_at: datetime
    heartbeat_at: datetime | None
    published_at: datetime | None
    retired_at: datetime | None
    reopened_from: RunState | None = None  # a verified run put back to loading to rewrite lost buckets (restore)

    @classmethod
    def from_meta(cls, meta: Mapping[Any, Any]) -> RunInfo:
        text = {k.decode(): v.decode() for k, v in meta.items()}

        def when(name: str) -> datetime | None:
            return to_utc(float(text[name])) if text.get(name) else None

        return cls(
            model=text["model"],
            run_id=text["run_id"],
            model_version=text["model_version"],
            as_of=to_utc(float(text["as_of"])),
            state=RunState(text["state"]),
            expected_rows=int(text["expected_rows"]),
            loaded_rows=int(text.get("loaded_rows", "0")),
            n_buckets=int(text["n_buckets"]),
            created_at=to_utc(float(text["created_at"])),
            heartbeat_at=when("heartbeat"),
            published_at=when("published_at"),
            retired_at=when("retired_at"),
            reopened_from=RunState(text["reopened_from"]) if text.get("reopened_from") else None,
        )


# ---------------------------------------------------------------- lookups


@dataclass(frozen=True)
class LookupPlan:
    """Which bucket to ask for which ids: ``HMGET keys[k] *fields[k]`` answers ids at ``rows[k]``."""

    keys: list[bytes]
    fields: list[list[bytes]]
    rows: list[list[int]]
    size: int


def plan_lookup(run: RunInfo, raw_ids: list[bytes]) -> LookupPlan:
    """Group ids (UTF-8 bytes) by bucket of ``run``: one HMGET per bucket."""
    by_bucket: dict[int, tuple[list[bytes], list[int]]] = {}
    for row, raw in enumerate(raw_ids):
        fields, rows = by_bucket.setdefault(bucket_of(raw, run.n_buckets), ([], []))
        fields.append(raw)
        rows.append(row)
    keys = [store_key(run.model, "bucket", run.run_id, b).encode() for b in by_bucket]
    return LookupPlan(keys, [f for f, _ in by_bucket.values()], [r for _, r in by_bucket.values()], len(raw_ids))


def assemble(run: RunInfo, plan: LookupPlan, replies: Sequence[Sequence[Any]]) -> list[StoredScore | None]:
    """One result per requested id, in request order: ``None`` for a miss, else the score and its run."""
    out: list[StoredScore | None] = [None] * plan.size
    for rows, values in zip(plan.rows, replies, strict=True):
        for row, raw in zip(rows, values, strict=True):
            if raw is not None:
                out[row] = StoredScore(decode_score(raw), run.run_id, run.model_version, run.as_of)
    return out
