"""Wire encoding of bulk writes to the Redis score store: batches grouped by bucket, and RESP-encoded commands
(``HSET`` per bucket, any single command with ``resp``) built from pyarrow/numpy buffers.

Pure functions, no I/O: ``warehouse.store.writer`` sends what they build through ``warehouse.store.pipeline``. The
bucket of an id comes from ``warehouse.store.ids``, the key names from ``warehouse.store.keys``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from warehouse.store.ids import MAX_ENTITY_ID_BYTES, binary_array, crc32s, indices, offsets_data
from warehouse.store.keys import SCORE_BYTES


@dataclass(frozen=True)
class BucketedBatch:
    """One batch sorted by bucket: ``bucket_ids[k]`` holds entities ``starts[k]:starts[k+1]`` of ``ids``/``scores``."""

    bucket_ids: list[int]
    starts: list[int]
    ids: pa.Array
    scores: np.ndarray


def bucketize(ids: pa.Array, scores: np.ndarray, n_buckets: int) -> BucketedBatch:
    """Sort a validated batch by bucket (stable: a repeated id keeps its last score last)."""
    of = (crc32s(ids) % n_buckets).astype(np.int64)
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


def resp(*args: bytes) -> bytes:
    """One command in RESP (for commands sent on the raw pipelined path)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)
