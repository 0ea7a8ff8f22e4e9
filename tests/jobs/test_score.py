"""The bulk scoring job on a real Dask cluster, real Parquet files and a real SQLite catalog."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from jobs import score as score_mod
from jobs.runtime import Runtime
from jobs.score import score_partition, scores_partition_dir
from tests.jobs.conftest import END
from warehouse.catalog import FAILED
from warehouse.datasets import features as fstore
from warehouse.datasets.score_files import read_run
from warehouse.errors import (
    ContractViolationError,
    PartitionNotFoundError,
    RegistryError,
    RunConflictError,
    UserError,
)

TASK_ROWS = 5_000  # several Dask tasks per partition


def _independent_scores(rt: Runtime, day) -> dict[str, float]:
    """Predict the same rows through a separately loaded booster and a DMatrix (not the job's code path)."""
    features = rt.config.model_features("churn")
    version = rt.registry.production_version("churn", "primary")
    booster = xgb.Booster()
    booster.load_model(rt.registry.kind_dir("churn", "primary") / version / "model.ubj")
    table = fstore.read_partition(rt.home, "customer_daily", day)
    x = np.column_stack([table.column(f).to_numpy(zero_copy_only=False) for f in features]).astype(np.float32)
    preds = booster.predict(xgb.DMatrix(x, missing=np.nan))
    return dict(zip(table.column("entity_id").to_pylist(), preds.tolist(), strict=True))


def _committed_dirs(rt: Runtime) -> list[Path]:
    return sorted(scores_partition_dir(rt, "churn", END).glob("run=*"))


def test_scores_equal_an_independent_prediction(rt: Runtime) -> None:
    """Every row of the partition is scored once, and each score equals xgboost's own prediction."""
    report = score_partition(rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    table = read_run(report.output_path)
    expected = _independent_scores(rt, END)
    assert report.rows_out == table.num_rows == len(expected)
    assert len(list(Path(report.output_path).glob("part-*.parquet"))) > 1  # really split over tasks
    got = dict(zip(table.column("entity_id").to_pylist(), table.column("score").to_pylist(), strict=True))
    assert got.keys() == expected.keys()
    diffs = np.array([abs(got[k] - expected[k]) for k in expected])
    assert diffs.max() < 1e-6
    assert table.schema.field("score").type == pa.float32()
    assert set(pc.unique(table.column("run_id").cast(pa.string())).to_pylist()) == {report.run_id}
    assert table.schema.field("as_of").type == pa.timestamp("us", tz="UTC") or "UTC" in str(
        table.schema.field("as_of").type
    )
    run = rt.catalog.get_run(report.run_id)
    assert run.status == "committed" and run.rows_out == len(expected)
    assert sum(run.report["histogram"]) == len(expected)
    assert set(run.timings) >= {"read_s", "predict_s", "write_s", "total_s"}


def test_rerun_is_idempotent_and_force_rescores(rt: Runtime) -> None:
    """A rerun with the same model and input reuses the committed run; --force writes a new, equal run."""
    first = score_partition(rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    before = sorted(p.stat().st_mtime_ns for p in Path(first.output_path).iterdir())
    again = score_partition(rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    assert again.reused and again.run_id == first.run_id
    assert sorted(p.stat().st_mtime_ns for p in Path(first.output_path).iterdir()) == before
    forced = score_partition(rt, "churn", END, device="cpu", force=True, task_rows=TASK_ROWS)
    assert forced.run_id != first.run_id and not forced.reused
    assert forced.psi is not None and forced.psi < 1e-9 and forced.psi_against == first.run_id
    a = read_run(first.output_path).sort_by("entity_id").column("score")
    b = read_run(forced.output_path).sort_by("entity_id").column("score")
    assert a.equals(b)


def test_missing_partition_names_the_path(rt: Runtime) -> None:
    missing = END - timedelta(days=3650)  # long before the fixture warehouse's first day
    with pytest.raises(PartitionNotFoundError, match=f"dt={missing:%Y-%m-%d}"):
        score_partition(rt, "churn", missing, device="cpu")
    assert not scores_partition_dir(rt, "churn", missing).exists()


def test_contract_violation_writes_nothing_and_fails_the_run(rt: Runtime) -> None:
    """A partition with out-of-range values and a missing column: refused before any write, run failed."""
    files = fstore.partition_files(rt.home, "customer_daily", END)
    table = pq.read_table(files[0])
    table = table.set_column(
        table.schema.get_field_index("f03"),
        "f03",
        pa.array(np.full(table.num_rows, 5000.0, dtype=np.float32)),
    ).drop_columns(["f07"])
    pq.write_table(table, files[0])
    with pytest.raises(ContractViolationError) as info:
        score_partition(rt, "churn", END, device="cpu")
    kinds = {(v.column, v.kind) for v in info.value.violations}
    assert ("f03", "out_of_range") in kinds and ("f07", "missing_column") in kinds
    assert _committed_dirs(rt) == []
    (run,) = rt.catalog.runs("churn", partition_date=END)
    assert run.status == FAILED and "f03" in (run.error or "") and run.report["violations"]


def test_no_production_model(rt: Runtime) -> None:
    (rt.registry.kind_dir("churn", "primary") / "production.json").unlink()
    with pytest.raises(RegistryError, match="no production primary model"):
        score_partition(rt, "churn", END, device="cpu")


def test_tampered_model_is_refused(rt: Runtime) -> None:
    version = rt.registry.production_version("churn", "primary")
    artifact = rt.registry.kind_dir("churn", "primary") / version / "model.ubj"
    artifact.write_bytes(artifact.read_bytes() + b" ")
    with pytest.raises(RegistryError, match="does not match its manifest"):
        score_partition(rt, "churn", END, device="cpu")
    assert _committed_dirs(rt) == []


def test_concurrent_run_of_the_same_partition_is_refused(rt: Runtime) -> None:
    """While a run of the partition is running, a second one is refused and writes nothing."""
    version = rt.registry.production_version("churn", "primary")
    running = rt.catalog.start_run(model="churn", model_version=version, partition_date=END)
    with pytest.raises(RunConflictError, match=running):
        score_partition(rt, "churn", END, device="cpu")
    assert _committed_dirs(rt) == []


def test_unwritable_output_fails_cleanly(rt: Runtime) -> None:
    """The scores directory cannot be created (a file is in the way: root ignores permission bits)."""
    rt.settings.scores_dir.mkdir(parents=True, exist_ok=True)
    (rt.settings.scores_dir / "churn").write_text("not a directory")
    with pytest.raises(UserError, match="cannot write scores under"):
        score_partition(rt, "churn", END, device="cpu")
    (run,) = rt.catalog.runs("churn", partition_date=END)
    assert run.status == FAILED


def test_crash_mid_job_leaves_nothing_committed(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """One task fails after others wrote their parts: no committed or staged output remains; rerun works."""
    real = score_mod.score_chunk

    def failing(chunk, *args, **kwargs):
        if chunk.index == 2:
            raise OSError("disk went away")
        return real(chunk, *args, **kwargs)

    monkeypatch.setattr(score_mod, "score_chunk", failing)
    with pytest.raises(OSError, match="disk went away"):
        score_partition(rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    part_dir = scores_partition_dir(rt, "churn", END)
    assert list(part_dir.iterdir()) == []
    (run,) = rt.catalog.runs("churn", partition_date=END)
    assert run.status == FAILED and "disk went away" in (run.error or "")
    monkeypatch.setattr(score_mod, "score_chunk", real)
    report = score_partition(rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    assert report.rows_out == fstore.read_partition(rt.home, "customer_daily", END).num_rows


def test_worker_killed_mid_job_still_completes(rt: Runtime) -> None:
    """An external process cluster; one worker is SIGKILLed while tasks run; the job completes correctly."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)  # fmt: skip
    client = Client(cluster)
    try:
        rt.settings.dask_address = cluster.scheduler_address
        pids = client.run(os.getpid)
        killed: list[int] = []

        def killer() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                processing = client.processing()
                busy = [w for w, tasks in processing.items() if tasks]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(pids[busy[0]])
                time.sleep(0.005)

        thread = threading.Thread(target=killer)
        thread.start()
        report = score_partition(rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
        thread.join()
        assert killed, "no worker was busy to kill"
        expected = _independent_scores(rt, END)
        table = read_run(report.output_path)
        assert table.num_rows == len(expected)
        got = dict(zip(table.column("entity_id").to_pylist(), table.column("score").to_pylist(), strict=True))
        assert max(abs(got[k] - v) for k, v in expected.items()) < 1e-6
    finally:
        client.close()
        cluster.close()


@pytest.mark.gpu
def test_gpu_scores_match_cpu(rt: Runtime) -> None:
    """On a CUDA machine, the dask-cuda path scores within 1e-5 of the CPU path."""
    from jobs.cluster import gpu_visible

    if not gpu_visible():
        pytest.skip("no CUDA GPU visible (cupy missing or no device)")
    cpu = read_run(score_partition(rt, "churn", END, device="cpu").output_path).sort_by("entity_id")
    gpu_run = score_partition(rt, "churn", END, device="cuda", force=True)
    gpu = read_run(gpu_run.output_path).sort_by("entity_id")
    assert gpu_run.device == "cuda"
    diff = np.abs(cpu.column("score").to_numpy() - gpu.column("score").to_numpy())
    assert diff.max() <= 1e-5
