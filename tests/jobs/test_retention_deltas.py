"""Retention of delta runs (``jobs.delta``): they go with their base run, failed ones after the failed window, the
live run's stay. Against a real SQLite catalog, the test Redis, real delta runs scored on Dask and real Parquet.

The delta run over an older (never published) base is recorded through the catalog with real files, the way
``score_deltas`` would have left it while that base was live: a delta only scores over the live run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jobs.delta import score_deltas
from jobs.retention import DELTAS, LEFTOVERS, SCORES, apply_retention, delta_run_verdicts
from jobs.runtime import Runtime
from jobs.score import score_partition, scores_partition_dir
from tests.jobs.conftest import END
from tests.jobs.test_delta import TASK_ROWS, publish_base, write_drop
from tests.jobs.test_retention import MODEL, clock, configure, day, old_mtime, removed
from warehouse.catalog import COMMITTED, FAILED, STAGED, DeltaRunRecord, new_run_id
from warehouse.datasets import score_files


def _delta(run_id: str, base: str, status: str, finished: dt.datetime) -> DeltaRunRecord:
    return DeltaRunRecord(
        run_id=run_id, model=MODEL, base_run_id=base, partition_date=END, model_version="v1", status=status,
        drop_ids=[], rows_out=None, as_of=None, output_path=None, report={}, error="boom", started_at=finished,
        finished_at=finished,
    )  # fmt: skip


def test_delta_rule_follows_the_base_run_and_the_failed_window() -> None:
    """A delta run goes with its gone base (committed or failed); a failed one goes after the window whatever its
    base; a staged one and a committed one of a held base are not listed."""
    now = dt.datetime(2030, 6, 30, tzinfo=dt.UTC)
    old, recent = now - dt.timedelta(days=40), now - dt.timedelta(days=3)
    runs = [
        _delta("a", "gone", COMMITTED, recent),
        _delta("b", "gone", FAILED, recent),
        _delta("c", "gone", STAGED, old),
        _delta("d", "live", COMMITTED, old),
        _delta("e", "live", FAILED, old),
        _delta("f", "live", FAILED, recent),
        _delta("g", "other", COMMITTED, old),
    ]
    gone, held = {"gone": "was removed"}, {"live": "live run"}
    verdicts = {r.run_id: (remove, why) for r, remove, why in delta_run_verdicts(runs, gone, held, now, 30)}
    assert set(verdicts) == {"a", "b", "e"}
    assert verdicts["a"] == (True, "its base run gone was removed")
    assert verdicts["e"][0] and "failed 40 days ago (retention_failed_days=30): boom" in verdicts["e"][1]


def _delta_state(rt: Runtime) -> dict[str, Any]:
    """Every file (size, mtime) under the scores directory and every delta_runs / delta_drops row."""
    root = Path(rt.settings.scores_dir)
    files = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))
    with rt.catalog.engine.connect() as conn:
        rows = {t: sorted(map(str, conn.execute(sa.text(f"SELECT * FROM {t}")))) for t in ("delta_runs", "delta_drops")}
    return {"files": files, "rows": rows}


def _old_base_delta(rt: Runtime, base_id: str, template: str) -> tuple[str, Path]:
    """A committed delta run over ``base_id`` (of ``day(-1)``), its Parquet a copy of ``template``'s part."""
    run_id = new_run_id(MODEL, day(-1))
    now = dt.datetime.now(dt.UTC)
    version = rt.registry.production_version(MODEL, "primary")
    rt.catalog.start_delta_run(run_id=run_id, model=MODEL, base_run_id=base_id, partition_date=day(-1),
                               model_version=version, drop_ids=[f"{day(-1)}/090000"], at=now)  # fmt: skip
    directory = score_files.delta_dir(scores_partition_dir(rt, MODEL, day(-1)), run_id)
    assert isinstance(directory, Path)
    directory.mkdir(parents=True)
    parts = score_files.require_parts(template)
    (directory / parts[0].name).write_bytes(Path(str(parts[0])).read_bytes())
    score_files.write_manifest(directory, run_id, [(parts[0].name, 1)])
    rt.catalog.commit_delta_run(run_id, rows_out=1, as_of=now, output_path=str(directory), report={}, at=now)
    return run_id, directory


def test_delta_runs_go_with_their_base_run_and_the_live_runs_stay(rt: Runtime) -> None:
    """Forty days on with a 7-day score window: the older run's Parquet goes and with it its delta run (directory,
    row, drops); the live run's committed delta run stays; a failed delta run of the live run goes with its staging
    leftover; a ``delta=`` directory no catalog row names goes as a leftover. The dry run lists exactly that and
    changes nothing; a second pass removes nothing."""
    configure(rt, retention_score_days=7, retention_failed_days=30, retention_leftover_hours=1)
    old = score_partition(rt, MODEL, day(-1), device="cpu")
    base = publish_base(rt)
    write_drop(rt, END, "090000")
    live = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS)
    assert live.run_id is not None and live.output_path is not None
    old_delta, old_dir = _old_base_delta(rt, old.run_id, live.output_path)
    part = scores_partition_dir(rt, MODEL, END)
    failed = new_run_id(MODEL, END)
    rt.catalog.start_delta_run(run_id=failed, model=MODEL, base_run_id=base, partition_date=END, model_version="v",
                               drop_ids=[f"{END}/100000"], at=clock())  # fmt: skip
    rt.catalog.fail_delta_run(failed, error="disk went away", at=clock())
    staging = score_files.delta_staging_dir(part, failed)
    ghost = score_files.delta_dir(part, "ghost-1")
    for leftover in (staging, ghost):
        assert isinstance(leftover, Path)
        leftover.mkdir()
        (leftover / "part-00000.parquet").write_bytes(b"half a part")
        old_mtime(leftover, 3)
    now = clock(days=40)

    before = _delta_state(rt)
    dry = apply_retention(rt, now=now, dry_run=True)
    assert _delta_state(rt) == before
    expected = sorted([f"{MODEL}/{old_delta} (delta over {old.run_id})", f"{MODEL}/{failed} (delta over {base})"])
    assert removed(dry, DELTAS) == expected
    assert str(ghost) in removed(dry, LEFTOVERS) and str(staging) not in removed(dry, LEFTOVERS)

    report = apply_retention(rt, now=now)
    assert sorted((r.store, r.item) for r in report.removed) == sorted((r.store, r.item) for r in dry.removed)
    assert removed(report, SCORES) == [str(old.output_path)]
    assert removed(report, DELTAS) == expected
    by_item = {r.item: r for r in report.removed if r.store == DELTAS}
    gone_with_base = by_item[f"{MODEL}/{old_delta} (delta over {old.run_id})"]
    assert f"its base run {old.run_id} was removed" in gone_with_base.reason and gone_with_base.bytes > 0
    assert "failed 40 days ago" in by_item[f"{MODEL}/{failed} (delta over {base})"].reason
    assert not old_dir.exists() and not old_dir.parent.exists()  # the emptied partition directory too
    assert not Path(str(staging)).exists() and not Path(str(ghost)).exists()
    assert [r.run_id for r in rt.catalog.delta_runs(MODEL)] == [live.run_id]
    assert rt.catalog.scored_drops(MODEL) == {f"{END}/090000": live.run_id}
    assert score_files.is_committed(live.output_path)
    assert rt.catalog.get_run(base).status == COMMITTED

    again = apply_retention(rt, now=now)
    assert removed(again, DELTAS) == [] and removed(again, LEFTOVERS) == []


def test_delta_runs_of_a_base_removed_before_go_on_the_next_pass(rt: Runtime) -> None:
    """A base run already gone from the catalog (a pass that crashed before its delta runs, or an older prescore):
    its delta runs go on the next pass, even inside the window."""
    configure(rt)
    old = score_partition(rt, MODEL, day(-1), device="cpu")
    publish_base(rt)
    write_drop(rt, END, "090000")
    live = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS)
    assert live.output_path is not None
    orphan, directory = _old_base_delta(rt, old.run_id, live.output_path)
    assert rt.catalog.expire_run(old.run_id)
    report = apply_retention(rt, now=clock())
    assert removed(report, DELTAS) == [f"{MODEL}/{orphan} (delta over {old.run_id})"]
    assert not directory.exists() and [r.run_id for r in rt.catalog.delta_runs(MODEL)] == [live.run_id]
