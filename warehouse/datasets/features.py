"""Feature and label datasets on disk: layout, atomic partition writes, and reading.

Layout under the warehouse root (``Settings.root``: a local directory or object storage)::

    features/<feature_set>/dt=YYYY-MM-DD/part-00000.parquet ... _SUCCESS
    labels/<feature_set>/dt=YYYY-MM-DD/part-00000.parquet ...   _SUCCESS

A partition is *complete* when its directory carries a ``_SUCCESS`` marker. Partitions are only ever
made visible by ``os.rename`` of a fully written staging directory (``dt=YYYY-MM-DD.staging-<uuid>``,
``_SUCCESS`` written last, before the rename), so a reader sees the old partition, no partition, or the
new one — never a half-written one. Replacing a partition renames the old one aside
(``dt=….replaced-<uuid>``), renames the new one in, then deletes the old one. Directories whose name is
not exactly ``dt=YYYY-MM-DD`` (staging or aside leftovers of a crashed writer) are never read.

On object storage (``root`` an ``ObjectPath``, see ``warehouse.datasets.storage``) there is no rename, so the marker is
the whole commit: a partition is rewritten in place — its ``_SUCCESS`` deleted first (readers then see no
partition, never a mix), its files deleted, the new files written, ``_SUCCESS`` written last. A writer that
fails or dies leaves a partition without ``_SUCCESS``, which readers refuse; replacing a partition there is
therefore not seamless (readers see it missing while it is rewritten, or until a failed rewrite is redone).

A feature set with a ``path`` (``FeatureSetSpec.path``: partitions in an existing lake) is read where the template
says, e.g. ``s3://lake/customers/ds=2026-01-31/``; its dates are the names in the template's parent that parse
with ``date_format``, and completeness follows ``success_marker``. prescore never writes there.

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

from warehouse.datasets import storage
from warehouse.datasets.storage import ObjectPath, StoragePath
from warehouse.errors import PartitionNotFoundError, UserError
from warehouse.model_config import FeatureSetSpec

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


def partition_dir(
    root: StoragePath | str, feature_set: str, day: dt.date, spec: FeatureSetSpec | None = None
) -> StoragePath:
    """``root/features/<feature_set>/dt=YYYY-MM-DD``, or the lake path of ``spec`` (pure: touches nothing)."""
    if spec is not None and spec.path:
        return storage.as_path(spec.path.replace("{date}", day.strftime(spec.date_format)).rstrip("/"))
    return storage.as_path(root) / "features" / feature_set / _partition_name(day)


def label_partition_dir(root: StoragePath | str, feature_set: str, day: dt.date) -> StoragePath:
    """``root/labels/<feature_set>/dt=YYYY-MM-DD`` (pure: touches nothing)."""
    return storage.as_path(root) / "labels" / feature_set / _partition_name(day)


def is_complete(directory: StoragePath, marker: bool = True) -> bool:
    """True when ``directory`` is a partition whose writer finished: it holds ``_SUCCESS`` (or, ``marker`` False,
    a Parquet file)."""
    if marker:
        return (directory / SUCCESS_MARKER).is_file()
    return directory.is_dir() and any(True for _ in directory.glob("*.parquet"))


def _complete_files(directory: StoragePath, what: str, marker: bool = True) -> list[StoragePath]:
    if not directory.is_dir():
        raise PartitionNotFoundError(
            f"{what} partition {directory} does not exist; create it with `prescore synth` "
            "(or check PRESCORE_HOME, the feature set's path and the date)"
        )
    if not is_complete(directory, marker):
        raise PartitionNotFoundError(
            f"{what} partition {directory} is incomplete (no {SUCCESS_MARKER} marker): its writer did not "
            "finish; rewrite it with `prescore synth`"
            if marker
            else f"{what} partition {directory} holds no Parquet file yet"
        )
    return sorted(directory.glob("*.parquet"))


def partition_files(
    root: StoragePath | str, feature_set: str, day: dt.date, spec: FeatureSetSpec | None = None
) -> list[StoragePath]:
    """Sorted ``*.parquet`` files of a complete feature partition (in the lake when ``spec`` has a path).

    Raises ``PartitionNotFoundError`` (naming the path) when the partition is missing or incomplete.
    """
    marker = spec.success_marker if spec is not None else True
    return _complete_files(partition_dir(root, feature_set, day, spec), "feature", marker)


def label_files(root: StoragePath | str, feature_set: str, day: dt.date) -> list[StoragePath]:
    """Sorted ``*.parquet`` files of a complete label partition (``PartitionNotFoundError`` otherwise)."""
    return _complete_files(label_partition_dir(root, feature_set, day), "label")


def _dates_under(base: StoragePath) -> list[dt.date]:
    if not base.is_dir():
        return []
    days = []
    for child in base.iterdir():
        match = _PARTITION_NAME.fullmatch(child.name)
        if match and is_complete(child):
            with contextlib.suppress(ValueError):
                days.append(dt.date.fromisoformat(match.group(1)))
    return sorted(days)


def available_dates(root: StoragePath | str, feature_set: str, spec: FeatureSetSpec | None = None) -> list[dt.date]:
    """Dates of the complete feature partitions of ``feature_set``, oldest first ([] when none)."""
    if spec is not None and spec.path:
        return _lake_dates(spec)
    return _dates_under(storage.as_path(root) / "features" / feature_set)


def _lake_dates(spec: FeatureSetSpec) -> list[dt.date]:
    assert spec.path is not None
    head, tail = spec.path.split("{date}", 1)
    parent, _, prefix = head.rpartition("/")
    suffix = tail.rstrip("/")
    base = storage.as_path(parent)
    if not base.is_dir():
        return []
    days = []
    for child in base.iterdir():
        name = child.name
        if not (name.startswith(prefix) and name.endswith(suffix)) or len(name) <= len(prefix) + len(suffix):
            continue
        text = name[len(prefix) : len(name) - len(suffix)] if suffix else name[len(prefix) :]
        try:
            day = dt.datetime.strptime(text, spec.date_format).date()
        except ValueError:
            continue
        if day.strftime(spec.date_format) == text and is_complete(child, spec.success_marker):
            days.append(day)
    return sorted(days)


def available_label_dates(root: StoragePath | str, feature_set: str) -> list[dt.date]:
    """Dates of the complete label partitions of ``feature_set``, oldest first ([] when none)."""
    return _dates_under(storage.as_path(root) / "labels" / feature_set)


def read_parquet(path: StoragePath, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file, local or on object storage, as a table (only ``columns`` when given)."""
    source, filesystem = storage.arrow(path)
    return pq.read_table(source, columns=columns, filesystem=filesystem)


def parquet_file(path: StoragePath) -> pq.ParquetFile:
    """A ``ParquetFile`` on a local or object-storage file (use it as a context manager to close it)."""
    source, filesystem = storage.arrow(path)
    return pq.ParquetFile(source, filesystem=filesystem)


def _read_files(files: list[StoragePath], columns: list[str] | None) -> pa.Table:
    tables = [read_parquet(path, columns) for path in files]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def read_partition(
    root: StoragePath | str,
    feature_set: str,
    day: dt.date,
    columns: list[str] | None = None,
    spec: FeatureSetSpec | None = None,
) -> pa.Table:
    """The whole feature partition as one table (only ``columns`` when given), rows in file order."""
    files = partition_files(root, feature_set, day, spec)
    if not files:
        raise PartitionNotFoundError(
            f"feature partition {partition_dir(root, feature_set, day, spec)} holds no parquet files; "
            "rewrite it with `prescore synth`"
        )
    return _read_files(files, columns)


def iter_partition(
    root: StoragePath | str,
    feature_set: str,
    day: dt.date,
    columns: list[str] | None = None,
    spec: FeatureSetSpec | None = None,
) -> Iterator[pa.Table]:
    """The feature partition one row group at a time (bounded memory), in file and row-group order."""
    for path in partition_files(root, feature_set, day, spec):
        with parquet_file(path) as handle:
            for group in range(handle.num_row_groups):
                yield handle.read_row_group(group, columns=columns)


def read_labels(root: StoragePath | str, feature_set: str, day: dt.date) -> pa.Table:
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
def _rewritten_in_place(final_dir: ObjectPath) -> Iterator[ObjectPath]:
    marker = final_dir / SUCCESS_MARKER
    marker.unlink(missing_ok=True)  # first: from here on readers see no partition
    storage.rmtree(final_dir)
    try:
        yield final_dir
        marker.write_bytes(b"")
    except BaseException:
        storage.rmtree(final_dir)
        raise


@contextlib.contextmanager
def staged_partition(final_dir: StoragePath | str) -> Iterator[StoragePath]:
    """Yield an empty staging directory next to ``final_dir``; promote it when the block exits cleanly.

    On a clean exit ``_SUCCESS`` is written into the staging directory, then the directory is renamed to
    ``final_dir`` (an existing partition is renamed aside first and deleted afterwards). If the block
    raises, the staging directory is deleted and ``final_dir`` is left exactly as it was.

    On object storage (an ``ObjectPath``) the block writes into ``final_dir`` itself, emptied first, and
    ``_SUCCESS`` is written last (see the module docstring); if the block raises, ``final_dir`` is deleted.
    """
    final_dir = storage.as_path(final_dir)
    if isinstance(final_dir, ObjectPath):
        with _rewritten_in_place(final_dir) as target:
            yield target
        return
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


def write_partition_atomically(final_dir: StoragePath | str, write_fn: Callable[[StoragePath], None]) -> StoragePath:
    """Call ``write_fn(staging_dir)`` and promote its output to ``final_dir`` atomically.

    ``write_fn`` writes the partition's files into the directory it is given. See ``staged_partition``
    for the guarantees; if ``write_fn`` raises, nothing becomes visible and the exception propagates.
    """
    with staged_partition(final_dir) as staging:
        write_fn(staging)
    return storage.as_path(final_dir)
