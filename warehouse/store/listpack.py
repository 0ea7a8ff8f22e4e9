"""DUMP payloads of score buckets, built as Redis builds them, so a bulk load can ``RESTORE`` whole buckets.

Pure functions, no I/O; ``warehouse.store.writer`` decides which buckets go this way and sends them. A bucket hash
``ps:s:<m>:<run>:<b>`` of at most ``hash-max-listpack-entries`` fields, none longer than
``hash-max-listpack-value`` bytes, is a listpack in Redis. ``restore_commands`` builds, for every bucket of a batch
at once with numpy and pyarrow (no loop over entities, one Python line per bucket for its command header), the
payload ``DUMP`` would answer for it and the pipelined ``RESTORE key 0 payload``:

- payload = RDB type ``RDB_TYPE_HASH_LISTPACK`` (16), the listpack as an RDB string (``rdbSaveLen`` length, raw
  bytes), the server's 2-byte RDB version (little-endian), and the CRC-64 (Jones polynomial, reflected, initial 0,
  no final xor: Redis's ``crc64``) of all of that, little-endian;
- listpack = 4-byte total size, 2-byte element count, one entry per field and per value (field, value, field,
  value... in the batch's order), the ``0xFF`` terminator; an entry = encoding (+ data) + back-length.

The parity rule: the payload is byte for byte what ``DUMP`` of the same bucket written by ``HSET`` (fields in the
same order) returns from a server with ``rdbcompression no`` (with compression on, Redis LZF-compresses the string
it dumps: the listpack inside is the same, and ``RESTORE`` takes it uncompressed). So every element is encoded as
``lpEncodeGetType`` does: a string that ``lpStringToInt64`` reads as an integer (``"0"``, ``"-12"``,
``"1234567890"``; not ``"+1"``, ``"01"``, ``"-0"``, ``" 1"``, 21+ characters or outside int64) is stored in the
smallest integer encoding (7-bit unsigned, 13-bit, 16/24/32/64-bit), any other as a 6-bit (< 64 bytes) or 12-bit
(< 4096 bytes) string. That applies to entity ids (10-digit numeric ids are stored as 32- or 64-bit integers) and to
the 4 raw bytes of a float32 score alike (bytes that spell ``"1234"`` are the integer 1234).
``tests/warehouse/store/test_listpack.py`` checks the rule against a real redis-server's ``DUMP``.

A listpack may not hold a field twice (Redis does not check a payload unless ``sanitize-dump-payload`` is on):
``dedupe`` keeps the last score of a repeated id at its first position, as ``HSET`` of the batch would. The CRC-64
of all payloads is computed at once (``crc64s``): every payload cut into 128-byte chunks, the chunks of all payloads
advanced side by side from zero two bytes per numpy step (a 65536-entry table), folded into each payload's state in
order (the CRC is linear in GF(2): state' = shift64(state) ^ chunk CRC), then each payload's last bytes advanced
from its state, payloads sorted by length so that the ones still running are a prefix of the arrays (no masks).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from warehouse.lazy import lazy_module
from warehouse.store.ids import binary_array, indices, offsets_data
from warehouse.store.keys import SCORE_BYTES
from warehouse.store.wire import BucketedBatch

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
else:
    pa = lazy_module("pyarrow")
    pc = lazy_module("pyarrow.compute")

RDB_TYPE_HASH_LISTPACK = 16
MIN_RDB_VERSION = 10  # Redis 7.0: the first RDB version with listpack-encoded hashes (type 16)
MAX_STRING_BYTES = 4095  # longest element encoded here (a 12-bit string); ids are at most 128 bytes
_CRC64_POLY = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9 (Jones) bit-reflected
_INT64_MAX = np.uint64(2**63 - 1)


def _crc64_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The byte table, the two-byte table, and the 4 x 65536 tables of "advance ``CRC_CHUNK`` zero bytes"."""
    table = np.zeros(256, dtype=np.uint64)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC64_POLY if crc & 1 else 0)
        table[i] = crc
    eight = np.uint64(8)
    low = np.arange(65536, dtype=np.uint64)
    # two steps of the byte table folded into one: x = (crc ^ b0 ^ b1 << 8) & 0xFFFF, crc' = T2[x] ^ (crc >> 16)
    first = table[low & np.uint64(0xFF)] ^ (low >> eight)
    pair = table[first & np.uint64(0xFF)] ^ (first >> eight)
    # the CRC is linear: advancing a state over CRC_CHUNK zero bytes is a 64x64 bit matrix, applied 16 bits at a time
    basis = np.uint64(1) << np.arange(64, dtype=np.uint64)
    for _ in range(CRC_CHUNK):
        basis = table[basis & np.uint64(0xFF)] ^ (basis >> eight)
    shift = np.zeros((4, 65536), dtype=np.uint64)
    for part in range(4):
        for bit in range(16):
            shift[part, 1 << bit : 2 << bit] = shift[part, : 1 << bit] ^ basis[16 * part + bit]
    return table, pair, shift


CRC_CHUNK = 128  # bytes: payloads are cut into chunks of this size, whose CRCs are computed side by side
_CRC64, _CRC64_PAIR, _CRC64_SHIFT = _crc64_tables()


def crc64(data: bytes, crc: int = 0) -> int:
    """Redis's ``crc64(crc, data, len)`` of one byte string (the reference the vectorised ``crc64s`` must match)."""
    table = _CRC64.tolist()
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _pairs(data: np.ndarray) -> tuple[np.ndarray, int]:
    """Every two-byte pair of ``data`` as a little-endian uint16, in one array: the pairs at even offsets (``data``
    itself, viewed), then the pairs at odd offsets, which start at the returned index. The pair at offset ``p`` is
    ``pairs[_pair_index(p, odd)]``."""
    even, odd = len(data) // 2, (len(data) - 1) // 2
    pairs = np.empty(even + odd, dtype=np.uint16)
    pairs[:even] = data[: 2 * even].view(np.uint16)
    pairs[even:].view(np.uint8)[:] = data[1 : 1 + 2 * odd]
    return pairs, even


def _pair_index(pos: np.ndarray, odd: int) -> np.ndarray:
    return (pos >> 1) + (pos & 1) * odd


def _advance(
    state: np.ndarray, pairs: tuple[np.ndarray, int], data: np.ndarray, pos: np.ndarray, size: np.ndarray
) -> None:
    """Advance ``state[k]`` (in place) over bytes ``pos[k]:pos[k] + size[k]`` of ``data`` (``pairs``: its
    ``_pairs``), two bytes per step; ``size`` in descending order, so the segments still running are a prefix."""
    n = len(size)
    if n == 0 or size[0] == 0:
        return
    running = np.searchsorted(-size, -(2 * np.arange(int(size[0]) // 2, dtype=np.int64) + 2), side="right").tolist()
    low = state.view(np.uint16)[::4]  # the low 16 bits of each state (little-endian)
    table, odd = pairs
    at = _pair_index(pos, odd).astype(np.intp)
    got, x, t = np.empty(n, np.uint16), np.empty(n, np.intp), np.empty(n, np.uint64)
    sixteen = np.uint64(16)
    for k in running:
        sk = state[:k]
        table.take(at[:k], out=got[:k])
        np.bitwise_xor(low[:k], got[:k], out=x[:k])
        _CRC64_PAIR.take(x[:k], out=t[:k])
        np.right_shift(sk, sixteen, out=sk)
        np.bitwise_xor(sk, t[:k], out=sk)
        np.add(at[:k], 1, out=at[:k])
    odd_sized = np.flatnonzero(size & 1)
    if len(odd_sized):  # the last byte of odd-sized segments
        last = data[pos[odd_sized] + size[odd_sized] - 1].astype(np.uint64)
        s = state[odd_sized]
        state[odd_sized] = _CRC64[(s ^ last) & np.uint64(0xFF)] ^ (s >> np.uint64(8))


def _shift_chunk(state: np.ndarray) -> np.ndarray:
    """Each state advanced over ``CRC_CHUNK`` zero bytes."""
    parts = state.view(np.uint16).reshape(-1, 4)
    out = _CRC64_SHIFT[0].take(parts[:, 0])
    for i in (1, 2, 3):
        out ^= _CRC64_SHIFT[i].take(parts[:, i])
    return out


def crc64s(data: np.ndarray, starts: np.ndarray, lens: np.ndarray, crc: np.ndarray | None = None) -> np.ndarray:
    """CRC-64 (Redis's) of every segment ``data[starts[k]:starts[k] + lens[k]]``, continuing from ``crc`` (zeros
    when None), all segments at once: the ``CRC_CHUNK``-byte chunks of every segment side by side from zero (two
    bytes per numpy step), folded into each segment's state in order (the CRC is linear: state' = shift(state) ^
    chunk CRC), then the rest of each segment from its state."""
    n = len(lens)
    state = np.zeros(n, dtype=np.uint64) if crc is None else crc.astype(np.uint64, copy=True)
    if n == 0:
        return state
    if len(data) < 2:
        data = np.concatenate([data, np.zeros(2, dtype=np.uint8)])  # so that pairs exist (never read past a segment)
    pairs = _pairs(data)
    starts = starts.astype(np.int64)
    chunks = lens // CRC_CHUNK
    total = int(chunks.sum())
    if total:
        first = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(chunks, out=first[1:])
        owner = np.repeat(np.arange(n), chunks)
        at = starts[owner] + (np.arange(total) - first[owner]) * CRC_CHUNK
        part = np.zeros(total, dtype=np.uint64)
        _advance(part, pairs, data, at, np.full(total, CRC_CHUNK, dtype=np.int64))
        order = np.argsort(-chunks, kind="stable")
        folded = state[order]
        base = first[order]
        count = chunks[order]
        running = np.searchsorted(-count, -(np.arange(int(count[0])) + 1), side="right").tolist()
        for j, k in enumerate(running):
            folded[:k] = _shift_chunk(folded[:k]) ^ part[base[:k] + j]
        state[order] = folded
    rest = lens - chunks * CRC_CHUNK
    order = np.argsort(-rest, kind="stable")
    tail = state[order]
    _advance(tail, pairs, data, (starts + chunks * CRC_CHUNK)[order], rest[order])
    state[order] = tail
    return state


# ---------------------------------------------------------------- elements


def lp_integers(mat: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lpStringToInt64`` of strings given as the rows of a matrix, right-aligned, left-padded with ``"0"`` bytes
    (``lens[k]``: the length of row ``k``'s string; at most 20 columns): (is an integer, its value as int64)."""
    n, width = mat.shape
    ok = np.zeros(n, dtype=bool)
    value = np.zeros(n, dtype=np.int64)
    if n == 0 or width == 0 or width > 20:
        return ok, value
    zero = np.uint8(0x30)
    candidate = (mat[:, -1] - zero) < 10  # an integer ends with a digit (most scores' bytes do not)
    if not candidate.all():
        rows = np.flatnonzero(candidate)
        if len(rows):
            ok[rows], value[rows] = lp_integers(mat[rows], lens[rows])
        return ok, value
    fixed = bool((lens == width).all())
    if fixed:
        first = mat[:, 0]
        neg = first == 0x2D
        lead = np.where(neg, mat[:, 1], first) if width > 1 else first
    else:
        at = width - lens
        first = mat[np.arange(n), at]
        neg = first == 0x2D
        lead = mat[np.arange(n), np.minimum(at + neg, width - 1)]
    if neg.any():  # the sign counts as a leading "0" below
        mat = mat.copy()
        if fixed:
            mat[neg, 0] = zero
        else:
            mat[np.flatnonzero(neg), at[neg]] = zero
    # the first digit 1-9 (not "01", "-0", "+1", "-"), or the string is "0"; 1-19 digits (within int64)
    ok = ((lead - np.uint8(0x31)) < 9) | ((lens == 1) & (first == zero))
    ok &= (lens - neg >= 1) & (lens - neg <= 19)
    acc = np.zeros(n, dtype=np.uint64)
    for lo in range(0, width, 9):  # up to 9 digits in uint32, then into the uint64 total
        part = np.zeros(n, dtype=np.uint32)
        for c in range(lo, min(lo + 9, width)):
            digit = mat[:, c] - zero
            ok &= digit < 10
            np.multiply(part, np.uint32(10), out=part)
            np.add(part, digit, out=part, casting="unsafe")
        np.multiply(acc, np.uint64(10 ** (min(lo + 9, width) - lo)), out=acc)
        np.add(acc, part, out=acc, casting="unsafe")
    fits = np.where(neg, acc <= _INT64_MAX + np.uint64(1), acc <= _INT64_MAX)  # 19 digits may not fit
    ok &= fits
    signed = acc.view(np.int64)
    if neg.any():
        signed = np.where(neg, (np.uint64(0) - acc).view(np.int64), signed)
    return ok, np.where(ok, signed, 0)


def _int_entries(v: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Listpack entries (encoding, data, back-length) of integers, written into ``out`` (a new (n, 10) matrix when
    None): the matrix and each row's length."""
    n = len(v)
    mat = np.empty((n, 10), dtype=np.uint8) if out is None else out
    mat[:, 1:9] = v.astype("<i8").view(np.uint8).reshape(n, 8)  # data: little-endian, as wide as the encoding
    magnitude = np.where(v < 0, ~v, v)  # fits k signed bits iff < 2**(k-1)
    size = ((magnitude >= 4096).astype(np.int8) + (magnitude >= 2**15) + (magnitude >= 2**23)
            + (magnitude >= 2**31))  # fmt: skip
    # 13-bit (0b110xxxxx + 1 byte), 16-bit (0xF1), 24-bit (0xF2), 32-bit (0xF3), 64-bit (0xF4)
    enclen = np.array([2, 3, 4, 5, 9], dtype=np.int64)[size]
    head = np.array([0xC0, 0xF1, 0xF2, 0xF3, 0xF4], dtype=np.uint8)[size]
    b13 = size == 0
    if b13.any():
        head[b13] |= ((v[b13] >> 8) & 0x1F).astype(np.uint8)
        b7 = (v >= 0) & (v <= 127)
        head[b7], enclen[b7] = v[b7].astype(np.uint8), 1  # 7-bit unsigned: the value is the encoding byte
    mat[:, 0] = head
    mat[np.arange(n), enclen] = enclen.astype(np.uint8)  # back-length: an entry of at most 9 bytes
    return mat, enclen + 1


def _value_entries(raw: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Listpack entries of 4-byte values (rows of ``raw``) written into ``out`` (n, >= 6): a 4-byte string (0x84, the
    bytes, back-length 5) unless the bytes spell an integer ("1234", "-123"). Returns each entry's length."""
    n = len(raw)
    out[:, 0], out[:, 1:5], out[:, 5] = 0x84, raw, 5
    size = np.full(n, 6, dtype=np.int64)
    is_int, value = lp_integers(raw, np.full(n, 4, dtype=np.int64))
    if is_int.any():
        imat, ilen = _int_entries(value[is_int])
        out[is_int, :6], size[is_int] = imat[:, :6], ilen
    return size


def _str_header(lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encoding bytes of strings (6-bit < 64 bytes, 12-bit < 4096): a (n, 2) matrix and each row's length."""
    mat = np.zeros((len(lens), 2), dtype=np.uint8)
    short = lens < 64
    mat[:, 0] = np.where(short, 0x80 | lens, 0xE0 | (lens >> 8)).astype(np.uint8)
    mat[:, 1] = (lens & 0xFF).astype(np.uint8)
    return mat, np.where(short, 1, 2)


def _backlen(enclen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lpEncodeBacklen`` of entry lengths below 16383: a (n, 2) matrix and each row's length."""
    mat = np.zeros((len(enclen), 2), dtype=np.uint8)
    short = enclen <= 127
    mat[:, 0] = np.where(short, enclen, enclen >> 7).astype(np.uint8)
    mat[:, 1] = ((enclen & 127) | 128).astype(np.uint8)
    return mat, np.where(short, 1, 2)


def _ragged(mat: np.ndarray, lens: np.ndarray) -> pa.Array:
    """The first ``lens[k]`` bytes of each row of ``mat`` as a large_binary array."""
    keep = np.arange(mat.shape[1])[None, :] < lens[:, None]
    return binary_array([], mat[keep].tobytes(), lens.astype(np.int64))


def _strings_matrix(offsets: np.ndarray, data: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """Strings ``rows`` (at most ``width`` bytes) right-aligned in a matrix left-padded with ``"0"`` bytes."""
    lens = offsets[rows + 1] - offsets[rows]
    mat = np.full((len(rows), width), 0x30, dtype=np.uint8)
    for c in range(width):
        has = lens > c  # byte c from the end
        mat[has, width - 1 - c] = data[offsets[rows[has] + 1] - 1 - c]
    return mat


def _id_integers(offsets: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lp_integers`` of the strings of an Arrow binary array's offsets and data."""
    lens = np.diff(offsets)
    short = np.flatnonzero(lens <= 20)
    if len(short) == len(lens) and len(lens) and int(lens.min()) == int(lens.max()):  # one length: a reshape
        mat = data[offsets[0] : offsets[-1]].reshape(len(lens), int(lens[0]))
        return lp_integers(mat, lens)
    ok = np.zeros(len(lens), dtype=bool)
    value = np.zeros(len(lens), dtype=np.int64)
    if len(short):
        width = int(lens[short].max())
        ok[short], value[short] = lp_integers(_strings_matrix(offsets, data, short, width), lens[short])
    return ok, value


@functools.cache
def _scalar(value: bytes) -> pa.Scalar:
    """``value`` as a large_binary scalar (built on first use: readers never import pyarrow)."""
    return binary_array([value])[0]


# _KEEP[8 * i + j]: the bytes kept of a row [id entry of i bytes, of 10][value entry of j bytes, of 6]
_KEEP = np.concatenate(
    [
        np.arange(10)[None, :] < np.repeat(np.arange(11), 8)[:, None],
        np.arange(6)[None, :] < np.tile(np.arange(8), 11)[:, None],
    ],
    axis=1,
)
_EMPTY, _CRLF = b"", b"\r\n"
_RESTORE_HEAD = b"*4\r\n$7\r\nRESTORE\r\n$"  # then the key's length, the key
_RESTORE_TTL = b"\r\n$1\r\n0\r\n$"  # then the payload's length, the payload


def _decimal(values: np.ndarray) -> pa.Array:
    """Integers as their decimal strings (large_binary)."""
    ints = pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values.astype(np.int64))])
    return ints.cast(pa.large_string()).cast(pa.large_binary())


def entity_entries(ids: pa.Array, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The listpack entries of field ``ids[k]`` then value ``scores[k]`` (float32 little-endian) of every entity,
    concatenated: (offsets, n + 1 int64; data, uint8)."""
    offsets, data = offsets_data(ids)
    lens = np.diff(offsets)
    n = len(lens)
    raw = np.ascontiguousarray(scores, dtype="<f4").view(np.uint8).reshape(n, 4)
    id_int, id_value = _id_integers(offsets, data)
    if id_int.all():  # every id an integer (numeric ids): each entity is one row [id entry][value entry]
        mat = np.empty((n, 16), dtype=np.uint8)
        _, id_size = _int_entries(id_value, mat[:, :10])
        value_size = _value_entries(raw, mat[:, 10:])
        entries = mat[_KEEP[id_size * 8 + value_size]]
        sizes = id_size + value_size
    else:  # [encoding (integer id: whole entry)] + id bytes (string ids) + [back-length (string ids)][value entry]
        id_str = ~id_int
        pre = np.zeros((n, 10), dtype=np.uint8)
        pre_len = np.zeros(n, dtype=np.int64)
        if id_int.any():
            pre[id_int], pre_len[id_int] = _int_entries(id_value[id_int])
        hmat, hlen = _str_header(lens[id_str])
        pre[id_str, :2], pre_len[id_str] = hmat, hlen
        back = np.zeros((n, 2), dtype=np.uint8)
        back_len = np.zeros(n, dtype=np.int64)
        back[id_str], back_len[id_str] = _backlen(hlen + lens[id_str])
        value = np.empty((n, 6), dtype=np.uint8)
        value_size = _value_entries(raw, value)
        post = np.zeros((n, 8), dtype=np.uint8)
        for shift in (0, 1, 2):
            rows = back_len == shift
            post[rows, :shift] = back[rows, :shift]
            post[rows, shift : shift + 6] = value[rows]
        post_len = back_len + value_size
        if id_int.any():  # integer ids' bytes are in their encoding already
            mask = pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(np.packbits(id_int, bitorder="little"))])
            body = pc.if_else(mask, _scalar(_EMPTY), ids)
        else:
            body = ids
        joined = pc.binary_join_element_wise(_ragged(pre, pre_len), body, _ragged(post, post_len), _scalar(_EMPTY))
        joff, jdata = offsets_data(joined)
        entries = jdata[joff[0] : joff[-1]]
        sizes = pre_len + np.where(id_str, lens, 0) + post_len
    entry_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=entry_offsets[1:])
    return entry_offsets, entries


# ---------------------------------------------------------------- buckets


def dedupe(batch: BucketedBatch) -> BucketedBatch:
    """``batch`` (from ``wire.bucketize``) with each repeated id once, at its first row, with its last score: what
    ``HSET`` of the batch leaves. The batch itself when no id repeats (the common case: no id is hashed or compared
    unless two adjacent rows of a bucket share a CRC-32)."""
    if batch.crcs is None:
        raise ValueError("dedupe needs a batch from bucketize (ids in CRC-32 order within each bucket)")
    crcs = batch.crcs
    tied = np.flatnonzero(crcs[1:] == crcs[:-1])  # equal CRC-32 → same bucket, adjacent rows
    if not len(tied):
        return batch
    offsets, data = offsets_data(batch.ids)
    keep = np.ones(len(crcs), dtype=bool)
    scores = batch.scores.copy()
    group_start = tied[np.r_[True, np.diff(tied) > 1]].tolist()
    group_end = (tied[np.r_[np.diff(tied) > 1, True]] + 2).tolist()
    for s, e in zip(group_start, group_end, strict=True):
        first: dict[bytes, int] = {}
        for row in range(s, e):  # rows of one CRC-32, in batch order
            text = data[offsets[row] : offsets[row + 1]].tobytes()
            if text in first:
                keep[row] = False
                scores[first[text]] = batch.scores[row]
            else:
                first[text] = row
    if keep.all():  # only CRC-32 collisions
        return batch
    rows = np.flatnonzero(keep)
    starts = np.asarray(batch.starts, dtype=np.int64)
    sizes = np.add.reduceat(keep.astype(np.int64), starts[:-1])
    return BucketedBatch(
        batch.bucket_ids, [0, *np.cumsum(sizes).tolist()], batch.ids.take(indices(rows)), scores[rows], crcs[rows]
    )


def listpack_fits(batch: BucketedBatch, max_entries: int, max_value: int) -> np.ndarray:
    """Per bucket of a deduplicated batch: whether Redis keeps it a listpack (at most ``max_entries`` fields, no
    field or value longer than ``max_value`` bytes) that this module can encode."""
    starts = np.asarray(batch.starts, dtype=np.int64)
    sizes = np.diff(starts)
    if not len(sizes):
        return np.zeros(0, dtype=bool)
    longest = np.maximum.reduceat(np.diff(offsets_data(batch.ids)[0]), starts[:-1])
    fits = (sizes <= min(max_entries, 32767)) & (longest <= min(max_value, MAX_STRING_BYTES))
    return fits & (max_value >= SCORE_BYTES)


def _rdb_len(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``rdbSaveLen`` of lengths below 2**32: a (k, 5) matrix and each row's length."""
    mat = np.zeros((len(n), 5), dtype=np.uint8)
    small, mid = n < 64, (n >= 64) & (n < 16384)
    big = ~small & ~mid
    mat[small, 0] = n[small]
    mat[mid, 0], mat[mid, 1] = 0x40 | (n[mid] >> 8), n[mid] & 0xFF
    mat[big, 0] = 0x80
    mat[big, 1:5] = n[big].astype(">u4").view(np.uint8).reshape(-1, 4)
    return mat, np.where(small, 1, np.where(mid, 2, 5))


@dataclass(frozen=True)
class Payloads:
    """The DUMP payloads of the buckets of a batch in three pieces per bucket (payload = prefix + body + suffix +
    CRC-64 as 8 bytes little-endian), and each payload's length."""

    prefix: pa.Array  # RDB type, RDB string length, listpack header
    body: pa.Array  # the listpack's entries (slices of one buffer, no copy)
    suffix: pa.Array  # listpack terminator, RDB version
    crc: pa.Array  # the CRC-64 of the three pieces before it
    lengths: np.ndarray


def payloads(batch: BucketedBatch, rdb_version: int) -> Payloads:
    """The DUMP payload of every bucket of a deduplicated batch whose buckets all fit a listpack
    (``listpack_fits``), for a server whose RDB version is ``rdb_version``."""
    entry_offsets, entries = entity_entries(batch.ids, batch.scores)
    starts = np.asarray(batch.starts, dtype=np.int64)
    k = len(starts) - 1
    bounds = entry_offsets[starts]
    body_len = np.diff(bounds)
    lp_bytes = 6 + body_len + 1
    rmat, rlen = _rdb_len(lp_bytes)
    header = np.empty((k, 6), dtype=np.uint8)
    header[:, 0:4] = lp_bytes.astype("<u4").view(np.uint8).reshape(k, 4)
    header[:, 4:6] = (2 * np.diff(starts)).astype("<u2").view(np.uint8).reshape(k, 2)
    prefix = np.zeros((k, 12), dtype=np.uint8)
    prefix[:, 0] = RDB_TYPE_HASH_LISTPACK
    for size in (1, 2, 5):
        rows = rlen == size
        prefix[rows, 1 : 1 + size] = rmat[rows, :size]
        prefix[rows, 1 + size : 7 + size] = header[rows]
    prefix_len = 7 + rlen
    prefix_arr = _ragged(prefix, prefix_len)
    body = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), k, [None, pa.py_buffer(bounds - bounds[0]), pa.py_buffer(entries[bounds[0] : bounds[-1]])]
    )
    suffix = np.empty((k, 3), dtype=np.uint8)
    suffix[:] = (0xFF, rdb_version & 0xFF, (rdb_version >> 8) & 0xFF)
    every3 = np.full(k, 3, dtype=np.int64)
    poff, pdata = offsets_data(prefix_arr)
    crc = crc64s(pdata, poff[:-1], np.diff(poff))
    crc = crc64s(entries, bounds[:-1], body_len, crc)
    crc = crc64s(suffix.ravel(), 3 * np.arange(k, dtype=np.int64), every3, crc)
    return Payloads(
        prefix_arr,
        body,
        binary_array([], suffix.tobytes(), every3),
        binary_array([], crc.astype("<u8").tobytes(), np.full(k, 8, dtype=np.int64)),
        prefix_len + body_len + 3 + 8,
    )


def dump_payloads(batch: BucketedBatch, rdb_version: int) -> list[bytes]:
    """Each bucket's whole payload, as ``DUMP`` answers it (``rdbcompression no``): for tests and one-off use."""
    p = payloads(batch, rdb_version)
    return pc.binary_join_element_wise(p.prefix, p.body, p.suffix, p.crc, _scalar(_EMPTY)).to_pylist()


def restore_commands(
    batch: BucketedBatch, key_of: list[bytes], rdb_version: int, per_chunk: int
) -> list[tuple[bytes, int]]:
    """RESP-encoded ``RESTORE key 0 payload``, one per bucket of a deduplicated batch whose buckets all fit a
    listpack, ``key_of[k]`` the key of ``batch.bucket_ids[k]``, grouped into chunks of ~``per_chunk`` entities.
    Returns ``(wire bytes, number of commands)`` per chunk (as ``wire.hset_commands``)."""
    if not key_of:
        return []
    p = payloads(batch, rdb_version)
    keys = binary_array(key_of)
    crlf = _scalar(_CRLF)
    wire = pc.binary_join_element_wise(
        _scalar(_RESTORE_HEAD), _decimal(np.diff(offsets_data(keys)[0])), crlf, keys, _scalar(_RESTORE_TTL),
        _decimal(p.lengths), crlf, p.prefix, p.body, p.suffix, p.crc, crlf, _scalar(_EMPTY),
    )  # fmt: skip
    offsets, data = offsets_data(wire)
    cumulative = np.cumsum(np.diff(np.asarray(batch.starts, dtype=np.int64)))
    chunks: list[tuple[bytes, int]] = []
    first, done = 0, 0
    while first < len(key_of):
        last = min(int(np.searchsorted(cumulative, done + per_chunk, side="left")), len(key_of) - 1)
        chunks.append((data[offsets[first] : offsets[last + 1]].tobytes(), last + 1 - first))
        done, first = int(cumulative[last]), last + 1
    return chunks
