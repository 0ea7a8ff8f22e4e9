"""Entity ids of the Redis score store: the id rule, their UTF-8 encoding as Arrow arrays, and their bucket.

No I/O. ``entity_id_problem`` is the one home of the id rule (the API checks ids with it too); ``encode_entity_id``
and ``id_array`` encode one id or a column of them and raise ``StoreError`` naming the first bad one. Bucket of an
entity = CRC-32 (IEEE, as ``zlib.crc32``) of its UTF-8 bytes modulo the run's bucket count: stable across processes,
machines and Python versions (``bucket_of`` for one id, ``buckets`` / ``crc32s`` vectorised over an ``id_array``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from warehouse.errors import StoreError
from warehouse.lazy import lazy_module

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = lazy_module("pyarrow")

MAX_ENTITY_ID_BYTES = 128


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


def _crc32_tables() -> tuple[np.ndarray, np.ndarray]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
        table.append(crc)
    byte = np.array(table, dtype=np.uint32)
    low = np.arange(65536, dtype=np.uint32)
    first = byte[low & 0xFF] ^ (low >> 8)
    return byte, byte[first & 0xFF] ^ (first >> 8)  # the byte table, and two of its steps as one


_CRC32_TABLE, _CRC32_PAIR = _crc32_tables()  # zlib.crc32


def bucket_of(entity_id: bytes, n_buckets: int) -> int:
    """Bucket of one entity (UTF-8 bytes): ``zlib.crc32(id) % n_buckets``. ``buckets`` is its vectorised twin."""
    return zlib.crc32(entity_id) % n_buckets


def buckets(ids: pa.Array, n_buckets: int) -> np.ndarray:
    """``bucket_of`` for every id of an ``id_array`` (int64), computed column-wise per id length with numpy."""
    return (crc32s(ids) % n_buckets).astype(np.int64)


def crc32s(ids: pa.Array) -> np.ndarray:
    """``zlib.crc32`` of every id of an ``id_array`` (uint32): per id length, two byte columns per numpy step."""
    offsets, data = offsets_data(ids)
    lens = np.diff(offsets)
    crc = np.empty(len(lens), dtype=np.uint32)
    if not len(lens):
        return crc
    same = int(lens.min()) == int(lens.max())  # every id this long: one contiguous matrix (checked, never inferred)
    for length in [int(lens[0])] if same else np.unique(lens).tolist():
        if same:
            rows = slice(None)
            mat = data[offsets[0] : offsets[-1]].reshape(len(lens), length)
        else:
            idx = np.flatnonzero(lens == length)
            rows = idx  # type: ignore[assignment]
            mat = data[offsets[idx][:, None] + np.arange(length)[None, :]]
        acc = np.full(mat.shape[0], 0xFFFFFFFF, dtype=np.uint32)
        low = acc.view(np.uint16)[::2]  # the low 16 bits of each state (little-endian)
        pair = np.empty(mat.shape[0], dtype=np.uint16)
        step = np.empty(mat.shape[0], dtype=np.uint32)
        for c in range(0, length - 1, 2):
            np.left_shift(mat[:, c + 1], 8, out=pair, dtype=np.uint16)
            np.bitwise_or(pair, mat[:, c], out=pair, dtype=np.uint16)
            np.bitwise_xor(pair, low, out=pair)
            _CRC32_PAIR.take(pair, out=step)
            np.right_shift(acc, 16, out=acc)
            np.bitwise_xor(acc, step, out=acc)
        if length & 1:
            acc = _CRC32_TABLE[(acc ^ mat[:, length - 1]) & 0xFF] ^ (acc >> 8)
        crc[rows] = acc ^ 0xFFFFFFFF
    return crc
