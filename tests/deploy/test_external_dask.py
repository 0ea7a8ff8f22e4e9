"""A scoring job on an external Dask cluster, as the compose stack runs it: ``PRESCORE_DASK_ADDRESS`` names a
real ``dask scheduler`` with two ``dask worker`` processes (on 127.0.0.1), and the job's result must not depend
on where it ran."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.runtime import Runtime
from jobs.score import RunReport, score_partition
from tests.conftest import END
from warehouse.datasets import features as fstore
from warehouse.datasets.score_files import read_run
from warehouse.settings import Settings

pytestmark = pytest.mark.slow

TASK_ROWS = 5_000  # several tasks per partition, so that both workers get some
NO_REDIS = "redis://127.0.0.1:1/0"  # scoring never talks to Redis; publishing is not part of this test


def _score(settings: Settings) -> RunReport:
    rt = Runtime.from_settings(settings)
    try:
        return score_partition(rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    finally:
        rt.close()


def _scores(report: RunReport) -> pa.Table:
    assert report.output_path is not None
    return read_run(report.output_path).select(["entity_id", "score"]).sort_by("entity_id")


def test_external_cluster_scores_equal_the_local_cluster(
    external_dask: str,
    warehouse_copy: Callable[[str], tuple[Path, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job reaches the scheduler through PRESCORE_DASK_ADDRESS, reports the cluster as external, runs its
    tasks on both worker processes, and commits exactly the scores (ids and float32 bits) of a run on the
    local threads cluster."""
    from distributed import Client

    home, models_file = warehouse_copy("external")
    monkeypatch.setenv("PRESCORE_DASK_ADDRESS", external_dask)
    settings = Settings(home=home, models_file=models_file, redis_url=NO_REDIS, catalog_url=None)
    assert settings.dask_address == external_dask
    external = _score(settings)

    def models_loaded() -> int:  # runs on each worker: the job caches the booster once per worker process
        from jobs import score

        return len(score._BOOSTERS)

    with Client(external_dask, timeout="30s") as client:
        per_worker = client.run(models_loaded)
    assert len(per_worker) == 2 and all(n >= 1 for n in per_worker.values()), per_worker

    monkeypatch.delenv("PRESCORE_DASK_ADDRESS")
    local_home, _ = warehouse_copy("local")
    local_settings = Settings(home=local_home, models_file=models_file, redis_url=NO_REDIS, catalog_url=None,
                              dask_local="threads", dask_workers=2)  # fmt: skip
    assert local_settings.dask_address is None
    local = _score(local_settings)

    assert (external.cluster, local.cluster) == ("external", "local-threads")
    assert external.status == local.status == "committed" and not external.reused
    got, expected = _scores(external), _scores(local)
    assert got.num_rows == expected.num_rows == fstore.read_partition(home, "customer_daily", END).num_rows
    assert got.schema.field("score").type == pa.float32() == expected.schema.field("score").type
    assert got.column("entity_id").equals(expected.column("entity_id"))
    assert got.column("score").equals(expected.column("score"))  # bit for bit, not approximately
