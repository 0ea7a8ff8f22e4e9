"""``dag.test()`` of ``prescore_delta`` against the real Redis fixture and a fresh SQLite metadata DB: what the run
ends as and what it left in the catalog. The logic itself is tested in ``tests/jobs/test_delta.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from jobs import orchestration
from jobs.runtime import Runtime
from tests.dags.test_dag_run import DAY, MODEL, feature_dir, task_states
from warehouse.catalog import COMMITTED

pytestmark = [pytest.mark.filterwarnings("ignore::starlette.exceptions.StarletteDeprecationWarning")]


def test_delta_run_scores_a_new_drop_then_skips(
    airflow_db: Path, prescore_env: dict[str, Any], load_dags: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DAY's nightly run live and one complete drop of DAY, the run succeeds and commits one delta run of that
    drop over the live run; the next run finds nothing new: its task is skipped and the run still succeeds."""
    with monkeypatch.context() as mp:  # outside Airflow: a threads cluster, like the tests in tests/jobs
        mp.setenv("PRESCORE_DASK_LOCAL", "threads")
        base = orchestration.score(MODEL, DAY.isoformat())["run_id"]
        assert orchestration.publish(MODEL, base)["published"]
    drop = feature_dir(prescore_env["home"], DAY) / "delta=093000"
    drop.mkdir()
    source = sorted(feature_dir(prescore_env["home"], DAY).glob("*.parquet"))[0]
    pq.write_table(pq.read_table(source).slice(0, 200), drop / "part-00000.parquet")
    (drop / "_SUCCESS").write_bytes(b"")

    dag = load_dags().dags["prescore_delta"]
    dr = dag.test()
    states = task_states(dr)
    assert dr.state == "success", states
    assert set(states.values()) == {"success"}, states
    rt = Runtime.from_settings()
    try:
        [run] = rt.catalog.delta_runs(MODEL, status=COMMITTED)
        assert (run.base_run_id, run.drop_ids, run.rows_out) == (base, [f"{DAY}/093000"], 200)
        again = dag.test()
        assert again.state == "success"
        assert set(task_states(again).values()) == {"skipped"}
        assert len(rt.catalog.delta_runs(MODEL)) == 1
    finally:
        rt.close()
