"""Run a prescore DAG through Airflow on this machine, with no Airflow services: ``dag.test()`` in a child process.

``prescore demo`` uses it to run the real nightly DAG (sensor → validate → score → publish → verify → record)
for the demo date. The child gets a private Airflow home under ``<PRESCORE_HOME>/airflow`` (SQLite metadata
DB, migrated once, DAG folder ``dags/`` of this project, no example DAGs), so nothing touches ``~/airflow``.
Airflow reads its configuration once, at import: hence a child process, never an import here.

Its logs are replaced on every demo run, so they never pile up: ``fresh_demo_logs`` deletes the task logs of the
previous run (``<home>/airflow/logs``) and ``demo-dag-test.log`` is rewritten. The metadata DB keeps one DAG run
per demo run (a few rows).

    python -m jobs.local_airflow nightly --model churn --date 2026-11-20
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from warehouse.errors import UserError

DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"
RESULT_MARK = "prescore-dag-result: "


def airflow_home_env(af: Path) -> dict[str, str]:
    """The ``AIRFLOW_*`` settings of a private Airflow home ``af``: its SQLite metadata DB and task logs inside it,
    the DAG folder ``dags/`` of this project, no example DAGs, the LocalExecutor."""
    af = af.resolve()
    return {
        "AIRFLOW_HOME": str(af),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{af / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(af / "logs"),
    }


def airflow_env(home: Path) -> dict[str, str]:
    """The ``AIRFLOW_*`` settings of the demo's private Airflow home under ``home`` (short sensor waits)."""
    return {
        **airflow_home_env(home / "airflow"),
        "AIRFLOW__PRESCORE__FEATURE_WAIT_TIMEOUT_S": "60",
        "AIRFLOW__PRESCORE__FEATURE_POKE_INTERVAL_S": "5",
    }


def fresh_demo_logs(home: Path) -> Path:
    """Delete the Airflow task logs a previous demo run left under ``home`` and return the file this run's output
    goes to (``demo-dag-test.log``, rewritten by ``run_nightly``)."""
    af = Path(airflow_env(home)["AIRFLOW_HOME"])
    shutil.rmtree(af / "logs", ignore_errors=True)
    af.mkdir(parents=True, exist_ok=True)
    return af / "demo-dag-test.log"


def run_nightly(home: Path, model: str, day: dt.date, timeout_s: float = 1800) -> dict[str, Any]:
    """Run ``prescore_score__<model>`` for partition ``day``; its task states, or ``UserError`` with the log."""
    if importlib.util.find_spec("airflow") is None:  # never import it here: importing reads ~/airflow
        raise UserError("Airflow is not installed: uv sync --extra airflow (make demo does)")
    log_file = fresh_demo_logs(home)
    cmd = [sys.executable, "-m", "jobs.local_airflow", "nightly", "--model", model, "--date", day.isoformat()]
    env = {**os.environ, **airflow_env(home)}
    with log_file.open("w") as out:
        try:
            proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise UserError(f"the nightly DAG did not finish within {timeout_s:.0f}s; see {log_file}") from None
    text = log_file.read_text(errors="replace")
    results = [line[len(RESULT_MARK) :] for line in text.splitlines() if line.startswith(RESULT_MARK)]
    result: dict[str, Any] = json.loads(results[-1]) if results else {}
    if proc.returncode != 0 or result.get("state") != "success":
        tail = "\n".join(text.splitlines()[-25:])
        raise UserError(f"the nightly DAG run for {day} did not succeed (state {result.get('state')}, "
                        f"tasks {result.get('tasks')}); full log {log_file}:\n{tail}")  # fmt: skip
    result["log_file"] = str(log_file)
    return result


def _logical_date_for(dag: Any, day: dt.date) -> dt.datetime:
    """The end of the data interval that starts on ``day`` (dag.test() runs the last interval closed by then)."""
    from airflow.serialization.encoders import coerce_to_core_timetable

    timetable = coerce_to_core_timetable(dag.timetable)
    t = dt.datetime.combine(day, dt.time(), dt.UTC)
    for _ in range(24 * 4 * 3):  # quarter-hour steps over three days: any daily cron has its interval in there
        t += dt.timedelta(minutes=15)
        interval = timetable.infer_manual_data_interval(run_after=t)
        if interval.start.date() == day:
            return interval.end
    raise UserError(f"the schedule of {dag.dag_id} has no data interval starting on {day}")


def _nightly(model: str, day: dt.date) -> dict[str, Any]:  # pragma: no cover - runs in the child process
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.db import initdb

    db = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    if not db.exists():
        print("migrating the Airflow metadata DB (first run only)", flush=True)
        initdb()
    bag = DagBag(dag_folder=str(DAGS_DIR))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag_id = f"prescore_score__{model}"
    if dag_id not in bag.dags:
        raise SystemExit(f"no DAG {dag_id}; the models file declares {sorted(bag.dags)}")
    dag = bag.dags[dag_id]
    logical = _logical_date_for(dag, day)
    print(f"running {dag_id} with dag.test(logical_date={logical.isoformat()}) for partition {day}", flush=True)
    dr = dag.test(logical_date=logical)
    tasks = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    return {"dag_id": dag_id, "run_id": dr.run_id, "state": str(dr.state), "tasks": tasks}


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in the child process
    parser = argparse.ArgumentParser(prog="python -m jobs.local_airflow")
    parser.add_argument("what", choices=["nightly"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--date", required=True, type=dt.date.fromisoformat)
    args = parser.parse_args(argv)
    result = _nightly(args.model, args.date)
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0 if result["state"] == "success" else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
