"""Intra-day delta drops of a feature set: where they live, what a drop id is, and which drops are complete.

Layout: a drop is a directory inside the feature partition it updates, ``<partition>/delta=HHMMSS/``, holding Parquet
files of the feature set's contract and, when the feature set uses markers (``success_marker``), ``_SUCCESS`` written
last. ``<partition>`` is ``features/<feature_set>/dt=YYYY-MM-DD`` or, for a feature set in a lake (``path``), the
template's directory of that date: a drop is the lake path plus a ``delta=HHMMSS`` suffix.

A drop id is ``YYYY-MM-DD/HHMMSS`` (``drop_id``); drops are ordered by it, and ``HHMMSS`` (UTC) is the time the drop's
writer gives it, increasing within a partition (a later drop's row for an entity supersedes an earlier one's). A
drop directory whose name is not exactly ``delta=HHMMSS`` (a writer's staging leftover) or that is not complete is
never listed. The nightly partition's readers list ``*.parquet`` of the partition itself, so drops never mix into
the base partition; replacing a partition (``features.staged_partition``) replaces its drops with it.

Pure listing: nothing here reads a drop's rows (``contracts.validate_files`` checks them).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from warehouse.datasets.features import is_complete, partition_dir
from warehouse.datasets.storage import StoragePath
from warehouse.model_config import FeatureSetSpec

DELTA_PREFIX = "delta="
_DROP_NAME = re.compile(r"delta=(\d{6})")


@dataclass(frozen=True)
class Drop:
    """One complete delta drop: its partition date, its ``HHMMSS`` stamp and its directory."""

    day: dt.date
    stamp: str
    directory: StoragePath

    @property
    def drop_id(self) -> str:
        return drop_id(self.day, self.stamp)

    @property
    def at(self) -> dt.datetime:
        """The drop's time: its partition date at ``HHMMSS``, UTC (what ``--since`` compares with)."""
        return dt.datetime.combine(self.day, dt.datetime.strptime(self.stamp, "%H%M%S").time(), tzinfo=dt.UTC)

    def files(self) -> list[StoragePath]:
        return sorted(self.directory.glob("*.parquet"))


def drop_id(day: dt.date, stamp: str) -> str:
    """``YYYY-MM-DD/HHMMSS``: the one format of a drop id."""
    return f"{day:%Y-%m-%d}/{stamp}"


def drop_dir(
    root: StoragePath | str, feature_set: str, day: dt.date, stamp: str, spec: FeatureSetSpec | None = None
) -> StoragePath:
    """``<partition of day>/delta=HHMMSS`` (pure: touches nothing)."""
    return partition_dir(root, feature_set, day, spec) / f"{DELTA_PREFIX}{stamp}"


def complete_drops(
    root: StoragePath | str, feature_set: str, days: Iterable[dt.date], spec: FeatureSetSpec | None = None
) -> list[Drop]:
    """The complete drops of the partitions of ``days``, ordered by drop id ([] for a date without drops)."""
    marker = spec.success_marker if spec is not None else True
    found = []
    for day in days:
        base = partition_dir(root, feature_set, day, spec)
        if not base.is_dir():
            continue
        for child in base.iterdir():
            match = _DROP_NAME.fullmatch(child.name)
            if match and _valid_stamp(match.group(1)) and is_complete(child, marker):
                found.append(Drop(day, match.group(1), child))
    return sorted(found, key=lambda d: d.drop_id)


def _valid_stamp(stamp: str) -> bool:
    try:
        dt.datetime.strptime(stamp, "%H%M%S")
    except ValueError:
        return False
    return True
