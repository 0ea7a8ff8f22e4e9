"""Score-run files on a local home: the commit manifest, the readers' rule, and what ``run_problem`` reports.

Every run is written the way a local writer does it: Parquet parts into the staging directory, the manifest, then
one rename to ``run=<id>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.clock import iso
from warehouse.datasets import score_files
from warehouse.errors import PartitionNotFoundError

RUN_ID = "run-1"
PART_ROWS = (3, 5, 2)


def _table(rows: int, first: int) -> pa.Table:
    return pa.table({"entity_id": [f"e{first + i}" for i in range(rows)], "score": [0.5] * rows})


def commit_run(partition_dir: Path, run_id: str = RUN_ID, part_rows: tuple[int, ...] = PART_ROWS) -> Path:
    """Write the parts into staging, then the manifest, then rename: a committed local run."""
    staging = score_files.staging_dir(partition_dir, run_id)
    assert isinstance(staging, Path)
    staging.mkdir(parents=True)
    parts, first = [], 0
    for index, rows in enumerate(part_rows):
        name = score_files.part_name(index)
        pq.write_table(_table(rows, first), staging / name)
        parts.append((name, rows))
        first += rows
    score_files.write_manifest(staging, run_id, parts)
    final = score_files.run_dir(partition_dir, run_id)
    assert isinstance(final, Path)
    staging.rename(final)
    return final


@pytest.fixture
def partition_dir(tmp_path: Path) -> Path:
    return tmp_path / "scores" / "churn" / f"dt={iso()}"


def test_a_committed_runs_manifest_lists_exactly_its_parts(partition_dir: Path) -> None:
    """The manifest names every part written, with its rows and their sum; readers get all parts in order."""
    run = commit_run(partition_dir)
    manifest = json.loads((run / score_files.MANIFEST).read_text())
    on_disk = sorted(p.name for p in run.glob(score_files.PART_GLOB))
    assert manifest["run_id"] == RUN_ID
    assert [p["name"] for p in manifest["parts"]] == on_disk
    assert [p["rows"] for p in manifest["parts"]] == [pq.read_metadata(run / n).num_rows for n in on_disk]
    assert manifest["rows"] == sum(PART_ROWS)
    assert score_files.read_manifest(run) == manifest
    assert score_files.committed_parts(run) == [run / n for n in on_disk]
    assert score_files.require_parts(str(run)) == [run / n for n in on_disk]
    assert score_files.is_committed(run) and score_files.run_problem(run) is None
    table = score_files.read_run(run)
    assert table.num_rows == sum(PART_ROWS)
    assert table.column("entity_id").to_pylist() == [f"e{i}" for i in range(sum(PART_ROWS))]


def test_manifest_text_sorts_parts_and_sums_their_rows() -> None:
    """Parts given out of order are listed in part order; ``rows`` is their total."""
    text = score_files.manifest_text("r", [(score_files.part_name(1), 4), (score_files.part_name(0), 6)])
    manifest = json.loads(text)
    assert [p["name"] for p in manifest["parts"]] == [score_files.part_name(0), score_files.part_name(1)]
    assert manifest["rows"] == 10 and manifest["run_id"] == "r"


def test_a_missing_part_is_reported_and_refused(partition_dir: Path) -> None:
    """A listed part that is gone: not committed, ``run_problem`` names it, ``require_parts`` says to rescore."""
    run = commit_run(partition_dir)
    gone = score_files.part_name(1)
    (run / gone).unlink()
    assert not score_files.is_committed(run) and score_files.committed_parts(run) is None
    problem = score_files.run_problem(run)
    assert problem is not None
    assert f"missing: {gone};" in problem and "not listed: none" in problem and str(run) in problem
    with pytest.raises(PartitionNotFoundError, match="no committed scores") as info:
        score_files.require_parts(run, what="run run-1 of churn")
    assert str(info.value).startswith("run run-1 of churn has no committed scores at")
    assert str(run) in str(info.value) and "rescore the partition" in str(info.value)
    with pytest.raises(PartitionNotFoundError, match="no committed scores"):
        score_files.read_run(run)


def test_an_extra_part_is_reported_and_refused(partition_dir: Path) -> None:
    """A part the manifest does not list: the run no longer counts as committed and the stray part is named."""
    run = commit_run(partition_dir)
    stray = score_files.part_name(7)
    pq.write_table(_table(1, 100), run / stray)
    assert score_files.committed_parts(run) is None
    problem = score_files.run_problem(run)
    assert problem is not None and "missing: none" in problem and f"not listed: {stray}" in problem
    with pytest.raises(PartitionNotFoundError):
        score_files.require_parts(run)


def test_a_part_with_a_changed_row_count_is_reported(partition_dir: Path) -> None:
    """A part rewritten with fewer rows: the names still match, but ``run_problem`` and ``read_run`` refuse it."""
    run = commit_run(partition_dir)
    name = score_files.part_name(1)
    pq.write_table(_table(PART_ROWS[1] - 2, 0), run / name)
    problem = score_files.run_problem(run)
    assert problem == f"part {name} at {run} holds {PART_ROWS[1] - 2} rows, its manifest says {PART_ROWS[1]}"
    with pytest.raises(PartitionNotFoundError, match=f"its manifest says {sum(PART_ROWS)}"):
        score_files.read_run(run)


def test_a_manifest_total_that_disagrees_with_the_parts_is_reported(partition_dir: Path) -> None:
    """Each part matches its own count, but the manifest's total does not: ``run_problem`` says so."""
    run = commit_run(partition_dir)
    manifest = json.loads((run / score_files.MANIFEST).read_text())
    manifest["rows"] += 1
    (run / score_files.MANIFEST).write_text(json.dumps(manifest))
    problem = score_files.run_problem(run)
    assert problem == f"the parts at {run} hold {sum(PART_ROWS)} rows, its manifest says {sum(PART_ROWS) + 1}"


def test_unreadable_part_and_missing_pieces_are_reported(partition_dir: Path) -> None:
    """A part that is not Parquet, a manifest gone, everything gone, no path: each has its own reason."""
    assert score_files.run_problem(None) == "it has no output path in the catalog"
    run = commit_run(partition_dir)
    name = score_files.part_name(0)
    (run / name).write_bytes(b"not parquet")
    problem = score_files.run_problem(run)
    assert problem is not None and problem.startswith(f"part {name} at {run} is not readable Parquet")
    (run / score_files.MANIFEST).unlink()
    assert score_files.run_problem(run) == f"its commit manifest {run / score_files.MANIFEST} is gone (3 parts left)"
    score_files.remove_run(run)
    assert not run.exists()
    assert score_files.run_problem(run) == f"its Parquet is gone (nothing at {run})"
    score_files.remove_run(run)  # a second call after a crash is fine


def test_a_run_id_only_success_file_counts_as_committed_locally(partition_dir: Path) -> None:
    """A local ``_SUCCESS`` that holds only the run id: committed with every part present, rows unknown."""
    run = commit_run(partition_dir)
    (run / score_files.MANIFEST).write_text(f"{RUN_ID}\n")
    manifest = score_files.read_manifest(run)
    assert manifest is not None and manifest["run_id"] == RUN_ID and manifest["rows"] is None
    assert score_files.committed_parts(run) == sorted(run.glob(score_files.PART_GLOB))
    assert score_files.read_run(run).num_rows == sum(PART_ROWS)


def test_staging_runs_are_uncommitted_and_removal_takes_the_manifest_first(partition_dir: Path) -> None:
    """A writer that died before its rename leaves a staging directory: listed by ``uncommitted_runs``, never read."""
    committed = commit_run(partition_dir, "done-1")
    staging = score_files.staging_dir(partition_dir, "crashed-1")
    assert isinstance(staging, Path)
    staging.mkdir()
    pq.write_table(_table(2, 0), staging / score_files.part_name(0))
    score_files.write_manifest(staging, "crashed-1", [(score_files.part_name(0), 2)])
    assert score_files.uncommitted_runs(partition_dir) == [(staging, "crashed-1")]
    assert score_files.uncommitted_runs(partition_dir / "absent") == []
    score_files.remove_run(committed)
    assert not committed.exists() and not score_files.is_committed(committed)
    assert score_files.uncommitted_runs(partition_dir) == [(staging, "crashed-1")]
