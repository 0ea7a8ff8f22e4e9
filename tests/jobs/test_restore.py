"""Restoring what the catalog says is live after Redis lost it: real Redis (FLUSHALL, a rewritten pointer), real Dask
workers, the real catalog and committed Parquet, and the command line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis
from typer.testing import CliRunner

from jobs.cli import app
from jobs.publish import publish_run, reconcile_pointer, rollback_model
from jobs.restore import check_model, restore_model
from jobs.retention import apply_retention
from jobs.runtime import Runtime
from jobs.score import RunReport, score_partition
from tests.support.clock import day
from warehouse.datasets.score_files import read_run, remove_run
from warehouse.errors import RestoreRefusedError, StoreError
from warehouse.store import ScoreReader, ScoreStore
from warehouse.store.keys import store_key
from warehouse.store_health import StoreState

MODEL = "churn"
runner = CliRunner()


def configure(rt: Runtime, **spec: Any) -> Runtime:
    """The model spec of this test (the quality gate off unless ``max_psi`` is given)."""
    update = {"max_psi": 10.0, **spec}
    rt.config = rt.config.model_copy(update={"models": {MODEL: rt.config.models[MODEL].model_copy(update=update)}})
    return rt


def flushall(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        client.flushall()


def served_equals_parquet(rt: Runtime, run: RunReport) -> None:
    """Every entity of the run is served from that run with its Parquet score, bit for bit."""
    table = read_run(str(run.output_path), columns=["entity_id", "score"])
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        hits = reader.get_many(MODEL, table.column("entity_id").to_pylist())
    finally:
        reader.close()
    assert all(h is not None and h.run_id == run.run_id for h in hits)
    assert [h.score for h in hits if h] == table.column("score").to_pylist()


def health(rt: Runtime) -> Any:
    with ScoreStore.from_url(rt.redis_url) as store:
        return check_model(rt, store, MODEL)


def publish_days(rt: Runtime, *offsets: int) -> list[RunReport]:
    runs = [score_partition(rt, MODEL, day(n), device="cpu") for n in offsets]
    for run in runs:
        publish_run(rt, MODEL, run.run_id, force=True)
    return runs


def test_flushall_then_restore_brings_back_the_live_run_its_rollback_targets_and_rollback(rt: Runtime) -> None:
    """Three runs published (keep_runs 2), then FLUSHALL: the model is lost (not "never published"); the restore
    reloads the live run and both rollback targets from Parquet, serves exactly the Parquet scores, is recorded as
    ``restore`` without a quality gate (max_psi tiny: a publish of the same runs would be blocked), is a no-op the
    second time, and rollback works afterwards."""
    configure(rt, max_psi=1e-9)
    older, previous, live = publish_days(rt, -2, -1, 0)
    flushall(rt.redis_url)

    lost = health(rt)
    assert lost.state is StoreState.LOST and lost.live_run_id == live.run_id and lost.served_run_id is None
    assert "no published run" in lost.reason
    report = restore_model(rt, MODEL)
    assert (report.status, report.run_id, report.action) == ("restored", live.run_id, "loaded")
    assert report.targets == {previous.run_id: "loaded", older.run_id: "loaded"}
    served_equals_parquet(rt, live)
    records = rt.catalog.publications(MODEL)
    assert (records[0]["action"], records[0]["run_id"], records[0]["previous_run_id"]) == ("restore", live.run_id, None)
    assert "blocked" not in [p["action"] for p in records]
    assert health(rt).state is StoreState.SERVING

    again = restore_model(rt, MODEL)
    assert (again.status, again.action) == ("ok", "present")
    assert set(again.targets.values()) == {"present"}
    assert len(rt.catalog.publications(MODEL)) == len(records)

    assert rollback_model(rt, MODEL)["run_id"] == previous.run_id
    served_equals_parquet(rt, previous)
    assert rollback_model(rt, MODEL)["run_id"] == older.run_id
    assert health(rt).state is StoreState.SERVING


def test_redis_gone_back_to_an_older_pointer_is_lost_and_the_live_run_comes_back(rt: Runtime) -> None:
    """Redis restored from an old snapshot points at the previous run again (published before the catalog's live
    record): that is a loss, not a change the catalog missed — nothing is reconciled; the restore flips back."""
    configure(rt)
    previous, live = publish_days(rt, -1, 0)
    with redis.Redis.from_url(rt.redis_url) as client:  # what an older snapshot of the store holds
        client.set(store_key(MODEL, "current"), previous.run_id)
        client.hset(store_key(MODEL, "meta", previous.run_id), "state", "published")
    lost = health(rt)
    assert lost.lost and lost.served_run_id == previous.run_id and "published before" in lost.reason
    with ScoreStore.from_url(rt.redis_url) as store:
        assert reconcile_pointer(rt, store, MODEL) is None
    report = restore_model(rt, MODEL)
    assert (report.status, report.run_id, report.action) == ("restored", live.run_id, "present")
    assert rt.catalog.publications(MODEL)[0]["previous_run_id"] == previous.run_id
    served_equals_parquet(rt, live)


def _remove_like_retention(rt: Runtime, run: RunReport) -> None:
    """What retention does to a run's Parquet: tombstone, files (manifest first), then the catalog row."""
    assert rt.catalog.expire_run(run.run_id)
    remove_run(str(run.output_path))
    rt.catalog.delete_runs([run.run_id], status="expired")


def test_live_run_deleted_by_retention_is_refused_and_falls_back_only_when_the_models_file_allows(
    rt: Runtime,
) -> None:
    """FLUSHALL, and the live run's Parquet gone: one clear refusal naming the run, the reason and the option, and
    nothing written to Redis; with ``restore_fallback_to_older_run`` the previous run is restored instead and recorded
    as a restore that replaced the live one; the model is then served, not lost."""
    configure(rt)
    previous, live = publish_days(rt, -1, 0)
    flushall(rt.redis_url)
    _remove_like_retention(rt, live)

    with pytest.raises(RestoreRefusedError) as refused:
        restore_model(rt, MODEL)
    message = str(refused.value)
    assert live.run_id in message and "retention removed" in message
    assert "restore_fallback_to_older_run" in message and "\n" not in message
    with redis.Redis.from_url(rt.redis_url) as client:
        assert client.dbsize() == 0  # only the released lock was ever written

    configure(rt, restore_fallback_to_older_run=True)
    report = restore_model(rt, MODEL)
    assert (report.status, report.run_id, report.live_run_id) == ("restored", previous.run_id, live.run_id)
    assert f"instead of {live.run_id}" in report.message
    record = rt.catalog.publications(MODEL)[0]
    assert (record["action"], record["run_id"], record["previous_run_id"]) == ("restore", previous.run_id, live.run_id)
    assert "retention removed" in record["detail"]["fell_back"]
    served_equals_parquet(rt, previous)
    assert health(rt).state is StoreState.SERVING


@pytest.mark.parametrize("damage", ["fewer rows", "part deleted"])
def test_parquet_that_no_longer_matches_its_manifest_is_refused(rt: Runtime, damage: str) -> None:
    """A part rewritten with fewer rows, or deleted: the restore refuses saying how it differs from the manifest."""
    configure(rt)
    (live,) = publish_days(rt, 0)
    flushall(rt.redis_url)
    part = sorted(Path(str(live.output_path)).glob("part-*.parquet"))[0]
    if damage == "fewer rows":
        table = pq.read_table(part)
        pq.write_table(table.slice(0, table.num_rows - 1), part)
        expected = f"holds {table.num_rows - 1} rows, its manifest says {table.num_rows}"
    else:
        part.unlink()
        expected = f"no longer match its manifest at {part.parent} (missing: {part.name}"
    with pytest.raises(RestoreRefusedError, match="cannot restore churn") as refused:
        restore_model(rt, MODEL)
    assert expected in str(refused.value)
    assert health(rt).lost


def test_a_restore_already_running_makes_a_second_one_do_nothing(rt: Runtime) -> None:
    configure(rt)
    publish_days(rt, 0)
    flushall(rt.redis_url)
    with ScoreStore.from_url(rt.redis_url) as store, store.lock(MODEL, "restore", 60) as held:
        assert held
        report = restore_model(rt, MODEL)
    assert report.status == "busy" and health(rt).lost
    assert restore_model(rt, MODEL).status == "restored"


@pytest.mark.parametrize(("policy", "refused"), [("allkeys-lru", True), ("volatile-lru", False), (None, False)])
def test_publish_and_restore_refuse_a_redis_that_would_evict_score_buckets(
    rt: Runtime, redis_factory: Any, policy: str | None, refused: bool
) -> None:
    """``allkeys-*`` evicts keys without a TTL, i.e. score buckets: publish and restore refuse before writing
    anything. ``volatile-*`` evicts only keys with a TTL (score keys have none): accepted. A Redis that refuses
    CONFIG (managed services rename it; ``policy`` None) is accepted."""
    args = ["--maxmemory", "512mb", "--maxmemory-policy", policy] if policy else ["--rename-command", "CONFIG", ""]
    server = redis_factory(extra_args=args)
    rt.settings = rt.settings.model_copy(update={"redis_url": server.url})
    rt.__dict__.pop("redis_url", None)
    configure(rt)
    run = score_partition(rt, MODEL, day(0), device="cpu")
    if not refused:
        publish_run(rt, MODEL, run.run_id)
        served_equals_parquet(rt, run)
        return
    with pytest.raises(StoreError, match=f"maxmemory-policy: redis has {policy}.*noeviction"):
        publish_run(rt, MODEL, run.run_id)
    rt.catalog.record_publication(model=MODEL, action="publish", run_id=run.run_id, previous_run_id=None)
    with pytest.raises(StoreError, match="would evict score buckets"):
        restore_model(rt, MODEL)
    with redis.Redis.from_url(server.url) as client:
        assert client.dbsize() == 0


def test_retention_keeps_the_catalogs_live_run_and_rollback_target_while_redis_has_lost_them(rt: Runtime) -> None:
    """Redis flushed, then retention runs 40 days later with a 30-day window: the live run (not the newest
    committed one: it was rolled back to) and its rollback target keep their Parquet because the catalog names
    them; the rest goes; the restore then brings the live run back."""
    configure(rt, keep_runs=1)
    rt.settings = rt.settings.model_copy(update={"retention_score_days": 30})
    runs = publish_days(rt, -3, -2, -1, 0)
    rollback_model(rt, MODEL)  # live: day -1; rollback target: day -2
    flushall(rt.redis_url)
    report = apply_retention(rt, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=40))
    kept = {k.item: k.reason for k in report.kept if k.store == "scores"}
    assert kept[str(runs[2].output_path)] == "live run per the catalog (restore reloads it when Redis lost it)"
    assert kept[str(runs[1].output_path)] == "rollback target per the catalog (restore reloads it)"
    assert not Path(str(runs[0].output_path)).exists()
    restored = restore_model(rt, MODEL)
    assert restored.run_id == runs[2].run_id and restored.targets == {runs[1].run_id: "loaded"}
    served_equals_parquet(rt, runs[2])


def _env(rt: Runtime) -> dict[str, str]:
    return {"PRESCORE_HOME": str(rt.settings.home_dir), "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
            "PRESCORE_REDIS_URL": str(rt.settings.redis_url), "PRESCORE_CATALOG_URL": "",
            "PRESCORE_DASK_LOCAL": "threads"}  # fmt: skip


def test_the_command_line_says_lost_restores_and_refuses_in_one_line(rt: Runtime) -> None:
    """``prescore status`` shows the loss (not "none"); ``prescore restore`` needs --model or --all; ``--all
    --json`` restores and reports; again, it reports ok; with the Parquet gone it exits 1 with one line."""
    configure(rt)
    (live,) = publish_days(rt, 0)
    flushall(rt.redis_url)
    env = _env(rt)
    status = runner.invoke(app, ["status", "--model", MODEL], env=env, terminal_width=400)
    assert status.exit_code == 0, status.output
    assert "scores LOST" in status.output and live.run_id in status.output and "none (prescore" not in status.output
    as_json = runner.invoke(app, ["status", "--json"], env=env)
    assert json.loads(as_json.stdout)[0]["store"]["health"]["state"] == "lost"

    usage = runner.invoke(app, ["restore"], env=env)
    assert usage.exit_code == 1 and "give --model NAME or --all" in usage.output

    restored = runner.invoke(app, ["restore", "--all", "--json"], env=env)
    assert restored.exit_code == 0, restored.output
    [item] = json.loads(restored.stdout)
    assert (item["model"], item["status"], item["run_id"]) == (MODEL, "restored", live.run_id)
    again = runner.invoke(app, ["restore", "--model", MODEL], env=env, terminal_width=400)
    assert again.exit_code == 0 and "nothing to restore" in again.output
    served_equals_parquet(rt, live)

    flushall(rt.redis_url)
    remove_run(str(live.output_path))
    gone = runner.invoke(app, ["restore", "--model", MODEL], env=env, terminal_width=400)
    assert gone.exit_code == 1 and "Traceback" not in gone.output
    [line] = [ln for ln in gone.output.splitlines() if ln.strip()]
    assert line.startswith("error: cannot restore churn") and "its Parquet is gone" in line


def test_rollback_while_the_store_is_lost_says_to_restore_first(rt: Runtime) -> None:
    configure(rt)
    publish_days(rt, -1, 0)
    flushall(rt.redis_url)
    with pytest.raises(StoreError, match="restore it first"):
        rollback_model(rt, MODEL)


def test_a_partly_lost_run_is_repaired_in_place(rt: Runtime) -> None:
    """Some buckets of the live run vanish (what an eviction or a replaced cluster node leaves): sampled checks find
    it lost with the pointer still there; the restore rewrites the run in place (same run id, same scores) and keeps
    its state."""
    configure(rt)
    (live,) = publish_days(rt, 0)
    with redis.Redis.from_url(rt.redis_url) as client:
        doomed = list(client.scan_iter(match=store_key(MODEL, "bucket", live.run_id, "*")))[::3]
        client.delete(*doomed)
    lost = health(rt)
    assert lost.lost and lost.served_run_id == live.run_id and "sampled buckets" in lost.reason
    report = restore_model(rt, MODEL)
    assert (report.status, report.action, report.run_id) == ("restored", "repaired", live.run_id)
    with ScoreStore.from_url(rt.redis_url) as store:
        info = store.current_run(MODEL)
        assert info is not None and info.state.value == "published" and info.reopened_from is None
        assert store.count_rows(MODEL, live.run_id) == live.rows_out
    served_equals_parquet(rt, live)


def test_pointer_records_carry_the_stores_flip_time(rt: Runtime) -> None:
    """The catalog orders pointer changes as Redis made them: each record's time is the run's published_at."""
    configure(rt)
    (live,) = publish_days(rt, 0)
    with ScoreStore.from_url(rt.redis_url) as store:
        info = store.current_run(MODEL)
    assert info is not None
    record = rt.catalog.live_pointer(MODEL)
    assert record is not None and (record.run_id, record.at) == (live.run_id, info.published_at)


def test_the_reconcile_task_restores_only_lost_models_and_fails_visibly_when_it_cannot(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``prescore_reconcile`` runs: a healthy store is left alone (no Dask, no record); a lost one is
    restored; one whose Parquet is gone makes the task fail with the reason (no retry can fix it)."""
    from jobs import orchestration

    for key, value in _env(rt).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    configure(rt)
    (live,) = publish_days(rt, 0)
    records = len(rt.catalog.publications(MODEL))
    assert orchestration.reconcile_store() == {MODEL: {"status": "ok", "run_id": live.run_id, "seconds": 0.0}}
    assert len(rt.catalog.publications(MODEL)) == records
    flushall(rt.redis_url)
    healed = orchestration.reconcile_store()
    assert (healed[MODEL]["status"], healed[MODEL]["run_id"]) == ("restored", live.run_id)
    flushall(rt.redis_url)
    remove_run(str(live.output_path))
    with pytest.raises(RestoreRefusedError, match="its Parquet is gone"):
        orchestration.reconcile_store()
