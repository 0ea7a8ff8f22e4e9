"""What a small scoring command pays before its work: no scikit-learn (xgboost without its estimators), no Dask for a
job of one task (inline, same scores), checked in fresh interpreters as a user's command runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.jobs.conftest import END
from warehouse.datasets.score_files import read_run
from warehouse.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_xgboost_comes_without_scikit_learn_which_stays_importable() -> None:
    out = _python(
        "import json, sys\n"
        "from warehouse.xgboost_loader import xgboost\n"
        "xgb = xgboost()\n"
        "before = 'sklearn' in sys.modules\n"
        "import sklearn\n"  # installed here (MLflow needs it): a later import works as usual
        "print(json.dumps({'before': before, 'booster': hasattr(xgb, 'Booster'), 'after': 'sklearn' in sys.modules,"
        " 'same': xgboost() is xgb}))"
    )
    assert out == {"before": False, "booster": True, "after": True, "same": True}


def test_a_one_chunk_partition_scores_inline_without_dask_or_scikit_learn(
    trained_template: tuple[Path, Path], tmp_path: Path, redis_url: str
) -> None:
    home, models_file = trained_template
    shutil.copytree(home, tmp_path / "home")
    env = {"PRESCORE_HOME": str(tmp_path / "home"), "PRESCORE_MODELS_FILE": str(models_file),
           "PRESCORE_REDIS_URL": redis_url, "PRESCORE_DASK_LOCAL": "threads"}  # fmt: skip
    out = _python(
        "import json, sys, datetime as dt\n"
        "from jobs.runtime import open_runtime\n"
        "from jobs.score import score_partition\n"
        "from jobs.publish import publish_run\n"
        "with open_runtime() as rt:\n"
        f"    report = score_partition(rt, 'churn', dt.date.fromisoformat('{END.isoformat()}'), task_rows=10**9)\n"
        "    published = publish_run(rt, 'churn', report.run_id)\n"
        "print(json.dumps({'cluster': report.cluster, 'run_id': report.run_id, 'rows': report.rows_out,"
        " 'published': published.run_id, 'loaded': sorted(m for m in ('sklearn', 'distributed', 'scipy.stats')"
        " if m in sys.modules)}))",
        env,
    )
    assert out["cluster"] == "inline" and out["published"] == out["run_id"]
    assert out["loaded"] == []  # no scikit-learn, no Dask, no scipy.stats on this path
    # the same partition on a Dask cluster (tasks of 5,000 rows) scores exactly the same
    settings = Settings(home=tmp_path / "home", models_file=models_file, redis_url=redis_url, dask_local="threads")
    rt = Runtime.from_settings(settings)
    try:
        dask_run = score_partition(rt, "churn", END, force=True, task_rows=5_000)
        inline_run = rt.catalog.get_run(str(out["run_id"]))
    finally:
        rt.close()
    assert dask_run.cluster == "local-threads"

    def scores(path: str | None) -> dict[str, float]:
        table = read_run(path)  # type: ignore[arg-type]
        return dict(zip(table.column("entity_id").to_pylist(), table.column("score").to_pylist(), strict=True))

    assert scores(dask_run.output_path) == scores(inline_run.output_path)
    assert len(scores(dask_run.output_path)) == out["rows"]
    assert pq.read_metadata(next(Path(str(inline_run.output_path)).glob("part-*.parquet"))).num_rows == out["rows"]
