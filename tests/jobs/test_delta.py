"""Delta scoring (``jobs.delta``) on a real Dask cluster, real Parquet drops, a real SQLite catalog and the test Redis.

Each test publishes the nightly run of ``END`` (the live run a delta applies to), writes delta drops into the
feature partition the way a writer would (Parquet parts, ``_SUCCESS`` last) and asserts what the delta job committed
in the catalog and Parquet, and that the live store is unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from jobs import delta as delta_mod
from jobs.delta import NOOP, score_deltas
from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition, scores_partition_dir
from tests.jobs.conftest import END
from warehouse.catalog import COMMITTED, FAILED, STAGED, new_run_id
from warehouse.datasets import features as fstore
from warehouse.datasets import score_files
from warehouse.datasets.deltas import drop_dir
from warehouse.errors import ContractViolationError, DeltaRefusedError, RunConflictError
from warehouse.store import ScoreReader

MODEL, FS = "churn", "customer_daily"
TASK_ROWS = 100  # several Dask tasks per drop
ROWS = 300


def publish_base(rt: Runtime) -> str:
    """Score and publish the nightly run of END: the live run deltas of END apply to."""
    run_id = score_partition(rt, MODEL, END, device="cpu", task_rows=5_000).run_id
    assert publish_run(rt, MODEL, run_id).run_id == run_id
    return run_id


def write_drop(rt: Runtime, day: dt.date, stamp: str, offset: int = 0, f03: float | None = None) -> Path:
    """A complete drop of ``ROWS`` rows of the day's partition (from ``offset``) with f00 changed, row groups of
    ``TASK_ROWS``; ``f03`` sets that feature on every row (out of range breaks the contract)."""
    table = fstore.read_partition(rt.home, FS, day).slice(offset, ROWS)
    f00 = table.column("f00").to_numpy(zero_copy_only=False)
    table = table.set_column(table.schema.get_field_index("f00"), "f00", pa.array((f00 * 0.5).astype(np.float32)))
    if f03 is not None:
        column = pa.array(np.full(ROWS, f03, dtype=np.float32))
        table = table.set_column(table.schema.get_field_index("f03"), "f03", column)
    directory = drop_dir(rt.home, FS, day, stamp)
    assert isinstance(directory, Path)
    directory.mkdir()
    pq.write_table(table, directory / "part-00000.parquet", row_group_size=TASK_ROWS)
    (directory / "_SUCCESS").write_bytes(b"")
    return directory


def cli_env(rt: Runtime, **extra: str) -> dict[str, str]:
    """The environment of a `prescore` command run against the test's home, Redis and catalog."""
    return {"PRESCORE_HOME": str(rt.home), "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
            "PRESCORE_REDIS_URL": rt.redis_url, "PRESCORE_DASK_LOCAL": "threads", "PRESCORE_CATALOG_URL": "",
            **extra}  # fmt: skip


def live_run_id(rt: Runtime) -> str | None:
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        current = reader.current_run(MODEL)
    finally:
        reader.close()
    return current.run_id if current else None


def delta_entries(rt: Runtime, day: dt.date = END) -> list[str]:
    """What delta runs left in the scores partition (committed directories and staging leftovers)."""
    part = scores_partition_dir(rt, MODEL, day)
    assert isinstance(part, Path)
    return sorted(p.name for p in part.iterdir() if "delta" in p.name) if part.is_dir() else []


def independent_scores(rt: Runtime, directory: Path) -> dict[str, float]:
    """The drop's rows predicted through a separately loaded booster and a DMatrix (not the job's code path)."""
    features = rt.config.model_features(MODEL)
    version = rt.registry.production_version(MODEL, "primary")
    booster = xgb.Booster()
    booster.load_model(rt.registry.kind_dir(MODEL, "primary") / version / "model.ubj")
    table = pq.read_table(directory / "part-00000.parquet")
    x = np.column_stack([table.column(f).to_numpy(zero_copy_only=False) for f in features]).astype(np.float32)
    preds = booster.predict(xgb.DMatrix(x, missing=np.nan))
    return dict(zip(table.column("entity_id").to_pylist(), preds.tolist(), strict=True))


def test_new_drops_are_scored_once_as_a_delta_run_over_the_live_run(rt: Runtime) -> None:
    """A drop is scored on Dask into a committed delta run over the live run (scores equal xgboost's own); a rerun
    with no new drop is a no-op saying so; a second drop is scored alone; the live store never moves."""
    base = publish_base(rt)
    first = write_drop(rt, END, "093000")
    report = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS)
    assert (report.status, report.base_run_id, report.drop_ids, report.rows_out) == (
        COMMITTED, base, [f"{END}/093000"], ROWS)  # fmt: skip
    assert report.cluster == "local-threads"  # several tasks: really on Dask
    [record] = rt.catalog.delta_runs(MODEL, status=COMMITTED)
    assert (record.run_id, record.base_run_id, record.drop_ids, record.rows_out) == (
        report.run_id, base, [f"{END}/093000"], ROWS)  # fmt: skip
    assert record.as_of is not None and record.as_of.date() == END
    assert record.output_path == str(score_files.delta_dir(scores_partition_dir(rt, MODEL, END), report.run_id))
    assert len(record.report["parts"][f"{END}/093000"]) == ROWS // TASK_ROWS
    table = score_files.read_run(record.output_path)
    expected = independent_scores(rt, first)
    got = dict(zip(table.column("entity_id").to_pylist(), table.column("score").to_pylist(), strict=True))
    assert got.keys() == expected.keys()
    assert max(abs(got[k] - v) for k, v in expected.items()) < 1e-6
    assert rt.catalog.scored_drops(MODEL) == {f"{END}/093000": report.run_id}

    again = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS)
    assert again.status == NOOP and again.run_id is None
    assert "no new delta drops" in again.message and "1 drops scored before" in again.message
    assert len(rt.catalog.delta_runs(MODEL)) == 1

    write_drop(rt, END, "101500", offset=ROWS)
    second = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS)
    assert (second.status, second.drop_ids) == (COMMITTED, [f"{END}/101500"])
    assert [r.run_id for r in rt.catalog.delta_runs(MODEL, status=COMMITTED)] == [report.run_id, second.run_id]
    assert delta_entries(rt) == sorted(f"delta={r}" for r in (report.run_id, second.run_id))
    assert live_run_id(rt) == base


def test_since_limits_the_drops_scored(rt: Runtime) -> None:
    """``since`` scores only the drops at or after it; an incomplete drop (no ``_SUCCESS``) is never listed."""
    publish_base(rt)
    write_drop(rt, END, "080000")
    write_drop(rt, END, "120000", offset=ROWS)
    (write_drop(rt, END, "130000", offset=2 * ROWS) / "_SUCCESS").unlink()  # its writer has not finished
    since = dt.datetime.combine(END, dt.time(12, 0), tzinfo=dt.UTC)
    report = score_deltas(rt, MODEL, since=since, device="cpu", task_rows=TASK_ROWS)
    assert report.drop_ids == [f"{END}/120000"]
    assert score_deltas(rt, MODEL, device="cpu").drop_ids == [f"{END}/080000"]  # the earlier one, later


def test_a_drop_that_breaks_the_contract_is_refused_and_nothing_changes(rt: Runtime) -> None:
    """A drop with out-of-range values fails the delta run before anything is written: no delta Parquet, no drop
    marked scored, the good drop of the same call not scored either, the live run still served."""
    base = publish_base(rt)
    write_drop(rt, END, "090000")
    write_drop(rt, END, "091500", offset=ROWS, f03=5000.0)
    with pytest.raises(ContractViolationError, match=f"delta drop {END}/091500 .* breaks its contract: f03"):
        score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS)
    [failed] = rt.catalog.delta_runs(MODEL)
    assert failed.status == FAILED and "f03 out_of_range" in (failed.error or "")
    assert rt.catalog.delta_runs(MODEL, status=COMMITTED) == []
    assert rt.catalog.scored_drops(MODEL) == {}
    assert delta_entries(rt) == []
    assert live_run_id(rt) == base


def test_a_drop_of_a_date_whose_run_is_not_live_is_refused(rt: Runtime) -> None:
    """Refused, not held: with nothing live, and then with END live, a drop of the day before is refused naming the
    live run; nothing is recorded or written. Moved away, the other drops are scored."""
    before = END - dt.timedelta(days=1)
    stale = write_drop(rt, before, "090000")
    with pytest.raises(DeltaRefusedError, match="no run of churn is live"):
        score_deltas(rt, MODEL, device="cpu")
    base = publish_base(rt)
    write_drop(rt, END, "090000")
    with pytest.raises(DeltaRefusedError, match=f"{before}/090000 of churn refused .* live run is {base} of {END}"):
        score_deltas(rt, MODEL, device="cpu")
    assert rt.catalog.delta_runs(MODEL) == []
    assert delta_entries(rt) == [] and delta_entries(rt, before) == []
    stale.rename(stale.with_name("moved-away"))
    assert score_deltas(rt, MODEL, device="cpu").drop_ids == [f"{END}/090000"]
    assert live_run_id(rt) == base


def test_a_job_failing_mid_load_commits_nothing_and_a_rerun_scores_the_drop(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Dask task fails after others wrote their parts: no delta Parquet or staging remains, the run is failed,
    the drop is not marked scored; the rerun scores it."""
    base = publish_base(rt)
    write_drop(rt, END, "090000")
    real = delta_mod.score_chunk

    def failing(chunk, *args, **kwargs):  # type: ignore[no-untyped-def]
        if chunk.index == 2:
            raise OSError("disk went away")
        return real(chunk, *args, **kwargs)

    monkeypatch.setattr(delta_mod, "score_chunk", failing)
    with pytest.raises(OSError, match="disk went away"):
        score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS)
    [failed] = rt.catalog.delta_runs(MODEL)
    assert failed.status == FAILED and "disk went away" in (failed.error or "")
    assert delta_entries(rt) == [] and rt.catalog.scored_drops(MODEL) == {}
    monkeypatch.setattr(delta_mod, "score_chunk", real)
    report = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS)
    assert (report.status, report.drop_ids, report.rows_out) == (COMMITTED, [f"{END}/090000"], ROWS)
    assert live_run_id(rt) == base


def test_a_killed_job_leaves_nothing_visible_and_a_rerun_scores_its_drop(rt: Runtime) -> None:
    """What a SIGKILLed delta job leaves — a staged run and a staging directory with a part — is invisible (no
    committed run, the drop not scored); the rerun scores the drop. Once the killed run is older than the abandon
    bound (the clock moved ahead), it is marked failed and its staging directory removed."""
    base = publish_base(rt)
    write_drop(rt, END, "090000")
    killed = new_run_id(MODEL, END)
    now = dt.datetime.now(dt.UTC)
    version = rt.registry.production_version(MODEL, "primary")
    rt.catalog.start_delta_run(run_id=killed, model=MODEL, base_run_id=base, partition_date=END,
                               model_version=version, drop_ids=[f"{END}/090000"], at=now)  # fmt: skip
    leftover = score_files.delta_staging_dir(scores_partition_dir(rt, MODEL, END), killed)
    assert isinstance(leftover, Path)
    leftover.mkdir()
    (leftover / "part-00000.parquet").write_bytes(b"half a part")
    assert rt.catalog.delta_runs(MODEL, status=COMMITTED) == [] and rt.catalog.scored_drops(MODEL) == {}

    report = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS, clock=lambda: now)
    assert report.drop_ids == [f"{END}/090000"]
    assert [r.run_id for r in rt.catalog.delta_runs(MODEL, status=COMMITTED)] == [report.run_id]
    assert rt.catalog.get_delta_run(killed).status == STAGED and leftover.exists()  # it may still be running

    write_drop(rt, END, "100000", offset=ROWS)
    later = now + dt.timedelta(hours=7)
    score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS, clock=lambda: later)
    assert rt.catalog.get_delta_run(killed).status == FAILED and not leftover.exists()


def test_two_runs_racing_to_commit_a_drop_score_it_once(rt: Runtime) -> None:
    """Two staged delta runs of the same drop: the first commit claims it; the second is refused and changes
    nothing (the unique drop id decides in the database)."""
    now = dt.datetime.now(dt.UTC)
    ids = [f"{END}/090000"]
    for run_id in ("r1", "r2"):
        rt.catalog.start_delta_run(run_id=run_id, model=MODEL, base_run_id="b", partition_date=END, model_version="v",
                                   drop_ids=ids, at=now)  # fmt: skip
    rt.catalog.commit_delta_run("r1", rows_out=1, as_of=now, output_path="/x/r1", report={}, at=now)
    with pytest.raises(RunConflictError, match=f"{END}/090000 by r1"):
        rt.catalog.commit_delta_run("r2", rows_out=1, as_of=now, output_path="/x/r2", report={}, at=now)
    assert rt.catalog.get_delta_run("r2").status == STAGED
    assert rt.catalog.scored_drops(MODEL) == {f"{END}/090000": "r1"}


def test_cli_says_no_op_refuses_in_one_line_and_scores(rt: Runtime) -> None:
    """`prescore delta`: no new drop is a no-op saying so (exit 0); a refused drop is one line and exit 1; a bad
    --since is one line; a drop of the live date is committed (--json)."""
    from typer.testing import CliRunner

    from jobs.cli import app

    runner = CliRunner()
    env = cli_env(rt)
    quiet = runner.invoke(app, ["delta", "-m", MODEL, "--device", "cpu"], env=env)
    assert quiet.exit_code == 0 and "no new delta drops" in quiet.output, quiet.output
    bad = runner.invoke(app, ["delta", "-m", MODEL, "--since", "noon"], env=env)
    assert bad.exit_code == 1 and "--since 'noon' is not a time" in bad.output
    write_drop(rt, END, "090000")
    refused = runner.invoke(app, ["delta", "-m", MODEL, "--device", "cpu"], env=env)
    assert refused.exit_code == 1 and "no run of churn is live" in refused.output
    assert "Traceback" not in refused.output
    base = publish_base(rt)
    done = runner.invoke(app, ["delta", "-m", MODEL, "--device", "cpu", "--since", END.isoformat(), "--json"], env=env)
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert (payload["status"], payload["base_run_id"], payload["drop_ids"]) == (COMMITTED, base, [f"{END}/090000"])


def test_a_committed_delta_is_published_as_an_overlay_a_missed_publish_is_mended_and_a_new_base_drops_it(
    rt: Runtime,
) -> None:
    """A delta run is served over its base (each entity its own score and as_of, the rest of the base unchanged);
    one committed but not published (the job killed after its commit) is published by the next call, a no-op; a
    delta committed over a base that a new nightly run replaced is never published over the new one."""
    base = publish_base(rt)
    write_drop(rt, END, "093000")
    report = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS)
    assert report.published == [report.run_id] and "published into the overlay layer" in report.message
    table = score_files.read_run(report.output_path, columns=["entity_id", "score", "as_of"])
    ids = table.column("entity_id").to_pylist()
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        got = reader.get_many(MODEL, [*ids[:50], "not-an-entity"])
        layer = reader.layer(MODEL)
    finally:
        reader.close()
    for found, score, as_of in zip(got[:-1], table.column("score").to_pylist(), table.column("as_of").to_pylist(),
                                   strict=False):  # fmt: skip
        assert found is not None and found.overlay and found.run_id == base
        assert found.score == pytest.approx(score, abs=1e-7) and found.as_of == as_of
    assert got[-1] is None
    assert layer is not None and (layer.deltas, layer.rescored) == ((report.run_id,), len(set(ids)))

    write_drop(rt, END, "101500", offset=ROWS)
    unpublished = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS, publish=False)
    assert unpublished.status == COMMITTED and unpublished.published == []
    mended = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS)
    assert mended.status == NOOP and mended.published == [unpublished.run_id] and "left unpublished" in mended.message

    write_drop(rt, END, "120000", offset=2 * ROWS)
    stale = score_deltas(rt, MODEL, device="cpu", task_rows=TASK_ROWS, publish=False)
    newer = score_partition(rt, MODEL, END, device="cpu", task_rows=5_000, force=True).run_id  # the next nightly
    assert newer != base and publish_run(rt, MODEL, newer).run_id == newer
    assert delta_mod.publish_deltas(rt, MODEL) == []
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        late = score_files.read_run(stale.output_path, columns=["entity_id"]).column("entity_id").to_pylist()
        assert all(f is not None and not f.overlay and f.run_id == newer for f in reader.get_many(MODEL, late[:20]))
        assert reader.layer(MODEL) is None
    finally:
        reader.close()


def test_cli_invalidate_marks_counts_and_refuses_in_one_line(rt: Runtime, tmp_path: Path) -> None:
    """`prescore invalidate`: ids from a file or stdin are marked in the live run (unknown ones counted), shown by
    `prescore status --json`; beyond PRESCORE_INVALIDATE_MAX_IDS, an empty list, a missing file or nothing live:
    one line and exit 1, nothing marked."""
    from typer.testing import CliRunner

    from jobs.cli import app

    runner = CliRunner()
    env = cli_env(rt, PRESCORE_INVALIDATE_MAX_IDS="3")
    ids_file = tmp_path / "ids.txt"
    nothing = runner.invoke(app, ["invalidate", "-m", MODEL, "--ids", "-"], input="a\n", env=env)
    assert nothing.exit_code == 1 and "no live run" in nothing.output and "Traceback" not in nothing.output
    base = publish_base(rt)
    known = fstore.read_partition(rt.home, FS, END).column("entity_id").to_pylist()[:2]
    ids_file.write_text(f"{known[0]}\n\n{known[1]}\nnobody\n")
    done = runner.invoke(app, ["invalidate", "-m", MODEL, "--ids", str(ids_file), "--reason", "fraud", "--json"],
                         env=env)  # fmt: skip
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert (payload["run_id"], payload["invalidated"], payload["unknown"]) == (base, 2, 1)
    too_many = runner.invoke(app, ["invalidate", "-m", MODEL, "--ids", "-"], input="a\nb\nc\nd\n", env=env)
    assert too_many.exit_code == 1 and "PRESCORE_INVALIDATE_MAX_IDS" in too_many.output
    empty = runner.invoke(app, ["invalidate", "-m", MODEL, "--ids", "-"], input="\n", env=env)
    missing = runner.invoke(app, ["invalidate", "-m", MODEL, "--ids", str(tmp_path / "nope.txt")], env=env)
    assert empty.exit_code == 1 and "no ids" in empty.output
    assert missing.exit_code == 1 and "no such file" in missing.output
    status = runner.invoke(app, ["status", "-m", MODEL, "--json"], env=env)
    assert status.exit_code == 0, status.output
    [item] = json.loads(status.stdout)
    assert item["store"]["layer"]["invalidated"] == 2 and item["store"]["layer"]["overlays"] == 0
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        marks = [f.invalid if f else None for f in reader.get_many(MODEL, [*known, "nobody"])]
        assert marks == ["fraud", "fraud", None]
    finally:
        reader.close()
    table = runner.invoke(app, ["status", "-m", MODEL], env=env)
    assert "between nightly runs" in table.output and "rescored, 2" in table.output, table.output
