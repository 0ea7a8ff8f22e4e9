"""Wire encoding of bulk writes to the Redis score store: batches grouped by bucket, and RESP-encoded commands
(``HSET`` per bucket, any single command with ``resp``) built from pyarrow/numpy buffers.

Pure functions, no I/O: ``warehouse.store.writer`` sends what they build through ``warehouse.store.pipeline``. The
bucket of an id comes from ``warehouse.store.ids``, the key names from ``warehouse.store.keys``. ``bucketize`` sorts
a batch by bucket, then by the id's CRC-32 (so repeated ids sit side by side: ``listpack.dedupe``), then by row;
``bucket_ranges`` cuts a big batch into parts of whole buckets first, ``slice_buckets`` / ``select_buckets`` take
some buckets of a bucketized batch. ``warehouse.store.listpack`` encodes whole buckets as ``RESTORE`` instead.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from warehouse.lazy import lazy_module
from warehouse.store.ids import MAX_ENTITY_ID_BYTES, binary_array, crc32s, indices, offsets_data
from warehouse.store.keys import SCORE_BYTES

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
else:
    pa = lazy_module("pyarrow")
    pc = lazy_module("pyarrow.compute")


@dataclass(frozen=True)
class BucketedBatch:
    """One batch sorted by bucket: ``bucket_ids[k]`` holds entities ``starts[k]:starts[k+1]`` of ``ids``/``scores``;
    ``crcs``: the CRC-32 of each id (``ids.crc32s``), when known. Within a bucket, entities are in CRC-32 order, a
    repeated id's rows adjacent and in batch order."""

    bucket_ids: list[int]
    starts: list[int]
    ids: pa.Array
    scores: np.ndarray
    crcs: np.ndarray | None = None


def bucketize(ids: pa.Array, scores: np.ndarray, n_buckets: int, crc: np.ndarray | None = None) -> BucketedBatch:
    """Sort a validated batch by bucket, then CRC-32 of the id, then row (a repeated id keeps its last score last).
    ``crc``: the ids' ``crc32s`` when known."""
    crc = crc32s(ids) if crc is None else crc
    of = (crc % n_buckets).astype(np.int64)
    if n_buckets <= 2**31:
        key = (of.astype(np.uint64) << np.uint64(32)) | crc.astype(np.uint64)
        order = np.argsort(key)  # not stable (several times faster); equal keys are put back in row order below
        sorted_key = key[order]
        tied = np.flatnonzero(sorted_key[1:] == sorted_key[:-1])
        if len(tied):  # repeated ids (or a CRC collision in a bucket): rows of one key in batch order
            rows = np.unique(np.concatenate([tied, tied + 1]))
            fixed = np.lexsort((order[rows], sorted_key[rows]))
            order[rows] = order[rows][fixed]
    else:
        order = np.lexsort((crc, of))  # stable: ties stay in row order
    sorted_buckets = of[order]
    first = np.flatnonzero(np.diff(sorted_buckets, prepend=-1))
    starts = [*first.tolist(), len(order)]
    return BucketedBatch(sorted_buckets[first].tolist(), starts, ids.take(indices(order)), scores[order], crc[order])


def bucket_ranges(
    ids: pa.Array, scores: np.ndarray, n_buckets: int, size: int
) -> Iterator[tuple[pa.Array, np.ndarray, np.ndarray]]:
    """A validated batch cut into ~``size``-entity parts of consecutive buckets (every bucket in one part), each as
    (ids, scores, their ``crc32s``): a big batch is bucketized part by part, in cache-sized pieces."""
    crc = crc32s(ids)
    parts = max(1, min(65535, -(-len(ids) // size), n_buckets))
    if parts == 1:
        yield ids, scores, crc
        return
    part = ((crc % n_buckets).astype(np.int64) * parts // n_buckets).astype(np.uint16)
    order = np.argsort(part, kind="stable")  # a radix sort for 16-bit keys
    ends = np.cumsum(np.bincount(part, minlength=parts))
    for s, e in itertools.pairwise([0, *ends.tolist()]):
        if e > s:
            rows = order[s:e]
            yield ids.take(indices(rows)), scores[rows], crc[rows]


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
        None if batch.crcs is None else batch.crcs[take],
    )


def slice_buckets(batch: BucketedBatch, lo: int, hi: int) -> BucketedBatch:
    """Buckets ``lo:hi`` of a batch, without copying."""
    s, e = batch.starts[lo], batch.starts[hi]
    return BucketedBatch(
        batch.bucket_ids[lo:hi],
        [x - s for x in batch.starts[lo : hi + 1]],
        batch.ids.slice(s, e - s),
        batch.scores[s:e],
        None if batch.crcs is None else batch.crcs[s:e],
    )


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


@functools.cache
def _pieces() -> tuple[pa.Array, pa.Scalar, pa.Scalar]:
    """The constant pieces of an HSET's RESP: ``$<len>\r\n`` per id length, the score's header, CRLF (built on first
    use: readers never write, and never import pyarrow)."""
    lens = binary_array([b"$%d\r\n" % n for n in range(MAX_ENTITY_ID_BYTES + 1)])
    return lens, _const(b"\r\n$%d\r\n" % SCORE_BYTES), _const(b"\r\n")


def hset_commands(batch: BucketedBatch, key_of: list[bytes], per_chunk: int) -> list[tuple[bytes, int]]:
    """RESP-encoded ``HSET bucket id score ...``, one per bucket, grouped into chunks of ~``per_chunk`` entities.

    ``key_of[k]`` is the key of ``batch.bucket_ids[k]``. Returns ``(wire bytes, number of commands)`` per chunk.
    """
    lens = pc.binary_length(batch.ids)
    resp_len, resp_mid, crlf = _pieces()
    data, offs = _join(resp_len.take(lens), batch.ids, resp_mid, _value_array(batch.scores), crlf)
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


def resp(*args: bytes) -> bytes:
    """One command in RESP (for commands sent on the raw pipelined path)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)
