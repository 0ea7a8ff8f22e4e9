"""The prediction-log stream: its Redis key, the encoding of one stream entry, and the Parquet schema of a record.

The online reader appends every answer it gives; ``jobs.prediction_drain`` moves the entries to Parquet.

- One stream, ``STREAM_KEY``; entries are added with ``XADD ... MAXLEN ~ n *`` (Redis-generated, increasing ids).
- One entry carries many records: field ``v`` = ``FORMAT_VERSION``, field ``r`` = an orjson list of records, each
  record a list in ``FIELDS`` order. Few commands per record, compact.
- ``ts`` is the answer's UTC time in epoch seconds; ``latency_us`` the server-side time to answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pyarrow as pa

STREAM_KEY = "ps:predlog"
FORMAT_VERSION = b"1"
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
)
# A record as the reader builds it: the FIELDS in order.
Record = tuple[str, str, str, str | None, str | None, str, float, int, float]

ARROW_SCHEMA = pa.schema(
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
    ]
)


class StreamFormatError(ValueError):
    """A stream entry that this version cannot decode (written by a newer reader, or corrupted)."""


def encode_entry(records: Sequence[Record]) -> dict[bytes, bytes]:
    """The fields of one ``XADD`` carrying ``records``."""
    return {b"v": FORMAT_VERSION, b"r": orjson.dumps(records)}


def decode_entry(entry_id: str, fields: Mapping[bytes, bytes]) -> list[list[Any]]:
    """The records of one entry, each a list in ``FIELDS`` order; ``StreamFormatError`` names the entry."""
    version = fields.get(b"v")
    if version != FORMAT_VERSION:
        raise StreamFormatError(f"prediction-log entry {entry_id} has format {version!r}, expected {FORMAT_VERSION!r}")
    try:
        records = orjson.loads(fields[b"r"])
    except (KeyError, orjson.JSONDecodeError) as exc:
        raise StreamFormatError(f"prediction-log entry {entry_id} has no readable records: {exc}") from None
    if not isinstance(records, list) or any(not isinstance(r, list) or len(r) != len(FIELDS) for r in records):
        raise StreamFormatError(f"prediction-log entry {entry_id}: records must be lists of {len(FIELDS)} values")
    return records


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` → (ms, seq), for ordering entry ids numerically."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def records_table(entries: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> pa.Table:
    """A table in ``ARROW_SCHEMA`` of the records of ``(entry_id, records)`` pairs, in order."""
    columns: list[list[Any]] = [[] for _ in range(len(FIELDS) + 1)]
    for entry_id, records in entries:
        for record in records:
            columns[0].append(entry_id)
            for i, value in enumerate(record, start=1):
                columns[i].append(value)
    ts_us = [round(t * 1_000_000) for t in columns[-1]]
    arrays = [pa.array(col, type=field.type) for col, field in zip(columns[:-1], ARROW_SCHEMA, strict=False)]
    arrays.append(pa.array(ts_us, type=pa.int64()).cast(ARROW_SCHEMA.field("ts").type))
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)
