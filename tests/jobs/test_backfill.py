"""Backfills over real partitions, a real Dask cluster and the real catalog: resume, idempotency, faults."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.backfill import backfill, date_range
from jobs.cli import app
from jobs.publish import publish_run, store_status
from jobs.runtime import Runtime
from jobs.score import score_partition, scores_partition_dir
from tests.jobs.conftest import END
from warehouse.catalog import COMMITTED
from warehouse.datasets import features as fstore
from warehouse.errors import UserError
from warehouse.store.local_server import free_port

START = END - dt.timedelta(days=3)
runner = CliRunner()


def _committed_per_date(rt: Runtime) -> dict[str, int]:
    out: dict[str, int] = {}
    for day in date_range(START, END):
        out[day.isoformat()] = len(rt.catalog.runs("churn", partition_date=day, status=COMMITTED))
    return out


def _no_half_committed(rt: Runtime) -> None:
    for day in date_range(START, END):
        part = scores_partition_dir(rt, "churn", day)
        if part.exists():
            assert not list(part.glob(".staging-*")), f"staging left in {part}"
            for run_dir in part.glob("run=*"):
                assert (run_dir / "_SUCCESS").exists()


def _gate_off(rt: Runtime) -> None:
    spec = rt.config.models["churn"].model_copy(update={"max_psi": 10.0})
    rt.config = rt.config.model_copy(update={"models": {"churn": spec}})


def test_range_scores_every_date_and_publishes_only_the_newest(rt: Runtime) -> None:
    _gate_off(rt)
    report = backfill(rt, "churn", START, END, device="cpu")
    assert [d.status for d in report.dates] == ["scored"] * 4
    assert _committed_per_date(rt) == {d.isoformat(): 1 for d in date_range(START, END)}
    newest = report.dates[-1].run_id
    assert report.published is not None and report.published["run_id"] == newest
    assert store_status(rt, "churn")["current"]["run_id"] == newest
    again = backfill(rt, "churn", START, END, device="cpu")  # rerun: nothing redone, nothing duplicated
    assert [d.status for d in again.dates] == ["skipped"] * 4
    assert _committed_per_date(rt) == {d.isoformat(): 1 for d in date_range(START, END)}
    forced = backfill(rt, "churn", START, START, device="cpu", force=True, publish="none")
    assert forced.dates[0].status == "scored" and forced.published is None


def test_history_never_overwrites_a_newer_published_run(rt: Runtime) -> None:
    _gate_off(rt)
    live = score_partition(rt, "churn", END, device="cpu")
    publish_run(rt, "churn", live.run_id)
    report = backfill(rt, "churn", START, END - dt.timedelta(days=1), device="cpu")
    assert report.published is None and "newer" in (report.publish_note or "")
    assert store_status(rt, "churn")["current"]["run_id"] == live.run_id


def test_reversed_range() -> None:
    with pytest.raises(UserError, match="is after --end"):
        date_range(END, START)


def test_missing_partition_stops_or_is_skipped(rt: Runtime) -> None:
    """A hole in the middle of the range: listed before any work; --skip-missing scores the rest."""
    hole = START + dt.timedelta(days=1)
    shutil.rmtree(fstore.partition_dir(rt.home, "customer_daily", hole))
    with pytest.raises(UserError, match=f"{hole}.*--skip-missing"):
        backfill(rt, "churn", START, END, device="cpu")
    assert sum(_committed_per_date(rt).values()) == 0
    report = backfill(rt, "churn", START, END, device="cpu", skip_missing=True, publish="none")
    assert [d.status for d in report.dates] == ["scored", "missing", "scored", "scored"]


def test_overlapping_backfill_refuses_the_busy_date(rt: Runtime) -> None:
    """Another process is scoring one date: this backfill reports it busy and scores the others, once each."""
    version = rt.registry.production_version("churn", "primary")
    other = rt.catalog.start_run(model="churn", model_version=version, partition_date=START)
    report = backfill(rt, "churn", START, END, device="cpu", publish="none", max_parallel=2)
    statuses = {d.date: d.status for d in report.dates}
    assert statuses[START.isoformat()] == "busy" and other in (report.dates[0].error or "")
    assert [statuses[d.isoformat()] for d in date_range(START + dt.timedelta(days=1), END)] == ["scored"] * 3
    assert _committed_per_date(rt)[START.isoformat()] == 0


def test_sigterm_mid_backfill_then_resume(rt: Runtime, redis_url: str) -> None:
    """SIGTERM while the CLI backfills: no half-committed partition; the rerun finishes without redoing work."""
    env = {
        **os.environ,
        "PRESCORE_HOME": str(rt.home),
        "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
        "PRESCORE_REDIS_URL": redis_url,
        "PRESCORE_DASK_LOCAL": "threads",
    }
    cmd = [sys.executable, "-m", "jobs.cli", "backfill", "-m", "churn", "--start", str(START), "--end", str(END),
           "--publish", "none", "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(_committed_per_date(rt).values()) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    _no_half_committed(rt)
    first_pass = _committed_per_date(rt)
    assert 1 <= sum(first_pass.values()) <= 4
    report = backfill(rt, "churn", START, END, device="cpu", publish="none")
    skipped = [d.date for d in report.dates if d.status == "skipped"]
    assert sorted(skipped) == sorted(d for d, n in first_pass.items() if n == 1)
    assert _committed_per_date(rt) == {d.isoformat(): 1 for d in date_range(START, END)}
    _no_half_committed(rt)


def test_cli_errors(tmp_path: Path) -> None:
    env = {"PRESCORE_HOME": str(tmp_path)}
    bad = runner.invoke(app, ["backfill", "-m", "churn", "--start", "2026-11-20", "--end", "2026-11-01"], env=env)
    assert bad.exit_code == 1 and "is after --end" in bad.output
    bad = runner.invoke(app, ["backfill", "-m", "churn", "--start", "20261101", "--end", "2026-11-02"], env=env)
    assert bad.exit_code == 1 and "not a date" in bad.output


def test_via_airflow_unreachable(tmp_path: Path) -> None:
    env = {"PRESCORE_HOME": str(tmp_path), "PRESCORE_AIRFLOW_URL": f"http://127.0.0.1:{free_port()}"}
    args = ["backfill", "-m", "churn", "--start", "2026-11-01", "--end", "2026-11-02", "--via-airflow"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 1
    assert "cannot reach Airflow at http://127.0.0.1:" in result.output and "PRESCORE_AIRFLOW_URL" in result.output
