"""Publishing committed runs through real Dask workers into a real Redis, rollback, gate and retention."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from jobs.publish import publish_run, rollback_model, store_status
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.jobs.conftest import END
from warehouse.datasets.score_files import read_run
from warehouse.errors import CatalogError, QualityGateError, StoreError
from warehouse.store import ScoreReader, ScoreStore

PREV = END - dt.timedelta(days=1)


def _gate_off(rt: Runtime, max_psi: float = 10.0) -> None:
    spec = rt.config.models["churn"].model_copy(update={"max_psi": max_psi})
    rt.config = rt.config.model_copy(update={"models": {"churn": spec}})


def test_publish_serves_exactly_the_parquet_scores(rt: Runtime) -> None:
    """Every committed score is served by the reader after publish, bit for bit; catalog records it."""
    run = score_partition(rt, "churn", END, device="cpu", task_rows=5_000)
    report = publish_run(rt, "churn", run.run_id)
    assert report.loaded and report.rows == run.rows_out and report.previous_run_id is None
    table = pq.read_table(run.output_path, columns=["entity_id", "score"])
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        hits = reader.get_many("churn", table.column("entity_id").to_pylist())
    finally:
        reader.close()
    assert all(h is not None and h.run_id == run.run_id for h in hits)
    assert [h.score for h in hits] == pytest.approx(table.column("score").to_pylist(), abs=0)
    assert hits[0].as_of.date() == END
    (pub,) = rt.catalog.publications("churn")
    assert pub["action"] == "publish" and pub["run_id"] == run.run_id
    status = store_status(rt, "churn")
    assert status["current"]["run_id"] == run.run_id and status["current"]["rows"] == run.rows_out
    # the freshness contract, by the injected clock: on time until the run's as_of is 36 h old, late after
    import datetime as dt

    as_of = hits[0].as_of
    promise = 129_600
    on_time = store_status(rt, "churn", now=as_of + dt.timedelta(seconds=promise))["freshness"]
    late = store_status(rt, "churn", now=as_of + dt.timedelta(seconds=promise + 1))["freshness"]
    assert (on_time["late"], late["late"], on_time["promise_s"]) == (False, True, promise)
    assert dt.datetime.fromisoformat(late["next_run_at"]) > as_of + dt.timedelta(seconds=promise)


def test_republish_is_idempotent(rt: Runtime) -> None:
    run = score_partition(rt, "churn", END, device="cpu")
    publish_run(rt, "churn", run.run_id)
    again = publish_run(rt, "churn", run.run_id)
    assert again.already_current and not again.loaded
    assert len(rt.catalog.publications("churn")) == 1


def test_older_run_is_refused_unless_forced_and_rollback(rt: Runtime) -> None:
    """History never overwrites a newer published run; --force does; rollback returns instantly."""
    _gate_off(rt)
    new = score_partition(rt, "churn", END, device="cpu")
    old = score_partition(rt, "churn", PREV, device="cpu")
    publish_run(rt, "churn", new.run_id)
    declined = publish_run(rt, "churn", old.run_id)
    assert declined.declined and "older than the live run" in declined.declined
    assert declined.previous_run_id == new.run_id and not declined.loaded
    with ScoreStore.from_url(rt.redis_url) as store:
        assert store.get_run("churn", old.run_id) is None  # declined before anything was loaded
    publish_run(rt, "churn", old.run_id, force=True)
    assert store_status(rt, "churn")["current"]["run_id"] == old.run_id
    back = rollback_model(rt, "churn")
    assert back["run_id"] == new.run_id
    assert [p["action"] for p in rt.catalog.publications("churn")][:2] == ["rollback", "publish"]


def test_rollback_without_previous_run(rt: Runtime) -> None:
    run = score_partition(rt, "churn", END, device="cpu")
    publish_run(rt, "churn", run.run_id)
    with pytest.raises(StoreError, match="no previous"):
        rollback_model(rt, "churn")


def test_quality_gate_blocks_and_force_overrides(rt: Runtime) -> None:
    """With a tiny max_psi, a run of another day is blocked (recorded, current run kept) until forced."""
    _gate_off(rt, max_psi=1e-9)
    first = score_partition(rt, "churn", PREV, device="cpu")
    publish_run(rt, "churn", first.run_id)
    second = score_partition(rt, "churn", END, device="cpu")
    with pytest.raises(QualityGateError, match="PSI"):
        publish_run(rt, "churn", second.run_id)
    assert store_status(rt, "churn")["current"]["run_id"] == first.run_id
    assert rt.catalog.publications("churn")[0]["action"] == "blocked"
    forced = publish_run(rt, "churn", second.run_id, force=True)
    assert forced.psi is not None and forced.psi > 1e-9 and forced.forced


def test_unknown_and_failed_runs_are_refused(rt: Runtime) -> None:
    with pytest.raises(CatalogError, match="unknown run"):
        publish_run(rt, "churn", "no-such-run")
    version = rt.registry.production_version("churn", "primary")
    failed = rt.catalog.start_run(model="churn", model_version=version, partition_date=END)
    rt.catalog.finish_run(failed, status="failed", error="x")
    with pytest.raises(StoreError, match="only committed runs"):
        publish_run(rt, "churn", failed)


def test_gate_refuses_a_loaded_run_whose_scores_differ_from_parquet(rt: Runtime) -> None:
    """Redis holds the run complete (every entity, the right count) but with other scores than its Parquet: the
    sample check before the pointer moves refuses it, and nothing is published or recorded."""
    run = score_partition(rt, "churn", END, device="cpu")
    table = read_run(run.output_path, columns=["entity_id", "score"])
    wrong = pa.array(table.column("score").to_numpy() + np.float32(0.5), type=pa.float32())
    with ScoreStore.from_url(rt.redis_url) as store:
        store.create_run("churn", run.run_id, run.model_version, 1.0, run.rows_out)
        store.writer("churn", run.run_id).write_batch(table.column("entity_id"), wrong)
        store.finalize_run("churn", run.run_id)
    with pytest.raises(StoreError, match=f"run {run.run_id} failed verification"):
        publish_run(rt, "churn", run.run_id)
    with ScoreStore.from_url(rt.redis_url) as store:
        assert store.current_run("churn") is None
    assert rt.catalog.publications("churn") == []


def test_half_loaded_run_is_reloaded(rt: Runtime) -> None:
    """A crashed loader left the run half-written in Redis: publish removes it, reloads, and verifies."""
    run = score_partition(rt, "churn", END, device="cpu")
    store = ScoreStore.from_url(rt.redis_url)
    table = pq.read_table(run.output_path, columns=["entity_id", "score"]).slice(0, 100)
    store.create_run("churn", run.run_id, run.model_version, 1.0, run.rows_out)
    store.writer("churn", run.run_id).write_batch(table.column("entity_id"), table.column("score"))
    store.close()
    report = publish_run(rt, "churn", run.run_id)
    assert report.loaded and store_status(rt, "churn")["current"]["rows"] == run.rows_out


def test_retention_keeps_current_plus_k(rt: Runtime) -> None:
    """keep_runs=1: after three publishes only the current and one previous run stay in Redis."""
    _gate_off(rt)
    spec = rt.config.models["churn"].model_copy(update={"keep_runs": 1, "max_psi": 10.0})
    rt.config = rt.config.model_copy(update={"models": {"churn": spec}})
    runs = [score_partition(rt, "churn", END - dt.timedelta(days=d), device="cpu") for d in (2, 1, 0)]
    for r in runs:
        publish_run(rt, "churn", r.run_id)
    store = ScoreStore.from_url(rt.redis_url)
    store.cleanup("churn", keep_runs=1, grace_s=0)
    kept = {r.run_id for r in store.list_runs("churn")}
    store.close()
    assert kept == {runs[1].run_id, runs[2].run_id}
    client = redis.Redis.from_url(rt.redis_url)
    leftovers = [k for k in client.scan_iter(match=f"*{runs[0].run_id}*")]
    client.close()
    assert leftovers == []


@pytest.mark.parametrize("load_rows", [1_000_000, 7_000])
def test_each_loader_task_writes_whole_buckets_as_restore(rt: Runtime, load_rows: int) -> None:
    """A run of several Parquet parts, loaded by one task (inline) or by tasks that each own a range of its buckets
    (``load_rows`` smaller than the run): every bucket arrives whole, so each one is a single RESTORE and no HSET is
    sent (the few HSETs are the run's metadata record); and every entity is served with its Parquet score."""
    rt.settings = rt.settings.model_copy(update={"load_rows": load_rows})
    run = score_partition(rt, "churn", END, task_rows=5_000)  # several parts, each spread over every bucket
    client = redis.Redis.from_url(rt.redis_url)
    client.config_resetstat()
    publish_run(rt, "churn", run.run_id)
    stats = client.info("commandstats")
    with ScoreStore.from_url(rt.redis_url) as store:
        info = store.current_run("churn")
    assert info is not None and info.run_id == run.run_id
    assert stats["cmdstat_restore"]["calls"] == info.n_buckets
    assert info.n_buckets >= 200
    assert stats.get("cmdstat_hset", {"calls": 0})["calls"] < 10  # the run's metadata record, never a bucket
    table = read_run(run.output_path)  # type: ignore[arg-type]
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        served = reader.get_many("churn", table.column("entity_id").to_pylist())
    finally:
        reader.close()
    assert [s.score if s else None for s in served] == pytest.approx(table.column("score").to_pylist())
    client.close()
