"""The prediction-log stream format and its byte budget: encoding round trips, and the APPEND/DELETE scripts run
against a real redis-server keep the accounted size equal to what the stream holds, and within the budget."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pyarrow as pa
import pytest
import redis
from redis.crc import key_slot

from warehouse.errors import ConfigError
from warehouse.prediction_stream import (
    APPEND_SCRIPT,
    ARROW_SCHEMA,
    DELETE_SCRIPT,
    FIELDS,
    FORMAT_VERSION,
    MIN_BUDGET_BYTES,
    STREAM_KEY,
    Record,
    StreamFormatError,
    accounted_bytes,
    decode_entry,
    encode_entry,
    entry_bytes,
    parse_entry_id,
    records_table,
    side_keys,
)

TS = 1_790_000_000.25  # a fixed answer time (epoch seconds); nothing here compares with "now"


def records(n: int, start: int = 0) -> list[Record]:
    return [
        (
            f"req-{start + i}",
            "churn",
            f"cust-{start + i:06d}",
            "v1",
            "run-1",
            "precomputed",
            0.25 + i / 1e4,
            120 + i,
            TS,
            "champion",
        )
        for i in range(n)
    ]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def test_encode_decode_round_trip() -> None:
    """An entry decodes back to its records, in ``FIELDS`` order, and carries its accounted bytes and count."""
    batch = records(3)
    fields = encode_entry(batch)
    assert fields[b"v"] == FORMAT_VERSION and int(fields[b"n"]) == 3
    assert int(fields[b"b"]) == accounted_bytes(len(fields[b"r"])) == entry_bytes(fields)
    assert decode_entry("1-0", fields) == [[*r, None, None, None] for r in batch]
    assert all(len(r) == len(FIELDS) for r in decode_entry("1-0", fields))
    shadowed = [(*records(1)[0][:9], "champion", 0.75, "v2", "run-c")]
    assert decode_entry("1-1", encode_entry(shadowed)) == [list(shadowed[0])]  # type: ignore[arg-type]


def test_format_1_entries_stay_readable() -> None:
    """An entry written before rollouts (format 1, nine fields a record) decodes as the champion's, with no shadow,
    and goes into the table like any other."""
    old = [r[:9] for r in records(2)]
    fields = {b"v": b"1", b"r": orjson.dumps(old), b"n": b"2"}
    decoded = decode_entry("3-0", fields)
    assert decoded == [[*r, "champion", None, None, None] for r in old]
    table = records_table([("3-0", decoded), ("3-1", old)])  # type: ignore[list-item]
    assert table.column("variant").to_pylist() == ["champion"] * 4
    assert table.column("shadow_score").to_pylist() == [None] * 4


def test_accounted_bytes_grows_with_the_payload_and_charges_overhead() -> None:
    """The charge is above the payload itself (overhead included) and never shrinks as the payload grows."""
    charges = [accounted_bytes(n) for n in (0, 1, 100, 10_000)]
    assert all(c > n for c, n in zip(charges, (0, 1, 100, 10_000), strict=True))
    assert charges == sorted(charges)
    without_b = {b"v": FORMAT_VERSION, b"r": b"[]"}
    assert entry_bytes(without_b) == accounted_bytes(2)  # estimated for entries written without ``b``


def test_undecodable_entries_name_the_entry() -> None:
    """A newer format, missing or broken records, records of the wrong width: ``StreamFormatError`` names the id."""
    good = encode_entry(records(1))
    with pytest.raises(StreamFormatError, match="entry 5-1 has format b'3'"):
        decode_entry("5-1", {**good, b"v": b"3"})
    with pytest.raises(StreamFormatError, match="entry 5-2 has no readable records"):
        decode_entry("5-2", {b"v": FORMAT_VERSION})
    with pytest.raises(StreamFormatError, match="entry 5-3 has no readable records"):
        decode_entry("5-3", {b"v": FORMAT_VERSION, b"r": b"[[1,"})
    with pytest.raises(StreamFormatError, match=f"entry 5-4: records must be lists of 9 or 10 or {len(FIELDS)} values"):
        decode_entry("5-4", {b"v": FORMAT_VERSION, b"r": orjson.dumps([["only", "two"]])})


def test_side_keys_share_the_streams_hash_slot() -> None:
    """Both side keys hash to the stream's Redis Cluster slot, whether or not the stream key has a hash tag."""
    for stream in (STREAM_KEY, "{ps}:predlog", "x{y}z", "a{b"):
        bytes_key, trimmed_key = side_keys(stream)
        assert bytes_key != trimmed_key and stream not in (bytes_key, trimmed_key)
        assert key_slot(bytes_key.encode()) == key_slot(trimmed_key.encode()) == key_slot(stream.encode())


def test_a_stream_key_whose_braces_are_no_hash_tag_is_refused() -> None:
    """Keys like ``a{}b`` hash whole, and no other key can be built to share their slot: refused, naming the key."""
    for stream in ("a{}b", "a}{b", "{}x}"):
        with pytest.raises(ConfigError, match="no Redis hash tag"):
            side_keys(stream)


def test_entry_ids_order_numerically() -> None:
    """``parse_entry_id`` orders ids by number, not text (``10-0`` after ``9-5``)."""
    ids = ["10-0", "9-5", "9-10", "100"]
    assert sorted(ids, key=parse_entry_id) == ["9-5", "9-10", "10-0", "100"]


def test_records_table_has_the_arrow_schema_and_utc_times() -> None:
    """Records of two entries become one table in ``ARROW_SCHEMA``, tagged with their entry id, times in UTC."""
    first, second = records(2), records(1, start=2)
    table = records_table([("1-0", first), ("2-0", second)])
    assert table.schema == ARROW_SCHEMA and table.num_rows == 3
    assert table.column("entry_id").to_pylist() == ["1-0", "1-0", "2-0"]
    assert table.column("request_id").to_pylist() == [r[0] for r in [*first, *second]]
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    assert ts == [round(TS * 1_000_000)] * 3


def _append(client: redis.Redis, batch: list[Record], budget: int) -> list[object]:
    fields = encode_entry(batch)
    args = (budget, fields[b"b"], fields[b"n"], fields[b"v"], fields[b"r"])
    return client.eval(APPEND_SCRIPT, 3, STREAM_KEY, *side_keys(), *args)  # type: ignore[return-value]


def _stream_accounting(client: redis.Redis) -> tuple[int, int]:
    """(sum of the accounted bytes of the entries the stream holds, records it holds), read back entry by entry."""
    entries = client.xrange(STREAM_KEY)
    return sum(entry_bytes(f) for _, f in entries), sum(int(f[b"n"]) for _, f in entries)


def test_append_keeps_the_stream_within_its_byte_budget(client: redis.Redis) -> None:
    """Appending far past the budget: the side counter always equals the entries' accounted bytes, stays within the
    budget, the stream's real memory is under it, and every record trimmed is counted."""
    budget, per_entry, appended = MIN_BUDGET_BYTES, 200, 0
    trimmed_reported = 0
    while appended < 40 * per_entry or trimmed_reported == 0:
        reply = _append(client, records(per_entry, start=appended), budget)
        appended += per_entry
        trimmed_reported += int(reply[2])  # type: ignore[call-overload]
        held_bytes, _ = _stream_accounting(client)
        assert int(reply[3]) == held_bytes == int(client.get(side_keys()[0]) or 0) <= budget  # type: ignore[call-overload]
    _, held_records = _stream_accounting(client)
    assert int(client.get(side_keys()[1]) or 0) == trimmed_reported == appended - held_records > 0
    assert client.memory_usage(STREAM_KEY, samples=0) <= budget  # type: ignore[operator]


def test_an_entry_larger_than_the_budget_keeps_only_itself(client: redis.Redis) -> None:
    """When the newest entry alone exceeds the budget, every older entry goes and the counter is that entry's size."""
    _append(client, records(5), MIN_BUDGET_BYTES)
    _append(client, records(5, start=5), MIN_BUDGET_BYTES)
    big = records(50, start=10)
    reply = _append(client, big, budget=100)
    assert client.xlen(STREAM_KEY) == 1 and reply[1:3] == [2, 10]
    assert int(client.get(side_keys()[0]) or 0) == _stream_accounting(client)[0] == int(reply[3])  # type: ignore[call-overload]


def test_delete_uncharges_only_entries_still_there(client: redis.Redis) -> None:
    """DELETE uncharges what it removes (an id already gone is not charged twice); an empty stream resets to 0."""
    ids = [_append(client, records(3, start=3 * i), MIN_BUDGET_BYTES)[0] for i in range(3)]
    by_id = {i: entry_bytes(f) for i, f in client.xrange(STREAM_KEY)}
    before = int(client.get(side_keys()[0]) or 0)
    args: list[object] = [ids[0], by_id[ids[0]], ids[0], by_id[ids[0]]]  # the same entry twice
    freed = client.eval(DELETE_SCRIPT, 2, STREAM_KEY, side_keys()[0], *args)
    assert freed == by_id[ids[0]]
    assert int(client.get(side_keys()[0]) or 0) == before - by_id[ids[0]] == _stream_accounting(client)[0]
    rest = [x for i in ids[1:] for x in (i, by_id[i])]
    client.eval(DELETE_SCRIPT, 2, STREAM_KEY, side_keys()[0], *rest)
    assert client.xlen(STREAM_KEY) == 0 and int(client.get(side_keys()[0]) or 0) == 0
