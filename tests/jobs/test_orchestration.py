"""The per-task functions the DAGs call: plain values in, small JSON-able dicts out, idempotent on retry."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
from typing import Any

import pyarrow.parquet as pq
import pytest

from jobs import orchestration
from jobs.runtime import Runtime
from tests.support.clock import iso
from warehouse.catalog import COMMITTED
from warehouse.errors import PartitionNotFoundError, PrescoreError, StoreError
from warehouse.store import ScoreStore

MODEL = "churn"


@pytest.fixture
def env(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The PRESCORE_* environment a task process would have, pointing at ``rt``'s warehouse and Redis."""
    settings = rt.settings
    monkeypatch.setenv("PRESCORE_HOME", str(settings.home_dir))
    monkeypatch.setenv("PRESCORE_MODELS_FILE", str(settings.models_file))
    monkeypatch.setenv("PRESCORE_REDIS_URL", str(settings.redis_url))
    monkeypatch.setenv("PRESCORE_CATALOG_URL", "")
    monkeypatch.setenv("PRESCORE_DASK_LOCAL", "threads")
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    return rt


def small_json(value: dict[str, Any]) -> dict[str, Any]:
    """XCom carries references, not data: the value round-trips through JSON and stays small."""
    text = json.dumps(value)
    assert len(text) < 4096, text[:200]
    assert json.loads(text) == value
    return value


def test_partition_date_is_utc() -> None:
    assert orchestration.partition_date("2026-11-20") == dt.date(2026, 11, 20)
    late = dt.datetime(2026, 11, 20, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert orchestration.partition_date(late) == dt.date(2026, 11, 21)


def test_non_retryable_errors_name_prescore_errors() -> None:
    for path in orchestration.NON_RETRYABLE:
        module, name = path.rsplit(".", 1)
        assert issubclass(getattr(importlib.import_module(module), name), PrescoreError), path


def test_sensor_and_validation(env: Runtime) -> None:
    assert orchestration.feature_partition_ready(MODEL, iso(0)) is True
    assert orchestration.feature_partition_ready(MODEL, iso(5)) is False
    checked = small_json(orchestration.validate_features(MODEL, iso(0)))
    assert (checked["date"], checked["feature_set"]) == (iso(0), "customer_daily")
    assert checked["files"] >= 1
    with pytest.raises(PartitionNotFoundError):
        orchestration.validate_features(MODEL, iso(5))


def test_score_after_validate_does_not_validate_again(env: Runtime) -> None:
    """The DAG's order: validate_contract, then score with the fingerprint it returned. Score confirms the input
    is the one validated and does not check the contract again; without a fingerprint it checks it itself."""
    checked = orchestration.validate_features(MODEL, iso(0))
    scored = orchestration.score(MODEL, iso(0), validated=checked["fingerprint"])
    assert (scored["contract"], scored["reused"]) == ("confirmed", False)
    alone = orchestration.score(MODEL, iso(-1))  # `prescore score`, the backfill: no validation before it
    assert alone["contract"] == "validated"
    assert orchestration.score(MODEL, iso(0), validated=checked["fingerprint"])["contract"] == "reused"


def test_partition_rewritten_after_validation_is_validated_again(env: Runtime) -> None:
    """A partition rewritten between validate_contract and score is not the input that was validated: score checks
    the contract again, and a violation the rewrite brought in fails the run before anything is written."""
    import numpy as np
    import pyarrow as pa

    from warehouse.datasets import features as fstore
    from warehouse.errors import ContractViolationError

    day = iso(-2)
    checked = orchestration.validate_features(MODEL, day)
    [part, *_] = fstore.partition_files(env.home, "customer_daily", dt.date.fromisoformat(day))
    table = pq.read_table(part)
    broken = pa.array(np.full(table.num_rows, 5000.0, dtype=np.float32))
    pq.write_table(table.set_column(table.schema.get_field_index("f00"), "f00", broken), part)
    with pytest.raises(ContractViolationError):
        orchestration.score(MODEL, day, validated=checked["fingerprint"])
    assert env.catalog.runs(MODEL, partition_date=dt.date.fromisoformat(day), status=COMMITTED) == []


def test_task_summary_says_what_which_run_how_many_how_long_and_where() -> None:
    """The one-line summary is built from the task's result alone; parts a result lacks are left out."""
    scored = {"run_id": "R1", "model": "churn", "partition_date": "2026-11-20", "output_path": "/h/scores/run=R1",
              "rows_out": 20000, "reused": False}  # fmt: skip
    assert orchestration.task_summary("score", scored, 2.345) == (
        "summary: score churn 2026-11-20: run R1, 20,000 rows, 2.3 s, output /h/scores/run=R1"
    )
    reused = orchestration.task_summary("score", {**scored, "reused": True}, 0.1)
    assert "run R1 (reused), 20,000 rows" in reused
    declined = {"published": False, "model": "churn", "run_id": "R0", "reason": "not published: newer run is current"}
    assert orchestration.task_summary("publish", declined, 0.04) == (
        "summary: publish churn: run R0, not published: newer run is current, 0.0 s"
    )
    retention = {"removed": {"redis": 2, "scores": 1}, "bytes_freed": 4096}
    assert orchestration.task_summary("apply_retention", retention, 1.0) == (
        "summary: apply_retention: removed 3 items, 4,096 bytes, 1.0 s"
    )
    drained = {"records": 0, "files": 0, "out_dir": "/h/prediction_logs"}
    assert orchestration.task_summary("drain", drained, 0.5) == (
        "summary: drain: 0 records, 0.5 s, output /h/prediction_logs"
    )


def test_each_task_function_ends_its_log_with_the_summary(env: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    """validate, score, publish, verify and retain each log their summary as their last line; nothing of Dask's
    start-up banner (distributed INFO) reaches the log of the score call."""
    day = iso(-1)
    with caplog.at_level(logging.INFO):
        caplog.clear()
        checked = orchestration.validate_features(MODEL, day)
        assert caplog.records[-1].getMessage().startswith(f"summary: validate_contract churn {day}: ")
        assert f"output {checked['partition']}" in caplog.records[-1].getMessage()

        caplog.clear()
        scored = orchestration.score(MODEL, day)
        last = caplog.records[-1].getMessage()
        assert last.startswith(f"summary: score churn {day}: run {scored['run_id']}, {scored['rows_out']:,} rows, ")
        assert last.endswith(f" s, output {scored['output_path']}")
        assert [r.getMessage() for r in caplog.records if r.name.startswith("distributed")] == []

        for task, call in (
            ("publish", lambda: orchestration.publish(MODEL, scored["run_id"])),
            ("verify_online", lambda: orchestration.verify_online(MODEL, scored["run_id"])),
            ("retain_and_record", lambda: orchestration.retain_and_record(MODEL)),
        ):
            caplog.clear()
            call()
            assert caplog.records[-1].name == "jobs.orchestration", task
            assert caplog.records[-1].getMessage().startswith(f"summary: {task} churn"), task


def test_score_publish_verify_retain(env: Runtime) -> None:
    """The nightly chain, called as the tasks call it; every result is a small JSON-able dict."""
    scored = small_json(orchestration.score(MODEL, iso(0)))
    assert scored["partition_date"] == iso(0) and scored["rows_out"] > 0 and not scored["reused"]
    again = orchestration.score(MODEL, iso(0))  # a retried score task reuses the committed run
    assert again["reused"] and again["run_id"] == scored["run_id"]

    published = small_json(orchestration.publish(MODEL, scored["run_id"]))
    assert published["published"] and published["run_id"] == scored["run_id"]
    verified = small_json(orchestration.verify_online(MODEL, scored["run_id"]))
    assert verified["checked"] == orchestration.VERIFY_SAMPLE
    record = small_json(orchestration.retain_and_record(MODEL))
    assert record["current"]["run_id"] == scored["run_id"]
    assert [r.run_id for r in env.catalog.runs(MODEL, status=COMMITTED)] == [scored["run_id"]]


def test_publish_retried_after_a_crash_mid_load_publishes_once(env: Runtime, redis_url: str) -> None:
    scored = orchestration.score(MODEL, iso(0))
    run = env.catalog.get_run(scored["run_id"])
    part = pq.read_table(run.output_path, columns=["entity_id", "score"]).slice(0, 300)
    with ScoreStore.from_url(redis_url) as store:  # the crashed attempt left a half-loaded namespace
        store.create_run(MODEL, run.run_id, run.model_version, dt.datetime.now(dt.UTC), run.rows_out or 0)
        store.writer(MODEL, run.run_id).write_batch(part.column("entity_id"), part.column("score"))

    first = orchestration.publish(MODEL, run.run_id)
    second = orchestration.publish(MODEL, run.run_id)
    assert first["published"] and first["loaded"] and not first["already_current"]
    assert second["published"] and second["already_current"]
    assert [p["action"] for p in env.catalog.publications(MODEL)] == ["publish"]
    with ScoreStore.from_url(redis_url) as store:
        [only] = store.list_runs(MODEL)
        assert (only.run_id, only.loaded_rows) == (run.run_id, run.rows_out)
    assert orchestration.verify_online(MODEL, run.run_id)["checked"] > 0


def test_verify_online_is_the_one_check_after_the_pointer_moved(env: Runtime, redis_url: str) -> None:
    """The published run's scores in Redis are changed after the pointer moved to it. A retried publish of it
    (already current: the pointer does not move) does not sample it again; verify_online, reading through the
    reader the online service uses, finds the difference and says how to roll back."""
    import numpy as np
    import pyarrow as pa

    from warehouse.datasets.score_files import read_run

    scored = orchestration.score(MODEL, iso(0))
    assert orchestration.publish(MODEL, scored["run_id"])["published"]
    run = env.catalog.get_run(scored["run_id"])
    table = read_run(str(run.output_path), columns=["entity_id", "score"])
    wrong = pa.array(table.column("score").to_numpy() + np.float32(0.5), type=pa.float32())
    with ScoreStore.from_url(redis_url) as store:
        store.reopen_run(MODEL, run.run_id)
        store.writer(MODEL, run.run_id).write_batch(table.column("entity_id"), wrong)
        store.finalize_run(MODEL, run.run_id)

    again = orchestration.publish(MODEL, run.run_id)
    assert again["published"] and again["already_current"]
    with pytest.raises(StoreError, match=f"online check of run {run.run_id} failed: .*prescore rollback"):
        orchestration.verify_online(MODEL, run.run_id)


def test_history_run_is_declined_without_touching_redis(env: Runtime, redis_url: str) -> None:
    """A backfilled older partition is not published over the newer current run, and not loaded either."""
    newer = orchestration.score(MODEL, iso(0))
    orchestration.publish(MODEL, newer["run_id"])
    older = orchestration.score(MODEL, iso(-1))

    declined = small_json(orchestration.publish(MODEL, older["run_id"]))
    assert declined["published"] is False
    assert declined["reason"].startswith("not published: newer run is current")
    assert declined["current_run_id"] == newer["run_id"]
    with ScoreStore.from_url(redis_url) as store:
        assert store.current_run(MODEL).run_id == newer["run_id"]  # type: ignore[union-attr]
        assert store.get_run(MODEL, older["run_id"]) is None
    with pytest.raises(StoreError, match="serves run"):
        orchestration.verify_online(MODEL, older["run_id"])


def test_train_and_summary(env: Runtime) -> None:
    trained = small_json(orchestration.train(MODEL, iso(0)))
    assert trained["holdout_date"] == iso(0)
    assert {r["kind"] for r in trained["results"]} == {"primary", "fallback"}
    summary = small_json(orchestration.training_summary(trained))
    promoted = {r["kind"] for r in trained["results"] if r["promoted"]}
    assert set(summary["promoted"]) == promoted
    assert set(summary["kept_production"]) == {"primary", "fallback"} - promoted


def test_drain_predictions_returns_a_small_report(env: Runtime, redis_url: str) -> None:
    """Two entries of the online prediction log end in Parquet under $PRESCORE_HOME; a second drain finds none."""
    pytest.importorskip("jobs.prediction_drain", reason="jobs/prediction_drain.py is not there yet")
    import redis

    from warehouse.prediction_stream import STREAM_KEY, encode_entry

    now = dt.datetime.now(dt.UTC).timestamp()
    client = redis.Redis.from_url(redis_url)
    try:
        for n in range(2):
            record = (f"req-{n}", MODEL, f"e{n}", "v1", "run-1", "precomputed", 0.25, 90, now)
            client.xadd(STREAM_KEY, encode_entry([record]))  # type: ignore[arg-type]
    finally:
        client.close()
    drained = small_json(orchestration.drain_predictions())
    assert (drained["entries"], drained["records"]) == (2, 2)
    assert drained["files"] >= 1 and drained["last_file"].startswith(str(env.settings.home_dir))
    assert small_json(orchestration.drain_predictions())["entries"] == 0
