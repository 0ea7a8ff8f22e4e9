"""``prescore monitor`` on the command line: JSON summary, human lines, one-line errors, ``--days``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from jobs.cli import app
from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.support.clock import day, iso

runner = CliRunner()


def _env(rt: Runtime) -> dict[str, str]:
    return {"PRESCORE_HOME": str(rt.home), "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
            "PRESCORE_REDIS_URL": rt.settings.redis_url or "", "PRESCORE_DASK_LOCAL": "threads"}  # fmt: skip


def test_monitor_cli(rt: Runtime) -> None:
    run = score_partition(rt, "churn", day(0), device="cpu")
    publish_run(rt, "churn", run.run_id)
    result = runner.invoke(app, ["monitor", "--model", "churn", "--date", iso(0), "--json"], env=_env(rt))
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)["reports"]
    assert (report["partition_date"], report["run_id"], report["drift_status"]) == (iso(0), run.run_id, "measured")
    assert len(report["features"]) == 32 and report["published_quality"]["auc"] > 0.7

    result = runner.invoke(app, ["monitor", "--model", "churn", "--date", iso(0), "--days", "3"], env=_env(rt))
    assert result.exit_code == 0, result.output
    assert f"churn {iso(0)} (run {run.run_id}" in result.output and "quality measured auc=" in result.output

    result = runner.invoke(app, ["monitor", "--model", "churn", "--date", iso(-1)], env=_env(rt))
    assert result.exit_code == 1 and "no committed run for" in result.output
    assert runner.invoke(app, ["monitor", "--model", "churn", "--date", iso(0), "--days", "0"]).exit_code == 2
    assert runner.invoke(app, ["monitor", "--help"]).exit_code == 0
