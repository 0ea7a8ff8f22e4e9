"""The nightly DAG's task durations in `dag.test()`, this checkout against another one, same machine and run.

    python bench/bench_dag_tasks.py --before DIR --entities 200000 --rounds 2 --json out.json

``DIR`` is another checkout (``git worktree add DIR REV``). One warehouse (a trained model, ``--entities`` rows per
partition) is copied for each run; each run is a fresh interpreter with its own AIRFLOW_HOME and SQLite metadata
DB, started in the checkout it measures, that parses that checkout's ``dags/`` and runs
``prescore_score__churn`` with ``dag.test()``; the runs of the two checkouts alternate. Reported per task: the
median duration (Airflow's task instance ``duration``), and the whole interpreter's wall time. In ``dag.test()``
the tasks run in that one interpreter, so the first task to import the scoring stack (``validate_contract``,
``score``) pays what a task process of a real deployment pays at its start.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis as redis_lib
import yaml

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 11, 20)
RUNNER = """
import datetime as dt, json, sys, time
from airflow.utils.db import initdb
initdb()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="dags")
assert not bag.import_errors, bag.import_errors
dag = bag.dags["prescore_score__churn"]
dr = dag.test(logical_date=dt.datetime({y}, {m}, {d}, 2, 0, tzinfo=dt.timezone.utc))
tis = dr.get_task_instances()
print(json.dumps({{"state": str(dr.state), "tasks": {{ti.task_id: ti.duration for ti in tis if ti.duration}}}}))
"""


def _prepare(base: Path, entities: int, redis_url: str) -> tuple[Path, Path]:
    from jobs.runtime import Runtime
    from jobs.synth import synth
    from jobs.train import train_model
    from warehouse.settings import Settings

    raw = yaml.safe_load((ROOT / "warehouse/defaults/models.yaml").read_text())
    raw["models"]["churn"]["training"].update(max_train_rows=30_000, primary_trees=200, primary_depth=8)
    models_file = base / "models.yaml"
    models_file.write_text(yaml.safe_dump(raw))
    rt = Runtime.from_settings(Settings(home=base / "template", models_file=models_file, redis_url=redis_url))
    spec = rt.config.feature_set("customer_daily")
    synth(rt.home, feature_set="customer_daily", spec=spec, entities=entities, days=5, end_date=DAY, seed=11)
    train_model(rt, "churn", end_date=DAY - dt.timedelta(days=1))
    rt.close()
    return base / "template", models_file


def _run(tree: Path, base: Path, name: str, template: Path, models_file: Path, redis_url: str) -> dict[str, object]:
    home, airflow = base / f"home-{name}", base / f"airflow-{name}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(airflow, ignore_errors=True)
    shutil.copytree(template, home, ignore=shutil.ignore_patterns("catalog*", "scores"))
    for manifest in (home / "models").rglob("manifest.json"):  # an older checkout refuses keys it predates
        raw = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({k: v for k, v in raw.items() if k != "baseline_sha256"}))
    airflow.mkdir()
    env = {**os.environ, "AIRFLOW_HOME": str(airflow), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
           f"sqlite:///{airflow / 'airflow.db'}", "AIRFLOW__CORE__DAGS_FOLDER": str(tree / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow / "logs"),
           "PRESCORE_HOME": str(home), "PRESCORE_MODELS_FILE": str(models_file), "PRESCORE_REDIS_URL": redis_url,
           "PRESCORE_CATALOG_URL": "", "PRESCORE_DASK_ADDRESS": ""}  # fmt: skip
    code = RUNNER.format(y=DAY.year, m=DAY.month, d=DAY.day + 1)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"dag.test in {tree} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["state"] != "success":
        raise SystemExit(f"dag.test in {tree}: run {out['state']}:\n{done.stderr[-3000:]}")
    return {"wall_s": wall, **out["tasks"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from warehouse.store import start_redis

    trees = {"before": args.before.resolve(), "after": ROOT}
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        base = Path(tmp)
        redis = start_redis(base / "redis")
        try:
            template, models_file = _prepare(base, args.entities, redis.url)
            runs: dict[str, list[dict[str, object]]] = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    flush = redis_lib.Redis.from_url(redis.url)
                    flush.flushall()
                    flush.close()
                    runs[name].append(_run(tree, base, name, template, models_file, redis.url))
        finally:
            redis.stop()
    tasks = sorted({k for rows in runs.values() for row in rows for k in row})
    med = {name: {t: statistics.median(float(r[t]) for r in rows if t in r) for t in tasks if any(t in r for r in rows)}
           for name, rows in runs.items()}  # fmt: skip
    print(f"{'task':22} {'before s':>9} {'after s':>9} {'after ÷ before':>15}")
    for t in tasks:
        b, a = med["before"].get(t), med["after"].get(t)
        ratio = f"{a / b:15.2f}" if a is not None and b else f"{'-':>15}"
        print(f"{t:22} {b if b is not None else float('nan'):9.2f} {a if a is not None else float('nan'):9.2f} {ratio}")
    if args.json:
        args.json.write_text(json.dumps({"command": f"python bench/bench_dag_tasks.py --before DIR --entities "
                                         f"{args.entities} --rounds {args.rounds}", "median_s": med, "runs": runs},
                                        indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
