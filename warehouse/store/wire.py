"""Wire encodings of bulk writes to the Redis score store: batches grouped by bucket, RESP-encoded ``HSET``
commands, and ``RESTORE`` payloads (a listpack-encoded hash in RDB format with its CRC-64) built client-side.

Pure functions over pyarrow/numpy buffers, no I/O: ``warehouse.store.writer`` sends what they build through
``warehouse.store.pipeline``. The bucket of an id and the key names come from ``warehouse.store.layout``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from warehouse.store.layout import (
    MAX_ENTITY_ID_BYTES,
    SCORE_BYTES,
    binary_array,
    crc32s,
    crc_table,
    indices,
    offsets_data,
)

_CRC64_TABLE = crc_table(0x95AC9329AC4BC9B5, np.uint64)  # Redis crc64 (Jones, reflected)


@dataclass(frozen=True)
class BucketedBatch:
    """One batch sorted by bucket: ``bucket_ids[k]`` holds entities ``starts[k]:starts[k+1]`` of ``ids``/``scores``."""

    bucket_ids: list[int]
    starts: list[int]
    ids: pa.Array
    scores: np.ndarray


def bucketize(ids: pa.Array, scores: np.ndarray, n_buckets: int, crc: np.ndarray | None = None) -> BucketedBatch:
    """Sort a validated batch by bucket (stable: a repeated id keeps its last score last). ``crc``: ``crc32s(ids)``
    when already computed."""
    of = ((crc32s(ids) if crc is None else crc) % n_buckets).astype(np.int64)
    order = np.argsort(of, kind="stable")
    sorted_buckets = of[order]
    first = np.flatnonzero(np.diff(sorted_buckets, prepend=-1))
    starts = [*first.tolist(), len(order)]
    return BucketedBatch(sorted_buckets[first].tolist(), starts, ids.take(indices(order)), scores[order])


def select_buckets(batch: BucketedBatch, positions: Sequence[int]) -> BucketedBatch:
    """The buckets ``batch.bucket_ids[k]`` for ``k`` in ``positions`` (in that order), as a batch of their own."""
    sizes = [batch.starts[k + 1] - batch.starts[k] for k in positions]
    rows = [np.arange(batch.starts[k], batch.starts[k + 1]) for k in positions]
    take = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    return BucketedBatch(
        [batch.bucket_ids[k] for k in positions],
        np.cumsum([0, *sizes]).tolist(),
        batch.ids.take(indices(take)),
        batch.scores[take],
    )


def has_duplicates(ids: pa.Array, crc: np.ndarray) -> bool:
    """Whether an ``id_array`` holds an id twice (``crc = crc32s(ids)``: exact comparison of colliding ids only)."""
    ordered = np.sort(crc)
    if not (ordered[1:] == ordered[:-1]).any():
        return False
    colliding = np.flatnonzero(np.isin(crc, ordered[1:][ordered[1:] == ordered[:-1]]))
    values = [ids[int(row)].as_py() for row in colliding]
    return len(set(values)) < len(values)


def _join(*parts: pa.Array | pa.Scalar) -> tuple[memoryview, list[int]]:
    joined = pc.binary_join_element_wise(*parts, _const(b""))
    offsets, data = offsets_data(joined)
    return memoryview(data.data), offsets.tolist()


def _value_array(scores: np.ndarray) -> pa.Array:
    offsets = pa.py_buffer(np.arange(len(scores) + 1, dtype=np.int64) * SCORE_BYTES)
    data = pa.py_buffer(scores.astype("<f4").tobytes())
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(scores), [None, offsets, data])


def _const(value: bytes) -> pa.Scalar:
    return binary_array([value])[0]


_RESP_LEN = binary_array([b"$%d\r\n" % n for n in range(MAX_ENTITY_ID_BYTES + 1)])
_RESP_MID = _const(b"\r\n$%d\r\n" % SCORE_BYTES)
_CRLF = _const(b"\r\n")


def hset_commands(batch: BucketedBatch, key_of: list[bytes], per_chunk: int) -> list[tuple[bytes, int]]:
    """RESP-encoded ``HSET bucket id score ...``, one per bucket, grouped into chunks of ~``per_chunk`` entities.

    ``key_of[k]`` is the key of ``batch.bucket_ids[k]``. Returns ``(wire bytes, number of commands)`` per chunk.
    """
    lens = pc.binary_length(batch.ids)
    data, offs = _join(_RESP_LEN.take(lens), batch.ids, _RESP_MID, _value_array(batch.scores), _CRLF)
    chunks: list[tuple[bytes, int]] = []
    parts: list[bytes | memoryview] = []
    entities = 0
    starts = batch.starts
    for k, key in enumerate(key_of):
        s, e = starts[k], starts[k + 1]
        parts.append(b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%b\r\n" % (2 + 2 * (e - s), len(key), key))
        parts.append(data[offs[s] : offs[e]])
        entities += e - s
        if entities >= per_chunk or k == len(key_of) - 1:
            chunks.append((b"".join(parts), len(parts) // 2))
            parts, entities = [], 0
    return chunks


# Listpack string entry: header (6-bit or 12-bit length) + bytes + backlen (size of header+bytes, 1 or 2 bytes).
def _lp_header(n: int) -> bytes:
    return bytes([0x80 | n]) if n < 64 else bytes([0xE0 | (n >> 8), n & 0xFF])


def _lp_backlen(size: int) -> bytes:
    return bytes([size]) if size <= 127 else bytes([size >> 7, (size & 127) | 128])


_LP_HEAD = binary_array([_lp_header(n) for n in range(MAX_ENTITY_ID_BYTES + 1)])
_LP_BACK = binary_array([_lp_backlen(len(_lp_header(n)) + n) for n in range(MAX_ENTITY_ID_BYTES + 1)])
_LP_VALUE_HEAD = _const(_lp_header(SCORE_BYTES))
_LP_VALUE_BACK = _const(_lp_backlen(1 + SCORE_BYTES))
RDB_TYPE_HASH_LISTPACK = 16
RDB_VERSION = 10  # Redis 7.0; newer servers load older versions


def _rdb_len(n: int) -> bytes:
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    return b"\x80" + struct.pack(">I", n)


def crc64(data: bytes, crc: int = 0) -> int:
    """Redis' CRC-64 (Jones polynomial, reflected, init 0): the checksum that trails a DUMP payload."""
    table = _CRC64_TABLE.tolist()
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


@cache
def _crc64_table16() -> np.ndarray:
    """CRC-64 state update over 16 zero bits for every low 16-bit state: two bytes per vectorised step."""
    table = np.arange(1 << 16, dtype=np.uint64)
    poly, one = np.uint64(0x95AC9329AC4BC9B5), np.uint64(1)
    for _ in range(16):
        table = (table >> one) ^ np.where(table & one, poly, np.uint64(0))
    return table


def _crc64_many(bodies: list[bytes]) -> list[int]:
    # Right-aligned in a zero-padded matrix: leading zero bytes leave an init-0 CRC at 0, so no masking.
    width = max(len(b) for b in bodies) + 1 & ~1
    mat = np.zeros((len(bodies), width), dtype=np.uint8)
    for row, body in enumerate(bodies):
        mat[row, width - len(body) :] = np.frombuffer(body, dtype=np.uint8)
    words = mat.view("<u2").T.astype(np.uint64)  # word j = byte 2j | byte 2j+1 << 8 (reflected CRC order)
    table, acc = _crc64_table16(), np.zeros(len(bodies), dtype=np.uint64)
    low, sixteen = np.uint64(0xFFFF), np.uint64(16)
    for column in words:
        acc = table[(acc ^ column) & low] ^ (acc >> sixteen)
    return [int(x) for x in acc.tolist()]


def restore_payloads(batch: BucketedBatch) -> list[bytes]:
    """DUMP-format payloads (hash as listpack, RDB v10, CRC-64) of every bucket: for ``RESTORE key 0 payload``.

    Ids must be unique within the batch. Fields are stored as listpack strings (Redis would store integer-like
    ids as integers; lookups compare either form, so reads are identical, only a few bytes larger).
    """
    lens = pc.binary_length(batch.ids)
    data, offs = _join(
        _LP_HEAD.take(lens), batch.ids, _LP_BACK.take(lens), _LP_VALUE_HEAD, _value_array(batch.scores), _LP_VALUE_BACK
    )
    bodies = []
    starts = batch.starts
    for k in range(len(batch.bucket_ids)):
        s, e = starts[k], starts[k + 1]
        entries = data[offs[s] : offs[e]]
        total = 6 + len(entries) + 1
        listpack = b"".join([struct.pack("<IH", total, min(2 * (e - s), 65535)), entries, b"\xff"])
        bodies.append(
            b"".join([bytes([RDB_TYPE_HASH_LISTPACK]), _rdb_len(total), listpack, struct.pack("<H", RDB_VERSION)])
        )
    crcs = [0] * len(bodies)
    by_size = sorted(range(len(bodies)), key=lambda k: len(bodies[k]))  # similar widths: little zero padding
    for i in range(0, len(by_size), 4096):
        group = by_size[i : i + 4096]
        for k, crc in zip(group, _crc64_many([bodies[k] for k in group]), strict=True):
            crcs[k] = crc
    return [body + struct.pack("<Q", crc) for body, crc in zip(bodies, crcs, strict=True)]


def restore_commands(
    key_of: list[bytes], payloads: list[bytes], sizes: list[int], per_chunk: int
) -> list[tuple[bytes, int]]:
    """RESP-encoded ``RESTORE key 0 payload`` per bucket, chunked by ~``per_chunk`` entities (``sizes`` per bucket)."""
    chunks: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    entities = 0
    for k, (key, payload) in enumerate(zip(key_of, payloads, strict=True)):
        parts.append(b"*4\r\n$7\r\nRESTORE\r\n$%d\r\n%b\r\n$1\r\n0\r\n$%d\r\n" % (len(key), key, len(payload)))
        parts.append(payload + b"\r\n")
        entities += sizes[k]
        if entities >= per_chunk or k == len(key_of) - 1:
            chunks.append((b"".join(parts), len(parts) // 2))
            parts, entities = [], 0
    return chunks


def resp(*args: bytes) -> bytes:
    """One command in RESP (for commands sent on the raw pipelined path)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)
