"""The prediction-log stream: its Redis keys, the encoding of one stream entry, the scripts that keep it within a
memory budget, and the Parquet schema of a record.

The online reader appends every answer it gives (``APPEND_SCRIPT``); ``jobs.prediction_drain`` moves the entries
to Parquet and deletes them (``DELETE_SCRIPT``).

- One stream, ``STREAM_KEY``, with Redis-generated, increasing entry ids.
- One entry carries many records: field ``v`` = ``FORMAT_VERSION``, field ``r`` = an orjson list of records, each
  record a list in ``FIELDS`` order; ``b`` = the entry's accounted bytes (``accounted_bytes``), ``n`` = its record
  count. Few commands per record, compact.
- ``ts`` is the answer's UTC time in epoch seconds; ``latency_us`` the server-side time to answer; ``variant`` the
  rollout variant that answered (``warehouse.rollout``: champion or challenger); with a challenger in shadow,
  ``shadow_score`` / ``shadow_model_version`` / ``shadow_run_id`` hold the challenger's score (null: a miss) and the
  run it was read from. A record may stop after ``variant`` (no shadow read): ``decode_entry`` fills the rest with
  nulls.
- Format 1 (records of the first nine fields, written before rollouts) stays readable: its records decode with
  variant ``champion`` (the only one there was) and no shadow.

The bound is in bytes, not entries (an entry holds 1 to ``MAX_RECORDS_PER_ENTRY`` records). Two keys in the
stream's hash slot (``side_keys``) hold the accounted size of the stream and the count of records trimmed before a
drain reached them. Each append adds its entry and, in the same script, trims the oldest entries until the
accounted size is within the budget (``XTRIM MINID``, exact); the trimmed records are counted. It reads the oldest
entries a few at a time (2, doubling up to 128 a read): an append at the budget usually drops one or two, and
``XRANGE`` copies each entry it returns, payload and all, into the script, which blocks the server meanwhile
(reading 100 at once cost ~7 ms per append of 500-record entries, against ~0.3 ms now, at every flush of every
reader). The accounted size of an entry (``accounted_bytes``) is an upper bound of what the entry costs in
``MEMORY USAGE`` (measured on Redis 7: 60 bytes of overhead for a one-record entry, at most 21 % of the payload for
larger ones), so the stream's real memory stays under the budget. The side keys have no TTL and go with the stream
(``FLUSHALL``); a counter that lost its stream heals itself on the next append that trims everything older.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from warehouse.errors import ConfigError
from warehouse.lazy import lazy_module

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = lazy_module("pyarrow")

STREAM_KEY = "ps:predlog"
FORMAT_VERSION = b"2"
READABLE_VERSIONS = (b"1", FORMAT_VERSION)
MAX_RECORDS_PER_ENTRY = 2000
ENTRY_OVERHEAD_BYTES = 128
PAYLOAD_FACTOR = 1.25
MIN_BUDGET_BYTES = 1 << 20  # an entry of MAX_RECORDS_PER_ENTRY records fits many times over
FIELDS = (
    "request_id",
    "model",
    "entity_id",
    "model_version",
    "run_id",
    "source",
    "score",
    "latency_us",
    "ts",
    "variant",
    "shadow_score",
    "shadow_model_version",
    "shadow_run_id",
)
BASE_FIELDS = 9  # the fields of a format-1 record: request_id … ts
WIDTHS = (BASE_FIELDS, BASE_FIELDS + 1, len(FIELDS))  # a record's lengths: format 1; no shadow read; a shadow read
# A record as the reader builds it: the FIELDS in order, the shadow fields only with a shadow read.
Record = (
    tuple[str, str, str, str | None, str | None, str, float, int, float]
    | tuple[str, str, str, str | None, str | None, str, float, int, float, str]
    | tuple[str, str, str, str | None, str | None, str, float, int, float, str, float | None, str, str]
)


@functools.cache
def arrow_schema() -> pa.Schema:
    """The Parquet schema of drained records (built on first use: the online reader, which only appends to the
    stream, never imports pyarrow); also the module attribute ``ARROW_SCHEMA``."""
    return pa.schema(
        [
            pa.field("entry_id", pa.string(), nullable=False),  # the stream entry the record came from
            pa.field("request_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("entity_id", pa.string(), nullable=False),
            pa.field("model_version", pa.string()),
            pa.field("run_id", pa.string()),
            pa.field("source", pa.string(), nullable=False),
            pa.field("score", pa.float64(), nullable=False),
            pa.field("latency_us", pa.int64(), nullable=False),
            pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("variant", pa.string(), nullable=False),
            pa.field("shadow_score", pa.float64()),
            pa.field("shadow_model_version", pa.string()),
            pa.field("shadow_run_id", pa.string()),
        ]
    )


def __getattr__(name: str) -> Any:
    if name == "ARROW_SCHEMA":
        return arrow_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# what a shorter record is filled with: format 1 → variant champion, no shadow; no shadow read → no shadow
_PAD: dict[int, list[Any]] = {BASE_FIELDS: ["champion", None, None, None], BASE_FIELDS + 1: [None] * 3, len(FIELDS): []}


class StreamFormatError(ValueError):
    """A stream entry that this version cannot decode (written by a newer reader, or corrupted)."""


def encode_entry(records: Sequence[Record]) -> dict[bytes, bytes]:
    """The fields of one ``XADD`` carrying ``records``."""
    payload = orjson.dumps(records)
    return {
        b"v": FORMAT_VERSION,
        b"r": payload,
        b"b": b"%d" % accounted_bytes(len(payload)),
        b"n": b"%d" % len(records),
    }


def accounted_bytes(payload_len: int) -> int:
    """What an entry with a ``payload_len``-byte record list is charged against the budget (an upper bound of
    its ``MEMORY USAGE`` share: listpack and allocator overhead included)."""
    return int(payload_len * PAYLOAD_FACTOR) + ENTRY_OVERHEAD_BYTES


def side_keys(stream_key: str = STREAM_KEY) -> tuple[str, str]:
    """``(accounted-bytes key, trimmed-records key)``, in the stream's Redis Cluster hash slot.

    Redis hashes the first ``{...}`` of a key when it is non-empty (the hash tag), else the whole key. A key with a
    hash tag keeps it (the side keys append to the key), a key without one is wrapped in braces (its whole text is
    then the tag); a key without a hash tag that holds a ``}`` cannot be wrapped that way and is refused
    (``ConfigError``)."""
    start = stream_key.find("{")
    end = stream_key.find("}", start + 1) if start >= 0 else -1
    if start >= 0 and end > start + 1:
        base = stream_key  # a non-empty hash tag: every key that starts with it hashes the same
    elif "}" in stream_key:
        raise ConfigError(
            f"prediction log stream key {stream_key!r} holds a '}}' but no Redis hash tag: use a key without "
            "braces or with one non-empty {tag}"
        )
    else:
        base = "{" + stream_key + "}"
    return f"{base}:bytes", f"{base}:trimmed"


# KEYS: stream, bytes, trimmed. ARGV: budget, accounted bytes, records, version, payload.
# Returns {entry id, entries trimmed, records trimmed, accounted bytes after}.
APPEND_SCRIPT = """
local budget, size = tonumber(ARGV[1]), tonumber(ARGV[2])
local id = redis.call('XADD', KEYS[1], '*', 'v', ARGV[4], 'r', ARGV[5], 'b', ARGV[2], 'n', ARGV[3])
local total = redis.call('INCRBY', KEYS[2], size)
if total <= budget then return {id, 0, 0, total} end
local keep, entries, records, start, done, count = id, 0, 0, '-', false, 2
while not done do
  local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', count)
  if count < 128 then count = count * 2 end
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    if e[1] == id then keep = id; total = size; done = true; break end
    if total <= budget then keep = e[1]; done = true; break end
    local f, b, n, r = e[2], nil, nil, nil
    for i = 1, #f, 2 do
      if f[i] == 'b' then b = tonumber(f[i + 1]) elseif f[i] == 'n' then n = tonumber(f[i + 1])
      elseif f[i] == 'r' then r = f[i + 1] end
    end
    if b == nil then b = math.floor(#(r or '') * __FACTOR__) + __OVERHEAD__ end
    if n == nil then
      local ok, list = pcall(cjson.decode, r or '[]')
      n = (ok and type(list) == 'table') and #list or 0
    end
    total, entries, records = total - b, entries + 1, records + n
  end
  start = '(' .. batch[#batch][1]
end
redis.call('XTRIM', KEYS[1], 'MINID', keep)
if total < 0 then total = 0 end
redis.call('SET', KEYS[2], total)
if records > 0 then redis.call('INCRBY', KEYS[3], records) end
return {id, entries, records, total}
""".replace("__FACTOR__", repr(PAYLOAD_FACTOR)).replace("__OVERHEAD__", str(ENTRY_OVERHEAD_BYTES))

# KEYS: stream, bytes. ARGV: id1, bytes1, id2, bytes2, ... Deletes the entries still there and uncharges them
# (an entry already trimmed by an append was uncharged then). Returns the bytes uncharged.
DELETE_SCRIPT = """
local freed = 0
for i = 1, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then freed = freed + tonumber(ARGV[i + 1]) end
end
local total = redis.call('DECRBY', KEYS[2], freed)
if total < 0 or redis.call('XLEN', KEYS[1]) == 0 then redis.call('SET', KEYS[2], 0) end
return freed
"""


def entry_bytes(fields: Mapping[bytes, bytes]) -> int:
    """The accounted bytes of a stream entry as read back (``b``; estimated for entries written without it)."""
    charged = fields.get(b"b")
    return int(charged) if charged is not None else accounted_bytes(len(fields.get(b"r", b"")))


def decode_entry(entry_id: str, fields: Mapping[bytes, bytes]) -> list[list[Any]]:
    """The records of one entry (format 1 or 2), each a list of every field of ``FIELDS`` in order (a record
    without the shadow fields gets nulls, a format-1 record also variant ``champion``); ``StreamFormatError``
    names the entry."""
    version = fields.get(b"v")
    if version not in READABLE_VERSIONS:
        raise StreamFormatError(
            f"prediction-log entry {entry_id} has format {version!r}, expected one of {READABLE_VERSIONS!r}"
        )
    try:
        records = orjson.loads(fields[b"r"])
    except (KeyError, orjson.JSONDecodeError) as exc:
        raise StreamFormatError(f"prediction-log entry {entry_id} has no readable records: {exc}") from None
    if not isinstance(records, list) or any(not isinstance(r, list) or len(r) not in WIDTHS for r in records):
        raise StreamFormatError(
            f"prediction-log entry {entry_id}: records must be lists of {' or '.join(map(str, WIDTHS))} values"
        )
    for record in records:
        record.extend(_PAD[len(record)])
    return records


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` → (ms, seq), for ordering entry ids numerically."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def records_table(entries: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> pa.Table:
    """A table in ``ARROW_SCHEMA`` of the records of ``(entry_id, records)`` pairs, in order (a record of a shorter
    width filled as ``decode_entry`` does)."""
    columns: list[list[Any]] = [[] for _ in range(len(FIELDS) + 1)]
    for entry_id, records in entries:
        for record in records:
            columns[0].append(entry_id)
            pad = _PAD[len(record)]
            for i, value in enumerate([*record, *pad] if pad else record, start=1):
                columns[i].append(value)
    ts = FIELDS.index("ts") + 1
    columns[ts] = [round(t * 1_000_000) for t in columns[ts]]
    arrays = [
        pa.array(col, type=pa.int64()).cast(field.type) if i == ts else pa.array(col, type=field.type)
        for i, (col, field) in enumerate(zip(columns, arrow_schema(), strict=True))
    ]
    return pa.Table.from_arrays(arrays, schema=arrow_schema())
