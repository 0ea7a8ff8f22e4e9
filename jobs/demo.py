"""``prescore demo``: the whole product on embedded defaults, narrated step by step.

Uses ``PRESCORE_HOME`` (default ``.prescore/``), the embedded models file, and the embedded Redis unless
``PRESCORE_REDIS_URL`` is set. Each step calls what the CLI and the DAGs call:

1. synthesise a warehouse (``prescore synth``); 2. train and promote the primary and fallback models;
3. run the nightly DAG ``prescore_score__churn`` for the latest date through Airflow (``dag.test()`` in a child
   process with a private SQLite metadata DB: wait for features → validate → score on Dask → publish → verify
   online → record). Without the ``airflow`` extra (or with ``airflow=False``) the same job and publish run
   directly; 4. start the lookup API on 127.0.0.1 in the background (``prescore serve --detach``);
5. look up a precomputed entity, a new entity with features (fallback model) and one without (safe default)
   over HTTP, and print the URLs and how to stop everything.

Last it prints where the monitoring report of the scored date is: the nightly DAG's ``monitor`` task stored it (the
direct path runs ``jobs.monitor.monitor_date`` itself), and ``jobs.report_page`` renders the catalog's reports to
``<local_dir>/reports/churn.html`` (what ``prescore report`` writes), so the demo ends on drift and quality.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs import serve as srv
from jobs.local_airflow import run_nightly
from jobs.monitor import monitor_date
from jobs.publish import publish_run
from jobs.report_page import collect, render
from jobs.runtime import Runtime
from jobs.score import score_partition
from jobs.synth import synth
from jobs.train import train_model
from warehouse.catalog import COMMITTED
from warehouse.datasets.score_files import read_run
from warehouse.errors import UserError
from warehouse.store import free_port

DEMO_MODEL = "churn"
NEW_ENTITY = "NEW-0000000001"
UNKNOWN_ENTITY = "NEW-0000000002"


def run_demo(
    entities: int,
    days: int,
    say: Callable[[str], None],
    airflow: bool | None = None,
    serve: bool = True,
    port: int = 8000,
) -> dict[str, Any]:
    """Run every step; return what a caller needs (model, date, run id, sample ids, lookups, API URL)."""
    if airflow is None:
        airflow = importlib.util.find_spec("airflow") is not None
    rt = Runtime.from_settings()
    spec = rt.config.model(DEMO_MODEL)
    fs = spec.feature_set
    end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    t0 = time.perf_counter()
    try:
        say(f"[1/5] synthesising {entities:,} entities x {days} days of {fs} under {rt.home}")
        report = synth(rt.home, feature_set=fs, spec=rt.config.feature_set(fs), entities=entities, days=days,
                       end_date=end, seed=rt.settings.seed)  # fmt: skip
        say(f"      {report.rows:,} rows at {report.rows_per_s:,.0f} rows/s")
        say(f"[2/5] training {DEMO_MODEL}: primary and fallback models, hash-checked in the registry")
        for r in train_model(rt, DEMO_MODEL).results:
            say(f"      {r.kind:8s} {r.version} hold-out AUC {r.metrics['auc']:.4f} promoted={r.promoted}")
        if airflow:
            say(
                f"[3/5] nightly DAG prescore_score__{DEMO_MODEL} for {end} through Airflow (dag.test, private "
                "SQLite metadata DB): wait for features -> validate -> score on Dask -> publish -> verify -> record"
            )
            result = run_nightly(rt.local_dir, DEMO_MODEL, end)
            say("      " + ", ".join(f"{task} {state}" for task, state in sorted(result["tasks"].items())))
            say(f"      task logs: {result['log_file']}")
        else:
            say(f"[3/5] nightly scoring of {end} on a local Dask cluster, then publish (Airflow not installed)")
            run = score_partition(rt, DEMO_MODEL, end, device="auto")
            publish_run(rt, DEMO_MODEL, run.run_id, force=True)
        committed = rt.catalog.runs(DEMO_MODEL, partition_date=end, status=COMMITTED)
        if not committed:
            raise UserError(f"no committed run of {DEMO_MODEL} for {end} after the nightly step")
        run_id, output_path = committed[0].run_id, committed[0].output_path
        say(f"      run {run_id}: {committed[0].rows_out:,} rows -> {output_path}; published to {rt.redis_url}")
        sample = read_run(str(output_path), columns=["entity_id"]).slice(0, 2).column("entity_id").to_pylist()
        out: dict[str, Any] = {"model": DEMO_MODEL, "date": end.isoformat(), "run_id": run_id, "ids": sample}
        out["report"] = str(_monitoring_report(rt, end))
        if serve:
            out.update(_serve_and_look_up(rt, sample[0], port, say))
        say(f"done in {time.perf_counter() - t0:.0f}s. `prescore status` shows the state, "
            "`prescore lookup --model churn ID` looks up from the CLI.")  # fmt: skip
        say("stop everything with: prescore serve --stop && prescore redis stop")
        say(f"monitoring report (drift, quality, serving mix) of {DEMO_MODEL}: {out['report']}")
        return out
    finally:
        rt.close()


def _monitoring_report(rt: Runtime, day: dt.date) -> Path:
    """The report page of ``DEMO_MODEL`` (module docstring), ``day`` monitored first when the DAG did not."""
    if not rt.catalog.monitor_reports(DEMO_MODEL, partition_date=day):
        monitor_date(rt, DEMO_MODEL, day)
    path = rt.local_dir / "reports" / f"{DEMO_MODEL}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(collect(rt, DEMO_MODEL, 30)), encoding="utf-8")
    return path


def _serve_and_look_up(rt: Runtime, known: str, port: int, say: Callable[[str], None]) -> dict[str, Any]:
    stopped = srv.stop_detached(rt.local_dir)
    if stopped:
        say(f"      (stopped the API a previous demo left at {stopped.url})")
    try:
        srv.check_bind("127.0.0.1", port)
    except UserError:
        port = free_port()
    say(f"[4/5] starting the lookup API on 127.0.0.1:{port} (loads and warms the fallback model, then ready)")
    info = srv.start_detached(rt.local_dir, "127.0.0.1", port, workers=1, log_max_bytes=rt.settings.log_max_bytes,
                              log_backups=rt.settings.log_backups)  # fmt: skip
    say(f"      ready: pid {info.pid}, log {info.log_file}")
    features = {name: 1.0 for name in rt.config.model(DEMO_MODEL).fallback_features}
    calls = [
        ("precomputed", "GET", f"/v1/scores/{DEMO_MODEL}/{urllib.parse.quote(known, safe='')}", None),
        ("fallback", "POST", f"/v1/scores/{DEMO_MODEL}", {"entity_id": NEW_ENTITY, "features": features}),
        ("default", "GET", f"/v1/scores/{DEMO_MODEL}/{UNKNOWN_ENTITY}", None),
    ]
    say("[5/5] lookups over HTTP:")
    lookups = []
    for what, method, path, body in calls:
        status, answer = srv.http_json(method, info.url + path, body)
        if status != 200 or not isinstance(answer, dict):
            raise UserError(f"{method} {path} answered {status}: {answer}; see {info.log_file}")
        lookups.append(answer)
        shown = f"curl -s {info.url}{path}" if body is None else f"POST {path} (with features)"
        say(f"      {what:11s} {shown}\n                  -> score {answer['score']:.4f} source={answer['source']} "
            f"stale={answer['stale']} model_version={answer['model_version']} run_id={answer['run_id']}")  # fmt: skip
    say(f"      API docs {info.url}/docs | models {info.url}/v1/models | metrics {info.url}/metrics | "
        f"readiness {info.url}/readyz")  # fmt: skip
    return {"api": info.url, "lookups": lookups}
