"""Feature and label datasets on disk: layout, atomic partition writes, and reading.

Layout under the warehouse root (``Settings.home_dir``)::

    features/<feature_set>/dt=YYYY-MM-DD/part-00000.parquet ... _SUCCESS
    labels/<feature_set>/dt=YYYY-MM-DD/part-00000.parquet ...   _SUCCESS

A partition is *complete* when its directory carries a ``_SUCCESS`` marker. Partitions are only ever
made visible by ``os.rename`` of a fully written staging directory (``dt=YYYY-MM-DD.staging-<uuid>``,
``_SUCCESS`` written last, before the rename), so a reader sees the old partition, no partition, or the
new one — never a half-written one. Replacing a partition renames the old one aside
(``dt=….replaced-<uuid>``), renames the new one in, then deletes the old one. Directories whose name is
not exactly ``dt=YYYY-MM-DD`` (staging or aside leftovers of a crashed writer) are never read.

Reads use pyarrow only (no Dask). Every reader raises ``PartitionNotFoundError`` naming the missing path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.errors import PartitionNotFoundError, UserError

SUCCESS_MARKER = "_SUCCESS"
LABEL_COLUMN = "label"

_PARTITION_NAME = re.compile(r"dt=(\d{4}-\d{2}-\d{2})")
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(text: str | dt.date) -> dt.date:
    """``YYYY-MM-DD`` → date (a ``date`` passes through). Anything else raises ``UserError``."""
    if isinstance(text, dt.datetime):
        return text.date()
    if isinstance(text, dt.date):
        return text
    value = text.strip() if isinstance(text, str) else text
    if isinstance(value, str) and _DATE_TEXT.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise UserError(f"bad date {text!r}: expected YYYY-MM-DD")


def _partition_name(day: dt.date) -> str:
    return f"dt={day:%Y-%m-%d}"


def partition_dir(root: Path, feature_set: str, day: dt.date) -> Path:
    """``root/features/<feature_set>/dt=YYYY-MM-DD`` (pure: touches nothing)."""
    return Path(root) / "features" / feature_set / _partition_name(day)


def label_partition_dir(root: Path, feature_set: str, day: dt.date) -> Path:
    """``root/labels/<feature_set>/dt=YYYY-MM-DD`` (pure: touches nothing)."""
    return Path(root) / "labels" / feature_set / _partition_name(day)


def is_complete(directory: Path) -> bool:
    """True when ``directory`` is a partition whose writer finished (it holds ``_SUCCESS``)."""
    return (directory / SUCCESS_MARKER).is_file()


def _complete_files(directory: Path, what: str) -> list[Path]:
    if not directory.is_dir():
        raise PartitionNotFoundError(
            f"{what} partition {directory} does not exist; create it with `prescore synth` "
            "(or check PRESCORE_HOME and the date)"
        )
    if not is_complete(directory):
        raise PartitionNotFoundError(
            f"{what} partition {directory} is incomplete (no {SUCCESS_MARKER} marker): its writer did not "
            "finish; rewrite it with `prescore synth`"
        )
    return sorted(directory.glob("*.parquet"))


def partition_files(root: Path, feature_set: str, day: dt.date) -> list[Path]:
    """Sorted ``*.parquet`` files of a complete feature partition.

    Raises ``PartitionNotFoundError`` (naming the path) when the partition is missing or incomplete.
    """
    return _complete_files(partition_dir(root, feature_set, day), "feature")


def label_files(root: Path, feature_set: str, day: dt.date) -> list[Path]:
    """Sorted ``*.parquet`` files of a complete label partition (``PartitionNotFoundError`` otherwise)."""
    return _complete_files(label_partition_dir(root, feature_set, day), "label")


def _dates_under(base: Path) -> list[dt.date]:
    if not base.is_dir():
        return []
    days = []
    for child in base.iterdir():
        match = _PARTITION_NAME.fullmatch(child.name)
        if match and is_complete(child):
            with contextlib.suppress(ValueError):
                days.append(dt.date.fromisoformat(match.group(1)))
    return sorted(days)


def available_dates(root: Path, feature_set: str) -> list[dt.date]:
    """Dates of the complete feature partitions of ``feature_set``, oldest first ([] when none)."""
    return _dates_under(Path(root) / "features" / feature_set)


def available_label_dates(root: Path, feature_set: str) -> list[dt.date]:
    """Dates of the complete label partitions of ``feature_set``, oldest first ([] when none)."""
    return _dates_under(Path(root) / "labels" / feature_set)


def _read_files(files: list[Path], columns: list[str] | None) -> pa.Table:
    tables = [pq.read_table(path, columns=columns) for path in files]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def read_partition(root: Path, feature_set: str, day: dt.date, columns: list[str] | None = None) -> pa.Table:
    """The whole feature partition as one table (only ``columns`` when given), rows in file order."""
    files = partition_files(root, feature_set, day)
    if not files:
        raise PartitionNotFoundError(
            f"feature partition {partition_dir(root, feature_set, day)} holds no parquet files; "
            "rewrite it with `prescore synth`"
        )
    return _read_files(files, columns)


def iter_partition(root: Path, feature_set: str, day: dt.date, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The feature partition one row group at a time (bounded memory), in file and row-group order."""
    for path in partition_files(root, feature_set, day):
        with pq.ParquetFile(path) as handle:
            for group in range(handle.num_row_groups):
                yield handle.read_row_group(group, columns=columns)


def read_labels(root: Path, feature_set: str, day: dt.date) -> pa.Table:
    """The label partition: columns ``entity_id`` (string) and ``label`` (int8), rows in file order."""
    files = label_files(root, feature_set, day)
    if not files:
        raise PartitionNotFoundError(
            f"label partition {label_partition_dir(root, feature_set, day)} holds no parquet files; "
            "rewrite it with `prescore synth`"
        )
    return _read_files(files, None)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _promote(staging: Path, final_dir: Path) -> None:
    """Rename ``staging`` to ``final_dir``; an existing ``final_dir`` is renamed aside first, then deleted."""
    if not final_dir.exists():
        os.rename(staging, final_dir)
        _fsync_dir(final_dir.parent)
        return
    aside = final_dir.with_name(f"{final_dir.name}.replaced-{uuid.uuid4().hex}")
    os.rename(final_dir, aside)
    try:
        os.rename(staging, final_dir)
    except BaseException:
        os.rename(aside, final_dir)  # put the previous partition back: readers keep seeing it
        raise
    _fsync_dir(final_dir.parent)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged_partition(final_dir: Path) -> Iterator[Path]:
    """Yield an empty staging directory next to ``final_dir``; promote it when the block exits cleanly.

    On a clean exit ``_SUCCESS`` is written into the staging directory, then the directory is renamed to
    ``final_dir`` (an existing partition is renamed aside first and deleted afterwards). If the block
    raises, the staging directory is deleted and ``final_dir`` is left exactly as it was.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = final_dir.with_name(f"{final_dir.name}.staging-{uuid.uuid4().hex}")
    staging.mkdir()
    try:
        yield staging
        (staging / SUCCESS_MARKER).write_bytes(b"")
        _fsync_dir(staging)
        _promote(staging, final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_partition_atomically(final_dir: Path, write_fn: Callable[[Path], None]) -> Path:
    """Call ``write_fn(staging_dir)`` and promote its output to ``final_dir`` atomically.

    ``write_fn`` writes the partition's files into the directory it is given. See ``staged_partition``
    for the guarantees; if ``write_fn`` raises, nothing becomes visible and the exception propagates.
    """
    with staged_partition(final_dir) as staging:
        write_fn(staging)
    return Path(final_dir)
