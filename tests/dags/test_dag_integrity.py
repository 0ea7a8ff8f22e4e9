"""DAG files import cleanly, parse without I/O, follow the DAG policies, and have the intended task graphs."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dags.conftest import AIRFLOW_OWN_WARNING, DAGS_DIR, REPO
from warehouse.settings import DEFAULT_MODELS_FILE

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DASK_TASKS = {"score", "publish", "shadow", "score_delta"}
EXPECTED = {
    "prescore_score__churn",
    "prescore_train__churn",
    "prescore_rescore",
    "prescore_drain_predictions",
    "prescore_retention",
    "prescore_reconcile",
    "prescore_promote",
    "prescore_delta",
}
HEAVY = ("dask", "distributed", "xgboost", "sklearn", "pyarrow", "redis", "jobs.runtime", "jobs.score",
         "jobs.publish", "warehouse.catalog", "warehouse.store.score_store", "warehouse.registry")  # fmt: skip

NO_IO_PARSE = textwrap.dedent(
    """
    import json, socket, sqlite3, sys, time, warnings
    from airflow.dag_processing.dagbag import DagBag

    def refuse(*args, **kwargs):
        raise AssertionError(f"I/O at parse time: {args[1:] or kwargs}")

    socket.socket.connect = socket.socket.connect_ex = refuse
    socket.create_connection = sqlite3.connect = refuse
    warnings.filterwarnings("ignore", message=sys.argv[2])
    before = set(sys.modules)
    start = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    seconds = time.perf_counter() - start
    print(json.dumps({"errors": bag.import_errors, "dags": sorted(bag.dags), "seconds": seconds,
                      "new_modules": sorted(set(sys.modules) - before)}))
    """
)


def parse_in_a_fresh_interpreter(env: dict[str, str]) -> dict[str, Any]:
    """``NO_IO_PARSE`` in a child interpreter with ``env``: its report, once it parsed without import errors."""
    proc = subprocess.run(
        [sys.executable, "-c", NO_IO_PARSE, str(DAGS_DIR), AIRFLOW_OWN_WARNING],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    return result


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    import warnings

    from airflow.dag_processing.dagbag import DagBag

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=AIRFLOW_OWN_WARNING)
        bag = DagBag(dag_folder=str(DAGS_DIR))
    assert bag.import_errors == {}, bag.import_errors
    return dict(bag.dags)


def edges(dag: Any) -> set[tuple[str, str]]:
    return {(up, task.task_id) for task in dag.tasks for up in task.upstream_task_ids}


def test_every_dag_file_imports_without_errors(dags: dict[str, Any]) -> None:
    assert set(dags) == EXPECTED
    assert sorted(p.name for p in DAGS_DIR.glob("*.py")) == ["prescore_dags.py"]


def test_parsing_does_no_db_or_network_io_and_no_heavy_imports(tmp_path: Path) -> None:
    """A fresh interpreter parses dags/ with Redis, the catalog and Dask pointing at closed ports and every
    socket connect / sqlite open refused: it parses cleanly, fast, and imports no Dask, XGBoost, pyarrow or
    Redis client (those load inside the tasks)."""
    port = closed_port()
    env = {
        **os.environ,
        "PRESCORE_HOME": str(tmp_path / "nowhere"),
        "PRESCORE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "PRESCORE_CATALOG_URL": f"postgresql+psycopg://prescore@127.0.0.1:{port}/prescore",
        "PRESCORE_DASK_ADDRESS": f"tcp://127.0.0.1:{port}",
        "PRESCORE_MODELS_FILE": str(DEFAULT_MODELS_FILE),
    }
    result = parse_in_a_fresh_interpreter(env)
    assert set(result["dags"]) == EXPECTED
    assert result["seconds"] < 5.0  # measured ~0.5 s on 2 shared cores
    heavy = [m for m in result["new_modules"] if m.split(".")[0] in HEAVY or m in HEAVY]
    assert heavy == []
    assert not (tmp_path / "nowhere").exists()  # PRESCORE_HOME was not even created


def test_a_model_with_external_training_gets_no_training_dag(tmp_path: Path) -> None:
    """``training: external`` in the models file: the nightly DAG stays, the weekly training DAG is not generated."""
    import yaml

    raw = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
    raw["models"]["churn"]["training"] = "external"
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PRESCORE_HOME": str(tmp_path / "home"), "PRESCORE_MODELS_FILE": str(models_file)}
    assert set(parse_in_a_fresh_interpreter(env)["dags"]) == EXPECTED - {"prescore_train__churn"}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_policies(dags: dict[str, Any], dag_id: str) -> None:
    """Static start date, no catchup, tags, owner, docs; every task retries with exponential backoff, has a
    retry policy (fail fast on non-retryable errors) and an execution timeout; Dask work runs in the pool."""
    dag = dags[dag_id]
    assert dag.start_date == START
    assert dag.catchup is False
    assert "prescore" in dag.tags and len(dag.tags) >= 2
    assert dag.doc_md and len(dag.doc_md) > 100
    if dag.timetable.can_be_scheduled:
        assert dag.max_active_runs == 1
    for task in dag.tasks:
        where = f"{dag_id}.{task.task_id}"
        assert task.owner == "prescore", where
        assert task.retries >= 1, where
        assert task.retry_exponential_backoff > 0, where
        assert task.retry_policy is not None, where
        assert task.execution_timeout is not None and task.execution_timeout <= dt.timedelta(hours=3), where
        assert (task.pool == "prescore_dask") == (task.task_id in DASK_TASKS), where
        assert getattr(task, "multiple_outputs", False) is False, where  # one small dict per XCom


def test_every_dag_serializes(dags: dict[str, Any]) -> None:
    """What the dag-processor stores and the scheduler reads back (params, retry policy, assets, timetables)."""
    from airflow.serialization.serialized_objects import DagSerialization

    for dag in dags.values():
        restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
        assert set(restored.task_dict) == set(dag.task_dict)
        assert type(restored.timetable).__name__ == type(dag.timetable).__name__


def test_promote_dag_checks_the_gate_then_promotes(dags: dict[str, Any]) -> None:
    """Manual only; the gate's checks are logged by their own task before ``promote`` runs the same gate; a refusal
    is not retried."""
    dag = dags["prescore_promote"]
    assert dag.timetable.can_be_scheduled is False and dag.max_active_runs == 1
    assert edges(dag) == {("check_gate", "promote")}
    assert {"model", "version", "force"} <= set(dag.params.keys())
    from jobs.orchestration import NON_RETRYABLE

    assert "warehouse.errors.PromotionRefusedError" in NON_RETRYABLE


def test_nightly_task_graph(dags: dict[str, Any]) -> None:
    dag = dags["prescore_score__churn"]
    assert edges(dag) == {
        ("wait_for_features", "validate_contract"),
        ("validate_contract", "score"),
        ("score", "publish"),
        ("publish", "verify_online"),
        ("verify_online", "retain_and_record"),
        ("validate_contract", "shadow"),
        ("score", "shadow"),  # challengers after the champion's score, beside its publish: never in its way
        ("shadow", "compare"),  # each challenger's run against the champion's, stored for the promotion gate
        ("compare", "monitor"),  # drift, quality and serving of the date, after everything else of the night
        ("verify_online", "monitor"),
    }
    assert dag.task_dict["retain_and_record"].trigger_rule == "none_failed"  # runs after a skipped publish
    assert dag.task_dict["monitor"].trigger_rule == "all_done"  # also after a blocked publish
    sensor = dag.task_dict["wait_for_features"]
    assert sensor.mode == "reschedule"
    assert (sensor.poke_interval, sensor.timeout) == (1, 4)  # AIRFLOW__PRESCORE__* set by tests/dags/conftest
    [asset] = dag.task_dict["score"].outlets
    assert asset.uri == "prescore://scores/churn"


def test_nightly_schedule_comes_from_the_models_file_and_maps_intervals_to_partitions(dags: dict[str, Any]) -> None:
    """Scheduled and backfill runs over logical dates 2026-11-18..20 score exactly those partitions: the data
    interval starts on the partition date, at the model's cron time, and the run starts when it closes."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dags["prescore_score__churn"]
    assert (type(dag.timetable).__name__, dag.timetable.expression) == ("CronDataIntervalTimetable", "0 2 * * *")
    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    infos = list(
        serialized.iter_dagrun_infos_between(
            dt.datetime(2026, 11, 18, tzinfo=dt.UTC), dt.datetime(2026, 11, 20, 23, 59, 59, tzinfo=dt.UTC)
        )
    )
    intervals = [i.data_interval for i in infos if i.data_interval is not None]
    assert [i.start.date().isoformat() for i in intervals] == ["2026-11-18", "2026-11-19", "2026-11-20"]
    assert [i.logical_date for i in infos] == [i.start for i in intervals]
    assert all(i.end - i.start == dt.timedelta(days=1) for i in intervals)

    # the partition as the task's template renders it: the interval's start; without an interval (a manual run
    # with no logical date) the last interval closed by run_after; the training end likewise
    import types

    import pendulum
    from airflow.sdk.execution_time import macros

    def render(task: Any, **context: Any) -> str:
        env = task.dag.get_template_env()
        return str(env.from_string(task.op_args[1]).render(macros=macros, **context))

    score, train = dag.task_dict["score"], dags["prescore_train__churn"].task_dict["train"]
    at = pendulum.datetime(2026, 11, 21, 1, 30, tz="UTC")  # before the 02:00 firing: the 19th's interval is the last
    run = types.SimpleNamespace(run_after=at)
    assert render(score, data_interval_start=pendulum.datetime(2026, 11, 18, 2, tz="UTC"), dag_run=run) == "2026-11-18"
    assert render(score, dag_run=run) == "2026-11-19"
    assert render(score, dag_run=types.SimpleNamespace(run_after=at.add(hours=1))) == "2026-11-20"
    assert render(train, ds="2026-11-22", dag_run=run) == "2026-11-21"
    assert render(train, dag_run=run) == "2026-11-20"


def test_rescore_graph_and_params(dags: dict[str, Any]) -> None:
    dag = dags["prescore_rescore"]
    assert dag.timetable.can_be_scheduled is False
    assert edges(dag) == {
        ("validate_contract", "score"),
        ("score", "publish"),
        ("publish", "verify_online"),
        ("verify_online", "retain_and_record"),
    }
    schema = {name: dag.params.get_param(name).schema for name in dag.params}
    assert schema["model"]["enum"] == ["churn"]
    assert (schema["date"]["type"], schema["date"]["format"]) == ("string", "date")
    assert schema["publish"]["type"] == "boolean" and schema["force"]["type"] == "boolean"
    assert schema["device"]["enum"] == ["auto", "cpu", "cuda"]
    assert all(dag.params.get_param(name).description for name in dag.params)


def test_rescore_form_explains_what_each_choice_does(dags: dict[str, Any]) -> None:
    """The trigger form's descriptions say what force and publish do and what device auto picks; the DAG doc says
    the partition is the date Param, not the Logical Date shown above the Params; a missing partition fails fast."""
    dag = dags["prescore_rescore"]
    described = {name: dag.params.get_param(name).description for name in dag.params}
    assert "reused" in described["force"] and "does not force publication" in described["force"]
    assert "Redis" in described["publish"] and "quality gate" in described["publish"]
    assert "Parquet" in described["publish"]  # what happens when it is off
    assert "auto: the CUDA GPU" in described["device"] and "else the CPU" in described["device"]
    assert "not the Logical Date" in described["date"]
    assert "**`date` Param**, not the *Logical Date*" in dag.doc_md
    assert "fails `validate_contract` at once, without retries" in dag.doc_md


@pytest.mark.parametrize("dag_id", ["prescore_rescore", "prescore_score__churn"])
def test_missing_or_unreadable_data_fails_at_once_and_outages_are_retried(dags: dict[str, Any], dag_id: str) -> None:
    """The retry policy a scheduler applies after a failed try (dag.test() never retries): a missing, incomplete or
    unreadable partition fails the task at once, like a contract violation; a Redis outage is retried."""
    from airflow.sdk import RetryAction

    from warehouse import errors

    policy = dags[dag_id].task_dict["validate_contract"].retry_policy
    for exc in (
        errors.PartitionNotFoundError("feature partition dt=2026-11-20 does not exist"),
        errors.PartitionUnreadableError("feature file part-00000.parquet is not readable Parquet"),
        errors.ContractViolationError("breaks its contract", []),
    ):
        decision = policy.evaluate(exception=exc, try_number=1, max_tries=2, context=None)
        assert decision.action == RetryAction.FAIL, type(exc).__name__
    outage = policy.evaluate(exception=errors.StoreUnavailableError("Redis timed out"), try_number=1, max_tries=2,
                             context=None)  # fmt: skip
    assert outage.action != RetryAction.FAIL


def test_training_and_drain_graphs(dags: dict[str, Any]) -> None:
    assert edges(dags["prescore_train__churn"]) == {("train", "report")}
    assert dags["prescore_train__churn"].timetable.expression == "0 4 * * 0"
    drain = dags["prescore_drain_predictions"]
    assert set(drain.task_dict) == {"drain"}
    assert drain.task_dict["drain"].retries >= 1


def test_retention_graph(dags: dict[str, Any]) -> None:
    """One daily task after the nightly publishes, one call into jobs (the same function as `prescore retention`)."""
    retention = dags["prescore_retention"]
    assert set(retention.task_dict) == {"apply_retention"}
    assert retention.timetable.expression == "30 5 * * *"
    assert retention.task_dict["apply_retention"].retries >= 1


def test_reconcile_graph(dags: dict[str, Any]) -> None:
    """Every 5 minutes, one run at a time, no catchup; one task calling jobs, outside the Dask pool (a restore must
    not queue behind a nightly scoring job), failing fast when the Parquet is gone."""
    reconcile = dags["prescore_reconcile"]
    assert set(reconcile.task_dict) == {"restore_lost_runs"}
    assert reconcile.timetable.expression == "*/5 * * * *"
    assert reconcile.max_active_runs == 1 and reconcile.catchup is False
    task = reconcile.task_dict["restore_lost_runs"]
    assert task.pool != "prescore_dask" and task.retries >= 1
    assert task.python_callable.__code__.co_names == ("orchestration", "reconcile_store")
    assert "warehouse.errors.RestoreRefusedError" in task.retry_policy.rules[0].exception


def parse_with_models(raw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Parse dags/ against a models file holding ``raw``; the DagBag (import errors kept, not raised)."""
    import warnings

    from airflow.dag_processing.dagbag import DagBag

    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("PRESCORE_MODELS_FILE", str(models_file))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=AIRFLOW_OWN_WARNING)
        return DagBag(dag_folder=str(DAGS_DIR))


def test_one_nightly_and_one_training_dag_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second model in the models file gets its own DAGs on its own cron, and joins the rescore enum."""
    raw = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
    raw["models"]["fraud"] = {**raw["models"]["churn"], "schedule": "30 3 * * *"}
    bag = parse_with_models(raw, tmp_path, monkeypatch)
    assert bag.import_errors == {}
    assert set(bag.dags) == EXPECTED | {"prescore_score__fraud", "prescore_train__fraud"}
    assert getattr(bag.dags["prescore_score__fraud"].timetable, "expression", None) == "30 3 * * *"
    assert bag.dags["prescore_rescore"].params.get_param("model").schema["enum"] == ["churn", "fraud"]


def test_an_invalid_models_file_is_an_import_error_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
    del raw["models"]["churn"]["staleness"]
    bag = parse_with_models(raw, tmp_path, monkeypatch)
    [error] = bag.import_errors.values()
    assert "models.churn.staleness" in error
