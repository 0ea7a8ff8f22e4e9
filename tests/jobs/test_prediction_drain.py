"""The prediction-log drain against a real Redis: every record reaches Parquet exactly once, crashes included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis

from jobs.prediction_drain import drain_predictions, watermark
from warehouse.errors import UserError
from warehouse.prediction_stream import ARROW_SCHEMA, STREAM_KEY, Record, encode_entry

DAY_MS = 86_400_000
T0 = 1_790_000_000_000  # 2026-09-21 UTC, in ms


def records(n: int, start: int = 0, ts: float = T0 / 1000) -> list[Record]:
    return [
        (f"req-{start + i}", "churn", f"e{start + i}", "v1" if i % 2 else None, "run-1" if i % 2 else None,
         "precomputed" if i % 2 else "default", 0.25 + i * 1e-3, 120 + i, ts + i * 1e-3)
        for i in range(n)
    ]  # fmt: skip


def add(client: redis.Redis, entries: int, per_entry: int, first_ms: int | None = None) -> list[Record]:
    """Append ``entries`` stream entries of ``per_entry`` records (ids at ``first_ms`` + k ms when given)."""
    added: list[Record] = []
    for k in range(entries):
        batch = records(per_entry, start=client.incrby("test:seq", per_entry) - per_entry)
        entry_id = f"{first_ms + k}-0" if first_ms is not None else "*"
        client.xadd(STREAM_KEY, encode_entry(batch), id=entry_id)  # type: ignore[arg-type]
        added += batch
    return added


def read_all(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((out / "prediction_logs").glob("dt=*/part-*.parquet")):
        table = pq.read_table(path)
        assert table.schema.equals(ARROW_SCHEMA, check_metadata=False)
        rows += table.to_pylist()
    return rows


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def test_drain_moves_every_record_once_and_empties_the_stream(redis_url: str, client: redis.Redis, tmp_path: Path):
    """Entries of two days land in two dt= partitions; the stream is empty afterwards; a second drain is a no-op."""
    sent = add(client, 3, 4, first_ms=T0) + add(client, 2, 5, first_ms=T0 + DAY_MS)
    report = drain_predictions(redis_url, tmp_path, batch_entries=2)
    assert (report.entries, report.records, report.already_drained) == (5, len(sent), 0)
    days = sorted(p.parent.name for p in report.files)
    assert days[0] == "dt=2026-09-21" and days[-1] == "dt=2026-09-22"
    assert all(p.name.startswith("part-") and p.name.endswith(".parquet") for p in report.files)
    rows = read_all(tmp_path)
    assert [r["request_id"] for r in rows] == [r[0] for r in sent]
    assert rows[0]["model_version"] is None and rows[1]["model_version"] == "v1"
    assert rows[0]["ts"].timestamp() == pytest.approx(sent[0][8])
    assert client.xlen(STREAM_KEY) == 0
    assert drain_predictions(redis_url, tmp_path).entries == 0
    assert len(read_all(tmp_path)) == len(sent)


def test_crash_between_write_and_delete_then_rerun_gives_no_duplicates_and_no_loss(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    """The first file is written, then the drain dies before XDEL; new entries arrive; the rerun writes each
    record exactly once (the crashed file is kept, its entries are only deleted)."""
    sent = add(client, 4, 3)

    def crash(path: Path) -> None:
        raise RuntimeError(f"simulated crash after writing {path.name}")

    with pytest.raises(RuntimeError, match="simulated crash"):
        drain_predictions(redis_url, tmp_path, batch_entries=10, after_write=crash)
    assert client.xlen(STREAM_KEY) == 4  # nothing deleted yet
    assert len(read_all(tmp_path)) == len(sent)  # but the file is in place
    sent += add(client, 3, 2)  # traffic goes on before the rerun

    report = drain_predictions(redis_url, tmp_path, batch_entries=10)
    assert report.already_drained == 4 and report.entries == 3
    rows = read_all(tmp_path)
    assert sorted(r["request_id"] for r in rows) == sorted(r[0] for r in sent)
    assert len({r["request_id"] for r in rows}) == len(rows)
    assert client.xlen(STREAM_KEY) == 0


def test_crash_while_writing_leaves_no_visible_part_and_loses_nothing(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    """A temp file left by a crash mid-write is not a part file: the watermark ignores it, the rerun drains all."""
    sent = add(client, 2, 3)
    partial = tmp_path / "prediction_logs" / "dt=2026-09-21" / ".part-1-0-2-0.parquet.dead.tmp"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"PAR1 torn")
    assert watermark(tmp_path / "prediction_logs") is None
    drain_predictions(redis_url, tmp_path)
    assert sorted(r["request_id"] for r in read_all(tmp_path)) == sorted(r[0] for r in sent)


def test_max_entries_bounds_one_call(redis_url: str, client: redis.Redis, tmp_path: Path) -> None:
    """``max_entries`` stops a drain early; the next call continues where it stopped."""
    sent = add(client, 5, 1)
    assert drain_predictions(redis_url, tmp_path, batch_entries=2, max_entries=3).entries == 3
    assert client.xlen(STREAM_KEY) == 2
    assert drain_predictions(redis_url, tmp_path).entries == 2
    assert [r["request_id"] for r in read_all(tmp_path)] == [r[0] for r in sent]


def test_a_second_drainer_is_refused_while_one_holds_the_lock(redis_url: str, client: redis.Redis, tmp_path: Path):
    """Two drainers could cut different batches and write overlapping files: the lock admits one."""
    add(client, 1, 1)
    client.set(STREAM_KEY + ":drain-lock", "someone-else", ex=60)
    with pytest.raises(UserError, match="another drain"):
        drain_predictions(redis_url, tmp_path)
    assert client.xlen(STREAM_KEY) == 1
