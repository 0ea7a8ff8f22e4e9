"""Feature/label dataset layout, reads, and atomic partition writes — on real files under tmp_path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warehouse.datasets.features import (
    SUCCESS_MARKER,
    available_dates,
    available_label_dates,
    iter_partition,
    label_partition_dir,
    parse_date,
    partition_dir,
    partition_files,
    read_labels,
    read_partition,
    staged_partition,
    write_partition_atomically,
)
from warehouse.errors import PartitionNotFoundError, UserError

DAY = dt.date(2026, 11, 20)
FS = "customer_daily"


def _writer(values: list[int], files: int = 1):
    """A write_fn that writes ``files`` parquet files of column ``x``, each a copy of ``values``."""

    def write(directory: Path) -> None:
        for i in range(files):
            pq.write_table(pa.table({"x": values, "y": [v * 2 for v in values]}), directory / f"part-{i:05d}.parquet")

    return write


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".staging-" in p.name or ".replaced-" in p.name)


def test_paths_are_pure_and_follow_the_layout(tmp_path: Path) -> None:
    """Path helpers build root/features|labels/<fs>/dt=YYYY-MM-DD and touch nothing."""
    assert partition_dir(tmp_path, FS, DAY) == tmp_path / "features" / FS / "dt=2026-11-20"
    assert label_partition_dir(tmp_path, FS, DAY) == tmp_path / "labels" / FS / "dt=2026-11-20"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["2026-11-20", " 2026-11-20 "])
def test_parse_date_accepts_iso_days(text: str) -> None:
    assert parse_date(text) == DAY
    assert parse_date(DAY) == DAY


@pytest.mark.parametrize("text", ["2026-13-01", "2026-02-30", "20261120", "2026-1-5", "yesterday", ""])
def test_parse_date_rejects_anything_else(text: str) -> None:
    with pytest.raises(UserError, match=r"bad date .*expected YYYY-MM-DD"):
        parse_date(text)


def test_missing_partition_names_the_path_and_the_fix(tmp_path: Path) -> None:
    """Reading a partition that was never written says which path is missing and how to create it."""
    expected = str(partition_dir(tmp_path, FS, DAY))
    with pytest.raises(PartitionNotFoundError, match="prescore synth") as info:
        partition_files(tmp_path, FS, DAY)
    assert expected in str(info.value)
    with pytest.raises(PartitionNotFoundError, match="dt=2026-11-20"):
        read_partition(tmp_path, FS, DAY)
    with pytest.raises(PartitionNotFoundError, match=r"labels/customer_daily/dt=2026-11-20"):
        read_labels(tmp_path, FS, DAY)


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    """A written partition has _SUCCESS, sorted part files, and reads back whole or by column."""
    final = write_partition_atomically(partition_dir(tmp_path, FS, DAY), _writer([1, 2, 3], files=2))
    assert (final / SUCCESS_MARKER).is_file()
    assert [p.name for p in partition_files(tmp_path, FS, DAY)] == ["part-00000.parquet", "part-00001.parquet"]
    assert read_partition(tmp_path, FS, DAY).column("x").to_pylist() == [1, 2, 3, 1, 2, 3]
    assert read_partition(tmp_path, FS, DAY, columns=["y"]).column_names == ["y"]
    assert [t.num_rows for t in iter_partition(tmp_path, FS, DAY)] == [3, 3]
    assert available_dates(tmp_path, FS) == [DAY]
    assert _leftovers(final.parent) == []


def test_read_labels(tmp_path: Path) -> None:
    def write(directory: Path) -> None:
        table = pa.table({"entity_id": ["0000000001", "0000000002"], "label": pa.array([0, 1], pa.int8())})
        pq.write_table(table, directory / "part-00000.parquet")

    write_partition_atomically(label_partition_dir(tmp_path, FS, DAY), write)
    labels = read_labels(tmp_path, FS, DAY)
    assert labels.schema.field("label").type == pa.int8()
    assert labels.column("label").to_pylist() == [0, 1]
    assert available_label_dates(tmp_path, FS) == [DAY]


def test_available_dates_lists_only_complete_partitions(tmp_path: Path) -> None:
    """Incomplete (no _SUCCESS), staging, replaced-aside and stray directories are never listed."""
    days = [dt.date(2026, 11, d) for d in (18, 20, 19)]
    for day in days:
        write_partition_atomically(partition_dir(tmp_path, FS, day), _writer([1]))
    base = tmp_path / "features" / FS
    incomplete = base / "dt=2026-11-21"
    incomplete.mkdir()
    pq.write_table(pa.table({"x": [1]}), incomplete / "part-00000.parquet")
    for name in ("dt=2026-11-22.staging-abc", "dt=2026-11-23.replaced-abc", "notes", "dt=2026-99-99"):
        (base / name).mkdir()
        (base / name / SUCCESS_MARKER).write_bytes(b"")
    assert available_dates(tmp_path, FS) == sorted(days)
    assert available_dates(tmp_path, "other") == []
    with pytest.raises(PartitionNotFoundError, match="incomplete"):
        partition_files(tmp_path, FS, dt.date(2026, 11, 21))


def test_failed_write_of_a_new_partition_leaves_nothing_visible(tmp_path: Path) -> None:
    """A write_fn that raises half-way: no partition, no staging directory, the error propagates."""

    def half_then_fail(directory: Path) -> None:
        _writer([1, 2])(directory)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_partition_atomically(partition_dir(tmp_path, FS, DAY), half_then_fail)
    assert not partition_dir(tmp_path, FS, DAY).exists()
    assert available_dates(tmp_path, FS) == []
    assert _leftovers(tmp_path / "features" / FS) == []


def test_failed_rewrite_keeps_the_previous_partition_intact(tmp_path: Path) -> None:
    """Rewriting a live partition fails: readers still see every row of the old one."""
    final = partition_dir(tmp_path, FS, DAY)
    write_partition_atomically(final, _writer([1, 2, 3]))

    def fail(directory: Path) -> None:
        _writer([9])(directory)
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_partition_atomically(final, fail)
    assert read_partition(tmp_path, FS, DAY).column("x").to_pylist() == [1, 2, 3]
    assert (final / SUCCESS_MARKER).is_file()
    assert _leftovers(final.parent) == []


def test_rewrite_replaces_the_partition_whole(tmp_path: Path) -> None:
    """A successful rewrite swaps the whole directory (old files do not linger) and removes the old copy."""
    final = partition_dir(tmp_path, FS, DAY)
    write_partition_atomically(final, _writer([1, 2, 3], files=3))
    with staged_partition(final) as staging:
        # while staging, readers still see the old partition
        assert read_partition(tmp_path, FS, DAY).num_rows == 9
        _writer([7])(staging)
    assert [p.name for p in partition_files(tmp_path, FS, DAY)] == ["part-00000.parquet"]
    assert read_partition(tmp_path, FS, DAY).column("x").to_pylist() == [7]
    assert _leftovers(final.parent) == []
