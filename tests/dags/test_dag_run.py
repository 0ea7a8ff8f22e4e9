"""``dag.test()`` runs of the scoring DAGs against the real Redis fixture and a fresh SQLite metadata DB per test.

The logic itself is tested in ``tests/jobs/test_orchestration.py``; here each test asserts what a DAG run ends
as (run and task states) and what it left behind (catalog, Parquet, the online store).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jobs import orchestration
from jobs.airflow_api import AirflowAPI
from jobs.runtime import Runtime
from tests.support.clock import END
from warehouse.catalog import COMMITTED
from warehouse.store import ScoreReader, ScoreStore

pytestmark = [
    # dag.test() runs tasks through Airflow's in-process execution API, whose test client imports
    # starlette.testclient: starlette deprecates using it with httpx. Airflow's choice, not ours.
    pytest.mark.filterwarnings("ignore::starlette.exceptions.StarletteDeprecationWarning"),
]

MODEL = "churn"
NIGHTLY = f"prescore_score__{MODEL}"
DAY = END  # the newest fixture partition: yesterday by the test clock
# The nightly run whose data interval is [DAY 02:00, DAY+1 02:00) scores partition DAY;
# dag.test() takes the interval that closed last before the logical date it is given.
LOGICAL = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(2, 0), tzinfo=dt.UTC)


def task_states(dr: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def tries(dr: Any, task_id: str) -> int:
    return next(int(ti.try_number) for ti in dr.get_task_instances() if ti.task_id == task_id)


@pytest.fixture
def rt(prescore_env: dict[str, Any]) -> Iterator[Runtime]:
    """A Runtime on the same PRESCORE_* environment the task processes use (to inspect what they did)."""
    runtime = Runtime.from_settings()
    yield runtime
    runtime.close()


def task_result(dr: Any, task_id: str) -> Any:
    """What ``task_id`` returned in run ``dr`` (its XCom, from the metadata DB)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    query = XComModel.get_many(run_id=dr.run_id, dag_ids=dr.dag_id, task_ids=task_id, key="return_value")
    with create_session() as session:
        return XComModel.deserialize_value(session.scalars(query).one())


def committed(rt: Runtime, day: dt.date) -> list[Any]:
    return rt.catalog.runs(MODEL, partition_date=day, status=COMMITTED)


def current_run_id(redis_url: str) -> str | None:
    reader = ScoreReader.from_url(redis_url)
    try:
        current = reader.current_run(MODEL)
    finally:
        reader.close()
    return current.run_id if current else None


def feature_dir(home: Path, day: dt.date) -> Path:
    return home / "features" / "customer_daily" / f"dt={day:%Y-%m-%d}"


def test_a_manual_run_without_a_logical_date_scores_the_last_closed_interval(
    airflow_db: Path, prescore_env: dict[str, Any], load_dags: Any, rt: Runtime
) -> None:
    """``airflow dags trigger`` and the REST API create a manual run with no logical date, hence no data interval
    (Airflow 3): the nightly DAG still scores the partition of the last interval closed by the run's run_after."""
    dr = load_dags().dags[NIGHTLY].test(logical_date=None, run_after=LOGICAL + dt.timedelta(hours=1))
    assert dr.state == "success", task_states(dr)
    assert dr.logical_date is None and dr.data_interval_start is None
    assert task_result(dr, "validate_contract")["date"] == DAY.isoformat()
    assert [run.run_id for run in committed(rt, DAY)] == [task_result(dr, "score")["run_id"]]


def test_nightly_run_scores_publishes_and_serves_then_a_history_run_skips_publish(
    airflow_db: Path, prescore_env: dict[str, Any], load_dags: Any, rt: Runtime
) -> None:
    """The nightly run for DAY succeeds and the online reader serves exactly the committed Parquet. A
    backfill run of the day before then scores its partition, but publish ends skipped (a newer run is current)
    and the DAG run still succeeds."""
    dag = load_dags().dags[NIGHTLY]
    dr = dag.test(logical_date=LOGICAL)
    states = task_states(dr)
    assert dr.state == "success", states
    assert set(states.values()) == {"success"}, states
    # one contract validation per run: validate_contract's; score confirmed it scored that input (its fingerprint)
    checked, scored = task_result(dr, "validate_contract"), task_result(dr, "score")
    assert (checked["date"], len(checked["fingerprint"])) == (DAY.isoformat(), 64)
    assert (scored["contract"], scored["reused"]) == ("confirmed", False)
    monitored = task_result(dr, "monitor")  # last of the night: drift against the trained version's baseline
    assert (monitored["monitored"], monitored["run_id"], monitored["drifted"]) == (True, scored["run_id"], [])
    assert monitored["reports"][0]["drift_status"] == "measured"

    [run] = committed(rt, DAY)
    assert run.report["cluster"] == "local-threads"  # inside an Airflow task the local cluster uses threads
    assert current_run_id(prescore_env["redis_url"]) == run.run_id
    table = pq.read_table(run.output_path, columns=["entity_id", "score"])
    reader = ScoreReader.from_url(prescore_env["redis_url"])
    try:
        served = reader.get_many(MODEL, table.column("entity_id").to_pylist())
    finally:
        reader.close()
    assert all(hit is not None and hit.run_id == run.run_id for hit in served)
    np.testing.assert_array_equal(
        np.array([hit.score for hit in served if hit], dtype=np.float32), table.column("score").to_numpy()
    )

    history = dag.test(logical_date=LOGICAL - dt.timedelta(days=1))
    states = task_states(history)
    assert history.state == "success", states
    assert states["score"] == "success"
    assert (states["publish"], states["verify_online"]) == ("skipped", "skipped")
    assert (states["retain_and_record"], states["monitor"]) == ("success", "success")
    [older] = committed(rt, DAY - dt.timedelta(days=1))
    assert current_run_id(prescore_env["redis_url"]) == run.run_id
    with ScoreStore.from_url(prescore_env["redis_url"]) as store:
        assert store.get_run(MODEL, older.run_id) is None  # history was not even loaded into Redis


def test_feature_partition_never_arrives(airflow_db: Path, prescore_env: dict[str, Any], load_dags: Any) -> None:
    """The partition's writer never finishes (no _SUCCESS): the sensor times out (4 s in these tests, set by
    AIRFLOW__PRESCORE__FEATURE_WAIT_TIMEOUT_S), the run fails, nothing is scored or published."""
    (feature_dir(prescore_env["home"], DAY) / "_SUCCESS").unlink()
    dr = load_dags().dags[NIGHTLY].test(logical_date=LOGICAL)
    states = task_states(dr)
    assert dr.state == "failed", states
    assert states["wait_for_features"] == "failed"
    assert tries(dr, "wait_for_features") == 1  # a sensor timeout is final: no retries
    assert {states[t] for t in ("validate_contract", "score", "publish")} == {"upstream_failed"}
    assert states["monitor"] == "skipped"  # nothing scored: nothing to monitor (all_done: it ran and skipped)
    assert not (prescore_env["home"] / "scores").exists()
    assert current_run_id(prescore_env["redis_url"]) is None


def test_contract_violation_fails_at_validate(airflow_db: Path, prescore_env: dict[str, Any], load_dags: Any) -> None:
    """A feature out of its contract's range fails validate_contract at once (not retryable); nothing is written
    under scores/ and nothing is published."""
    part = sorted(feature_dir(prescore_env["home"], DAY).glob("*.parquet"))[0]
    table = pq.read_table(part)
    broken = pa.array(np.full(table.num_rows, 5000.0, dtype=np.float32))
    pq.write_table(table.set_column(table.schema.get_field_index("f00"), "f00", broken), part)

    dr = load_dags().dags[NIGHTLY].test(logical_date=LOGICAL)
    states = task_states(dr)
    assert dr.state == "failed", states
    assert states["wait_for_features"] == "success"
    assert states["validate_contract"] == "failed"
    assert tries(dr, "validate_contract") == 1  # the retry policy fails ContractViolationError without retrying
    assert states["score"] == "upstream_failed"
    assert not (prescore_env["home"] / "scores").exists()
    assert current_run_id(prescore_env["redis_url"]) is None


def test_quality_gate_blocks_and_the_current_run_stays_served(
    airflow_db: Path,
    prescore_env: dict[str, Any],
    load_dags: Any,
    rt: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """With a tiny max_psi and the day before DAY already published, the nightly run for DAY fails in publish
    (gate blocked, recorded, not retried, the reason in the publish task's log); the earlier run is still the
    one served."""
    models_file = prescore_env["models_file"]
    raw = yaml.safe_load(models_file.read_text())
    raw["models"][MODEL]["max_psi"] = 1e-9
    models_file.write_text(yaml.safe_dump(raw))
    with monkeypatch.context() as mp:  # outside Airflow: a threads cluster, like the tests in tests/jobs
        mp.setenv("PRESCORE_DASK_LOCAL", "threads")
        earlier = orchestration.score(MODEL, (DAY - dt.timedelta(days=1)).isoformat())
        assert orchestration.publish(MODEL, earlier["run_id"])["published"]

    dr = load_dags().dags[NIGHTLY].test(logical_date=LOGICAL)
    states = task_states(dr)
    assert dr.state == "failed", states
    assert states["score"] == "success"
    assert states["publish"] == "failed"
    assert tries(dr, "publish") == 1  # QualityGateError is not retried
    assert {states["verify_online"], states["retain_and_record"]} == {"upstream_failed"}
    assert states["monitor"] == "success"  # a blocked publish is monitored: the run's drift is what to look at
    assert current_run_id(prescore_env["redis_url"]) == earlier["run_id"]
    blocked = rt.catalog.publications(MODEL)[0]
    assert blocked["action"] == "blocked" and blocked["detail"]["psi"] > 1e-9
    out, err = capfd.readouterr()  # dag.test() writes the task logs to the console
    [blocked_run] = committed(rt, DAY)
    assert f"quality gate blocked run {blocked_run.run_id}" in out + err


def test_publish_task_retried_after_a_crash_mid_load_is_idempotent(
    prescore_env: dict[str, Any], load_dags: Any, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish attempt crashed after loading part of the run into Redis; the retried task (its function,
    called twice) reloads it and publishes once; the second call is a no-op. One run, one publication."""
    monkeypatch.setenv("PRESCORE_DASK_LOCAL", "threads")
    scored = orchestration.score(MODEL, DAY.isoformat())
    run = rt.catalog.get_run(scored["run_id"])
    table = pq.read_table(run.output_path, columns=["entity_id", "score"]).slice(0, 500)
    with ScoreStore.from_url(prescore_env["redis_url"]) as store:  # the crashed attempt: half a load
        store.create_run(MODEL, run.run_id, run.model_version, dt.datetime.now(dt.UTC), run.rows_out or 0)
        store.writer(MODEL, run.run_id).write_batch(table.column("entity_id"), table.column("score"))

    publish = load_dags().dags[NIGHTLY].task_dict["publish"].python_callable
    first = publish(MODEL, scored)
    again = publish(MODEL, scored)
    assert first["published"] and first["loaded"] and not first["already_current"]
    assert again["published"] and again["already_current"]
    assert [p["action"] for p in rt.catalog.publications(MODEL)] == ["publish"]
    assert [r.run_id for r in committed(rt, DAY)] == [run.run_id]
    with ScoreStore.from_url(prescore_env["redis_url"]) as store:
        assert [r.run_id for r in store.list_runs(MODEL)] == [run.run_id]
        assert store.current_run(MODEL).loaded_rows == run.rows_out  # type: ignore[union-attr]


def task_log(out: str, dr: Any, task_id: str) -> list[str]:
    """What dag.test() printed while ``task_id`` of run ``dr`` ran (its task log): from Airflow's "Task started"
    line to its last state update, both naming the task instance's id."""
    ti_id = next(str(ti.id) for ti in dr.get_task_instances() if ti.task_id == task_id)
    lines = out.splitlines()
    marked = [i for i, line in enumerate(lines) if f"ti_id={ti_id}" in line]
    assert marked, f"no log line names task instance {ti_id} ({task_id})"
    return lines[marked[0] : marked[-1] + 1]


def test_rescore_from_params_without_publishing(
    airflow_db: Path, prescore_env: dict[str, Any], load_dags: Any, rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """prescore_rescore with publish=false scores the requested (model, date) on the requested device and
    skips publish; nothing is served. The tasks log none of Dask's start-up banner, and what the score task logs
    ends with its one-line summary (run id, rows, duration, output path), right before the next task's."""
    day = (DAY - dt.timedelta(days=2)).isoformat()
    conf = {"model": MODEL, "date": day, "publish": False, "device": "cpu"}
    with caplog.at_level(logging.INFO):
        dr = load_dags().dags["prescore_rescore"].test(run_conf=conf)
    states = task_states(dr)
    assert dr.state == "success", states
    assert (states["score"], states["publish"], states["retain_and_record"]) == ("success", "skipped", "success")
    [run] = committed(rt, DAY - dt.timedelta(days=2))
    assert run.device == "cpu"
    assert task_result(dr, "score")["contract"] == "confirmed"  # validated once, by validate_contract
    assert current_run_id(prescore_env["redis_url"]) is None

    chatter = [
        r.getMessage() for r in caplog.records if r.name.startswith("distributed") and r.levelno < logging.WARNING
    ]
    assert chatter == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("jobs.", "warehouse."))]
    at = next(i for i, line in enumerate(ours) if line.startswith("summary: score "))
    assert ours[at].startswith(f"summary: score {MODEL} {day}: run {run.run_id}, {run.rows_out:,} rows, ")
    assert ours[at].endswith(f" s, output {run.output_path}")
    assert ours[at - 1].startswith("Dask: local-threads cluster")  # what the score task logged before it
    assert ours[at + 1].startswith(f"summary: retain_and_record {MODEL}: ")  # publish and verify_online skipped
    assert ours[0].startswith(f"summary: validate_contract {MODEL} {day}: ")


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("missing", "does not exist; create it with `prescore synth`"),
        ("incomplete", "is incomplete (no _SUCCESS marker)"),
        ("unreadable", "is not readable Parquet"),
    ],
)
def test_rescore_of_a_missing_or_broken_partition_fails_at_once(
    airflow_db: Path,
    prescore_env: dict[str, Any],
    load_dags: Any,
    capfd: pytest.CaptureFixture[str],
    fault: str,
    message: str,
) -> None:
    """A manual rescore of a partition that does not exist, whose writer never finished, or one of whose files is
    not Parquet fails validate_contract on its first try (not retryable: retrying cannot create the data), the
    run fails, nothing is scored, and the task log says what is wrong, where, and what to do."""
    day = DAY - dt.timedelta(days=1)
    directory = feature_dir(prescore_env["home"], day)
    if fault == "missing":
        day = DAY + dt.timedelta(days=3)
        directory = feature_dir(prescore_env["home"], day)
    elif fault == "incomplete":
        (directory / "_SUCCESS").unlink()
    else:
        sorted(directory.glob("*.parquet"))[0].write_bytes(b"not parquet")
    conf = {"model": MODEL, "date": day.isoformat(), "publish": True, "device": "cpu"}
    dr = load_dags().dags["prescore_rescore"].test(run_conf=conf)
    states = task_states(dr)
    assert dr.state == "failed", states
    assert states["validate_contract"] == "failed"
    assert tries(dr, "validate_contract") == 1
    assert states["score"] == "upstream_failed"
    assert not (prescore_env["home"] / "scores").exists()
    out, err = capfd.readouterr()
    log = "\n".join(task_log(out + err, dr, "validate_contract"))
    assert message in log
    assert str(directory) in log
    # the retry policy, not the retry count, ended it (dag.test() itself never retries: this is what a scheduler obeys)
    [decision] = [line for line in log.splitlines() if "Retry policy decision" in line]
    assert "action=fail" in decision and "not retryable" in decision


def test_training_and_drain_dags_run(airflow_db: Path, prescore_env: dict[str, Any], load_dags: Any) -> None:
    """The weekly training run two days after DAY trains on the days up to the day before it (here: up to DAY,
    the newest partition) and reports; the hourly drain succeeds on an empty prediction log."""
    bag = load_dags()
    later = DAY + dt.timedelta(days=2)
    weekly = dt.datetime.combine(later, dt.time(4), tzinfo=dt.UTC)
    trained = bag.dags[f"prescore_train__{MODEL}"].test(logical_date=weekly)
    assert trained.state == "success", task_states(trained)
    at = dt.datetime.combine(later, dt.time(5, 7), tzinfo=dt.UTC)
    drained = bag.dags["prescore_drain_predictions"].test(logical_date=at)
    assert drained.state == "success", task_states(drained)


def resolve(dag: Any, conf: dict[str, Any]) -> dict[str, Any]:
    """What a trigger with ``conf`` resolves to (the UI and the REST API validate the same way)."""
    params = copy.deepcopy(dag.params)
    params.update(conf)
    return dict(params.validate())


@pytest.mark.parametrize(
    "conf",
    [
        {},  # date is required
        {"date": "2026-13-45"},  # not a date
        {"date": "20261120"},
        {"date": "2026-11-20", "model": "unknown"},  # not in the models file
        {"date": "2026-11-20", "device": "tpu"},
        {"date": "2026-11-20", "publish": "yes"},
        {"date": "2026-11-20", "force": 1},
    ],
)
def test_invalid_rescore_params_are_refused(airflow_db: Path, load_dags: Any, conf: dict[str, Any]) -> None:
    """A trigger with invalid Params is refused before any DAG run or task exists."""
    from airflow.sdk.exceptions import ParamValidationError

    dag = load_dags().dags["prescore_rescore"]
    with pytest.raises(ParamValidationError):
        resolve(dag, conf)
    with pytest.raises(ParamValidationError):
        dag.test(run_conf=conf)


def test_valid_rescore_params_resolve_with_defaults(load_dags: Any) -> None:
    dag = load_dags().dags["prescore_rescore"]
    resolved = resolve(dag, {"date": "2026-11-20"})
    assert resolved == {"model": MODEL, "date": "2026-11-20", "publish": True, "device": "auto", "force": False}


# ---- optional: the real thing ------------------------------------------------------------------------------
LIVE = os.environ.get("PRESCORE_TEST_AIRFLOW_LIVE") == "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_for(what: str, probe: Any, timeout_s: float, logs: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = probe()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(1)
    tails = {p.name: p.read_text()[-2000:] for p in logs.glob("*.log")}
    raise AssertionError(f"timed out waiting for {what}; logs: {json.dumps(tails, indent=1)}")


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.skipif(not LIVE, reason="set PRESCORE_TEST_AIRFLOW_LIVE=1 (starts api-server, scheduler, dag-processor)")
def test_live_airflow_runs_a_rescore_triggered_over_rest(
    prescore_env: dict[str, Any], airflow_db_template: Path, tmp_path: Path, rt: Runtime
) -> None:
    """api-server, scheduler (LocalExecutor) and dag-processor on 127.0.0.1 with their own AIRFLOW_HOME and
    SQLite DB: a token from /auth/token, the prescore_dask pool created over REST, invalid conf refused (400),
    then prescore_rescore triggered with conf runs to success in real task processes and its run is served."""
    home = tmp_path / "airflow"
    home.mkdir()
    shutil.copyfile(airflow_db_template, home / "airflow.db")
    (home / "passwords.json").write_text(json.dumps({"admin": "prescore-test"}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": "prescore-live-test-secret",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }
    env.pop("AIRFLOW_CTX_DAG_ID", None)
    airflow = str(Path(sys.executable).with_name("airflow"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for component in ("api-server", "scheduler", "dag-processor"):
            log_file = (home / f"{component}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [airflow, component], env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        wait_for("the api-server", lambda: http("GET", f"{base}/api/v2/monitor/health")[0] == 200, 120, home)
        status, body = http("POST", f"{base}/auth/token", {"username": "admin", "password": "prescore-test"})
        assert status == 201, body
        token = body["access_token"]
        status, body = http("POST", f"{base}/api/v2/pools", {"name": "prescore_dask", "slots": 1}, token)
        assert status == 201, body
        dag_url = f"{base}/api/v2/dags/prescore_rescore"
        wait_for("the parsed DAG", lambda: http("GET", dag_url, token=token)[0] == 200, 120, home)
        assert http("PATCH", dag_url, {"is_paused": False}, token)[0] == 200

        status, body = http("POST", f"{dag_url}/dagRuns", {"logical_date": None, "conf": {"date": "2026-13-01"}}, token)
        assert status == 400, body

        conf = {"model": MODEL, "date": DAY.isoformat(), "publish": True, "device": "cpu"}
        status, body = http("POST", f"{dag_url}/dagRuns", {"logical_date": None, "conf": conf}, token)
        assert status == 200, body
        run_url = f"{dag_url}/dagRuns/{urllib.parse.quote(body['dag_run_id'])}"

        def finished() -> str | None:
            state = http("GET", run_url, token=token)[1]["state"]
            return state if state in ("success", "failed") else None

        assert wait_for("the DAG run", finished, 300, home) == "success"
        [run] = committed(rt, DAY)
        assert run.report["cluster"] == "local-threads"
        assert current_run_id(prescore_env["redis_url"]) == run.run_id

        # Airflow's native backfill of the nightly DAG over logical dates DAY-1..DAY (whole days, UTC):
        # DAY-1 is scored and its publish skipped (history); DAY reuses the committed run, already current.
        nightly_url = f"{base}/api/v2/dags/{NIGHTLY}"
        assert http("PATCH", nightly_url, {"is_paused": False}, token)[0] == 200
        # through `prescore backfill --via-airflow` (AirflowAPI), as an operator would
        api = AirflowAPI(base, "admin", "prescore-test")
        created = api.create_backfill(NIGHTLY, DAY - dt.timedelta(days=1), DAY)
        final = api.follow_backfill(int(created["id"]), poll_s=1.0, timeout_s=300)
        assert final["completed_at"]
        # Unpausing lets the scheduler create its own run for DAY (catchup=False) before the backfill may: then the
        # backfill (reprocess "none") leaves DAY to that run. Either way DAY-1 is the backfill's and succeeded.
        states = api.backfill_run_states(NIGHTLY, DAY - dt.timedelta(days=1), DAY)
        assert states[(DAY - dt.timedelta(days=1)).isoformat()] == "success"
        assert set(states.values()) == {"success"} and set(states) <= {
            (DAY - dt.timedelta(days=1)).isoformat(),
            DAY.isoformat(),
        }
        runs = http("GET", f"{nightly_url}/dagRuns?run_type=backfill", token=token)[1]["dag_runs"]
        by_date = {r["data_interval_start"][:10]: r for r in runs}
        assert {d: r["state"] for d, r in by_date.items()} == states
        quoted = urllib.parse.quote(by_date[(DAY - dt.timedelta(days=1)).isoformat()]["dag_run_id"])
        tis = http("GET", f"{nightly_url}/dagRuns/{quoted}/taskInstances", token=token)[1]["task_instances"]
        assert {t["task_id"]: t["state"] for t in tis}["publish"] == "skipped"
        assert len(committed(rt, DAY - dt.timedelta(days=1))) == 1
        assert current_run_id(prescore_env["redis_url"]) == run.run_id
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
