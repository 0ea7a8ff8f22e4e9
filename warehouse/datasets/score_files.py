"""Scores in the warehouse: where a run's Parquet parts live, the commit manifest, and the rule readers apply.

Layout: ``<home>/scores/<model>/dt=YYYY-MM-DD/run=<run_id>/part-NNNNN.parquet`` and ``_SUCCESS``; a delta run
(``jobs.delta``) of that date's drops: ``dt=YYYY-MM-DD/delta=<run_id>/``, the same parts and manifest, staged locally
in ``.delta-staging-<run_id>`` (a prefix the nightly's staging cleanup never matches). The catalog's ``delta_runs``
name the committed ones.

Commit rule, the same for a local home and for object storage: a run is committed when ``run=<id>/_SUCCESS``
exists, is a manifest ``{"run_id", "rows", "parts": [{"name", "rows"}, ...]}`` of that run, and names exactly
the ``part-*.parquet`` files present. Writers write the manifest after the last part:

- local: into the staging directory ``.staging-<run_id>``, which is then renamed to ``run=<run_id>`` in one
  step (readers see all of it or nothing);
- object storage (no rename): the parts are written straight under ``run=<run_id>/`` and the manifest after
  them. A crash before it leaves parts without a manifest: no reader accepts them, and the next run of the
  partition deletes them once the catalog no longer says ``running``.

Every reader of committed scores goes through ``committed_parts`` (``read_run``, the publish loader, the
online check, the "already committed" check that makes a rerun or a backfill reuse a run) and ignores
anything else. A local ``_SUCCESS`` that holds only the run id (a run committed without a manifest) counts
as committed with all its parts: the rename made that directory whole.

Removal (``remove_run``, what retention calls) is the commit in reverse: the manifest goes first, so from then on
no reader takes the run as committed, then the parts. ``uncommitted_runs`` lists what writers left behind.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from warehouse.datasets.features import parquet_file, read_parquet
from warehouse.datasets.storage import ObjectPath, StoragePath, as_path, rmtree
from warehouse.errors import PartitionNotFoundError

MANIFEST = "_SUCCESS"
PART_GLOB = "part-*.parquet"
STAGING_PREFIX = ".staging-"
RUN_PREFIX = "run="
DELTA_PREFIX = "delta="
DELTA_STAGING_PREFIX = ".delta-staging-"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def partition_of(scores_dir: StoragePath, model: str, day: dt.date) -> StoragePath:
    """``<scores_dir>/<model>/dt=YYYY-MM-DD``: the runs and delta runs of one model and date (pure)."""
    return scores_dir / model / f"dt={day:%Y-%m-%d}"


def run_dir(partition_dir: StoragePath, run_id: str) -> StoragePath:
    """``<partition_dir>/run=<run_id>`` (pure)."""
    return partition_dir / f"{RUN_PREFIX}{run_id}"


def staging_dir(partition_dir: StoragePath, run_id: str) -> StoragePath:
    """``<partition_dir>/.staging-<run_id>``: where a local run writes before its rename (pure)."""
    return partition_dir / f"{STAGING_PREFIX}{run_id}"


def delta_dir(partition_dir: StoragePath, run_id: str) -> StoragePath:
    """``<partition_dir>/delta=<run_id>``: a committed delta run's scores (pure)."""
    return partition_dir / f"{DELTA_PREFIX}{run_id}"


def delta_staging_dir(partition_dir: StoragePath, run_id: str) -> StoragePath:
    """``<partition_dir>/.delta-staging-<run_id>``: where a local delta run writes before its rename (pure)."""
    return partition_dir / f"{DELTA_STAGING_PREFIX}{run_id}"


def uncommitted_runs(partition_dir: StoragePath) -> list[tuple[StoragePath, str]]:
    """``(directory, run_id)`` of every run in ``partition_dir`` that did not commit: locally the staging
    directories, on object storage the ``run=<id>/`` prefixes without a valid manifest. Whether its writer is
    still at work is the catalog's to say (``jobs.retention.abandoned_staging``)."""
    if isinstance(partition_dir, ObjectPath):
        found = [p for p in partition_dir.glob(f"{RUN_PREFIX}*") if not is_committed(p)]
        return [(p, p.name.removeprefix(RUN_PREFIX)) for p in found]
    if not partition_dir.is_dir():
        return []
    staged = sorted(p for p in partition_dir.glob(f"{STAGING_PREFIX}*") if p.is_dir())
    return [(p, p.name.removeprefix(STAGING_PREFIX)) for p in staged]


def remove_run(directory: StoragePath | str) -> None:
    """Delete a run directory: the manifest first (no reader takes the run as committed from then on), then the
    parts. A missing directory is fine: calling it again after a crash finishes the job."""
    directory = as_path(directory)
    (directory / MANIFEST).unlink(missing_ok=True)
    rmtree(directory)


def manifest_text(run_id: str, parts: Sequence[tuple[str, int]]) -> str:
    """The manifest of a run made of ``parts`` (``(file name, rows)``, in part order)."""
    listed = [{"name": name, "rows": int(rows)} for name, rows in sorted(parts)]
    return json.dumps({"run_id": run_id, "rows": sum(p["rows"] for p in listed), "parts": listed}, indent=1)


def write_manifest(directory: StoragePath, run_id: str, parts: Sequence[tuple[str, int]]) -> None:
    """Write the manifest into ``directory``: the commit on object storage, the step before the rename locally."""
    # On object storage one PUT: the manifest appears whole or not at all. Locally it lies in the staging
    # directory, which readers never look at, until the rename.
    (directory / MANIFEST).write_text(manifest_text(run_id, parts))


def read_manifest(directory: StoragePath | str) -> dict[str, Any] | None:
    """The run's manifest if it is committed (see the module docstring), else None."""
    directory = as_path(directory)
    try:
        text = (directory / MANIFEST).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    present = sorted(p.name for p in directory.glob(PART_GLOB))
    try:
        manifest = json.loads(text)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict):
        if isinstance(directory, ObjectPath):
            return None  # object storage has no rename: only a manifest commits there
        return {"run_id": text.strip(), "rows": None, "parts": [{"name": n, "rows": None} for n in present]}
    listed = sorted(str(p["name"]) for p in manifest.get("parts", []))
    if listed != present:
        return None
    return manifest


def committed_parts(directory: StoragePath | str) -> list[StoragePath] | None:
    """The part files of a committed run, in part order; None when ``directory`` is not a committed run."""
    directory = as_path(directory)
    manifest = read_manifest(directory)
    return None if manifest is None else _parts(directory, manifest)


def _parts(directory: StoragePath, manifest: dict[str, Any]) -> list[StoragePath]:
    return [directory / str(p["name"]) for p in manifest["parts"]]


def is_committed(directory: StoragePath | str | None) -> bool:
    return directory is not None and read_manifest(directory) is not None


def require_parts(directory: StoragePath | str | None, what: str = "run") -> list[StoragePath]:
    """``committed_parts``, or ``PartitionNotFoundError`` naming the directory when it is not committed."""
    parts = committed_parts(directory) if directory is not None else None
    if parts is None:
        raise _not_committed(directory, what)
    return parts


def _not_committed(directory: object, what: str = "run") -> PartitionNotFoundError:
    return PartitionNotFoundError(
        f"{what} has no committed scores at {directory} (no commit manifest, or its parts differ from the "
        "manifest: a writer did not finish); rescore the partition"
    )


def run_problem(directory: StoragePath | str | None) -> str | None:
    """Why the run at ``directory`` cannot be reloaded as committed (its Parquet gone, its manifest gone, parts
    that differ from the manifest, a part whose row count or footer no longer matches it), or None when every part
    the manifest lists is there, readable, and holds the rows it records. Reads the manifest and the part footers
    only (``restore`` checks this before it reloads a run into Redis)."""
    if directory is None:
        return "it has no output path in the catalog"
    directory = as_path(directory)
    present = sorted(p.name for p in directory.glob(PART_GLOB)) if directory.exists() else []
    try:
        text = (directory / MANIFEST).read_text()
    except (FileNotFoundError, NotADirectoryError):
        if not present:
            return f"its Parquet is gone (nothing at {directory})"
        return f"its commit manifest {directory / MANIFEST} is gone ({len(present)} parts left)"
    manifest = read_manifest(directory)
    if manifest is None:
        try:
            listed = sorted(str(p["name"]) for p in json.loads(text).get("parts", []))
        except (ValueError, AttributeError, TypeError):
            return f"its manifest {directory / MANIFEST} is not readable"
        missing, extra = sorted(set(listed) - set(present)), sorted(set(present) - set(listed))
        return (f"its parts no longer match its manifest at {directory} (missing: {', '.join(missing) or 'none'}; "
                f"not listed: {', '.join(extra) or 'none'})")  # fmt: skip
    total = 0
    for part in manifest["parts"]:
        try:
            with parquet_file(directory / str(part["name"])) as pf:
                rows = pf.metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            return f"part {part['name']} at {directory} is not readable Parquet ({exc})"
        if isinstance(part.get("rows"), int) and rows != part["rows"]:
            return f"part {part['name']} at {directory} holds {rows} rows, its manifest says {part['rows']}"
        total += rows
    if isinstance(manifest.get("rows"), int) and total != manifest["rows"]:
        return f"the parts at {directory} hold {total} rows, its manifest says {manifest['rows']}"
    return None


def read_run(directory: StoragePath | str, columns: list[str] | None = None) -> pa.Table:
    """All parts of a committed run as one table, in part order (``PartitionNotFoundError`` otherwise).

    The row count is checked against the manifest's when it records one.
    """
    directory = as_path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise _not_committed(directory)
    parts = _parts(directory, manifest)
    if not parts:
        raise PartitionNotFoundError(f"committed run {directory} holds no parts")
    tables = [read_parquet(p, columns) for p in parts]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    expected = manifest.get("rows")
    if isinstance(expected, int) and table.num_rows != expected:
        raise PartitionNotFoundError(
            f"committed run {directory} holds {table.num_rows} rows, its manifest says {expected}; "
            "rescore the partition"
        )
    return table
