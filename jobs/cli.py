"""The ``prescore`` command line: a thin layer over functions in ``jobs/``.

Exit codes: 0 success, 1 a user error (one line on stderr saying what to do), 2 a usage error, 3 Redis is
unavailable (one line; nothing was changed by the failed step: retry when it answers again).
``--json`` prints a machine-readable summary on stdout; human output and logs go to stderr.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from jobs.progress import progress_bar
from warehouse.datasets import storage
from warehouse.errors import StoreUnavailableError, UserError

if TYPE_CHECKING:
    from jobs.runtime import Runtime

app = typer.Typer(
    name="prescore",
    help="Batch-first scoring: synthesise, train, score on Dask, publish to Redis, serve online.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
redis_app = typer.Typer(help="The embedded Redis server prescore runs when PRESCORE_REDIS_URL is unset.")
app.add_typer(redis_app, name="redis")
airflow_app = typer.Typer(help="Airflow's api-server, scheduler and dag-processor on 127.0.0.1, with prescore's DAGs.")
app.add_typer(airflow_app, name="airflow")

err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
EXIT_UNAVAILABLE = 3  # Redis could not be reached: retry; nothing the failed step would have changed was changed
JSON_OPT = typer.Option(False, "--json", help="Print a machine-readable JSON summary on stdout.")


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("alembic").setLevel(logging.WARNING)  # catalog migrations: quiet unless they fail


def user_errors(fn: F) -> F:
    """Turn a ``UserError`` into one line on stderr and exit code 1, Redis being unavailable into one line and exit
    code 3 (retryable: a wrong password is a ``StoreAuthError``, a user error), a full or read-only volume into one
    line and exit 1; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _setup_logging()
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except StoreUnavailableError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_UNAVAILABLE) from None
        except OSError as exc:
            no_room = storage.no_room(exc)
            if not no_room:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            err.print(f"[red]error:[/red] no room to write{where}: {no_room}; free space (or point "
                      "PRESCORE_HOME at a larger volume), then rerun", highlight=False, soft_wrap=True)  # fmt: skip
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=_plain) + "\n")


def parse_day(value: str, option: str) -> dt.date:
    try:
        if len(value) != 10 or value[4] != "-" or value[7] != "-":
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option} {value!r} is not a date: expected YYYY-MM-DD") from None


def _runtime() -> Runtime:
    from jobs.runtime import Runtime

    return Runtime.from_settings()


@app.command()
@user_errors
def synth(
    entities: int = typer.Option(1_000_000, "--entities", "-n", help="Entities per day (> 0)."),
    days: int = typer.Option(4, "--days", help="Number of daily partitions (> 0)."),
    end_date: str = typer.Option(None, "--end-date", help="Last partition date, YYYY-MM-DD. Default: yesterday (UTC)."),
    feature_set: str = typer.Option("customer_daily", "--feature-set", help="Feature set from the models file."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default PRESCORE_SEED, 7)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Write a deterministic synthetic warehouse: features/<fs>/dt=YYYY-MM-DD/*.parquet plus labels."""
    from jobs.synth import synth as run_synth

    rt = _runtime()
    end = parse_day(end_date, "--end-date") if end_date else dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    spec = rt.config.feature_set(feature_set)
    with progress_bar(f"synth {feature_set}", unit="rows") as bar:
        report = run_synth(
            rt.home, feature_set=feature_set, spec=spec, entities=entities, days=days, end_date=end,
            seed=rt.settings.seed if seed is None else seed, progress=bar,
        )  # fmt: skip
    if as_json:
        emit_json(report.to_dict())
    else:
        err.print(
            f"wrote {report.rows:,} rows in {report.days} daily partitions of {feature_set} under "
            f"{rt.home / 'features' / feature_set} ({report.rows_per_s:,.0f} rows/s)"
        )


@app.command()
@user_errors
def train(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    end_date: str = typer.Option(None, "--end-date", help="Newest partition to use (hold-out day)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Train the primary and fallback models, evaluate on a hold-out day, register and promote them."""
    from jobs.train import train_model

    rt = _runtime()
    try:
        report = train_model(rt, model, parse_day(end_date, "--end-date") if end_date else None)
    finally:
        rt.close()
    if as_json:
        emit_json(report.to_dict())
        return
    table = Table(title=f"{model}: trained on {', '.join(report.train_dates)}; hold-out {report.holdout_date}")
    for col in ("kind", "version", "features", "AUC", "logloss", "production AUC", "promoted"):
        table.add_column(col)
    for r in report.results:
        prod = f"{r.production_metrics['auc']:.4f}" if r.production_metrics else "-"
        table.add_row(r.kind, r.version, str(len(r.features)), f"{r.metrics['auc']:.4f}",
                      f"{r.metrics['logloss']:.4f}", prod, "yes" if r.promoted else "no")  # fmt: skip
    err.print(table)


@app.command()
@user_errors
def score(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    date: str = typer.Option(..., "--date", "-d", help="Feature partition date, YYYY-MM-DD."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (auto: cuda when a GPU is visible)."),
    publish: bool = typer.Option(False, "--publish/--no-publish", help="Load into Redis and publish."),
    force: bool = typer.Option(False, "--force", help="Rescore even when an identical run is committed."),
    as_json: bool = JSON_OPT,
) -> None:
    """Validate a feature partition, score it on Dask, commit scores Parquet, record the run."""
    from jobs.score import score_partition

    rt = _runtime()
    try:
        report = score_partition(rt, model, parse_day(date, "--date"), device=device, force=force)
        result: dict[str, Any] = {"run": report.to_dict()}
        if publish:
            from jobs.publish import publish_run

            result["publication"] = publish_run(rt, model, report.run_id, force=force).to_dict()
    finally:
        rt.close()
    if as_json:
        emit_json(result)
        return
    verb = "reused committed run" if report.reused else "committed run"
    err.print(
        f"{verb} {report.run_id}: {report.rows_out:,} rows of {model} for {report.partition_date} "
        f"→ {report.output_path} ({report.rows_per_s:,.0f} rows/s, psi={report.psi})"
    )
    if "publication" in result:
        err.print(f"published: {result['publication']}")


@app.command()
@user_errors
def publish(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    run: str = typer.Option(..., "--run", "-r", help="A committed run id (see `prescore status`)."),
    force: bool = typer.Option(False, "--force", help="Override the quality gate and the older-as_of rule."),
    as_json: bool = JSON_OPT,
) -> None:
    """Load a committed run into Redis, verify it, pass the quality gate, and make it current atomically."""
    from jobs.publish import publish_run

    rt = _runtime()
    try:
        report = publish_run(rt, model, run, force=force)
    finally:
        rt.close()
    if as_json:
        emit_json(report.to_dict())
        return
    note = " (already current)" if report.already_current else ""
    err.print(f"published run {report.run_id} of {model}{note}; previous {report.previous_run_id}; psi={report.psi}")


@app.command()
@user_errors
def rollback(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    to: str = typer.Option(None, "--to", help="A retained run id (default: the previously published run)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Point the model back at its previous published run: one pointer change, instant."""
    from jobs.publish import rollback_model

    rt = _runtime()
    try:
        result = rollback_model(rt, model, to)
    finally:
        rt.close()
    if as_json:
        emit_json(result)
        return
    err.print(f"{model} now serves run {result['run_id']} (was {result['previous_run_id']})")


@app.command()
@user_errors
def restore(
    model: str = typer.Option(None, "--model", "-m", help="One model of the models file."),
    all_models: bool = typer.Option(False, "--all", help="Every model of the models file."),
    as_json: bool = JSON_OPT,
) -> None:
    """Reload what the catalog says is live (and its rollback targets) from committed Parquet into Redis after Redis
    lost it, verify it and flip the pointer back atomically. Idempotent: nothing changes when Redis holds it all."""
    from jobs.restore import restore_models

    if bool(model) == all_models:
        raise UserError("give --model NAME or --all")
    rt = _runtime()
    try:
        names = [model] if model else rt.config.model_names
        for name in names:
            rt.config.model(name)  # unknown model → UnknownModelError
        reports = restore_models(rt, names)
    finally:
        rt.close()
    if as_json:
        emit_json([r.to_dict() for r in reports])
    else:
        for r in reports:
            if r.status == "refused":
                continue
            targets = "; ".join(f"{t} {how}" for t, how in r.targets.items())
            took = f" in {r.seconds:.1f} s" if r.status == "restored" else ""
            line = f"{r.model}: {r.message}{took}" + (f"; rollback targets: {targets}" if targets else "")
            err.print(line, highlight=False, soft_wrap=True)
    failed = [r for r in reports if r.status in ("refused", "busy")]
    if failed:
        raise UserError("; ".join(r.message if r.status == "refused" else f"{r.model}: {r.message}" for r in failed))


@app.command()
@user_errors
def backfill(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    start: str = typer.Option(..., "--start", help="First partition date, YYYY-MM-DD."),
    end: str = typer.Option(..., "--end", help="Last partition date, YYYY-MM-DD (inclusive)."),
    publish: str = typer.Option("latest", "--publish", help="latest: publish the newest date if newer; none."),
    force: bool = typer.Option(False, "--force", help="Rescore dates already committed with this model version."),
    max_parallel: int = typer.Option(1, "--max-parallel", help="Partitions scored at once on the one cluster."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Go on when some dates have no features."),
    via_airflow: bool = typer.Option(False, "--via-airflow", help="Create an Airflow backfill instead and follow it."),
    as_json: bool = JSON_OPT,
) -> None:
    """Score every date of a range; resumable (rerun continues), history never overwrites the live store."""
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    if first > last:
        raise UserError(f"--start {first} is after --end {last}; swap them")
    rt = _runtime()
    try:
        if via_airflow:
            from jobs.airflow_api import AirflowAPI

            rt.config.model(model)
            api = AirflowAPI.from_settings(rt.settings)
            reprocess = "completed" if force else "none"
            dag_id = f"prescore_score__{model}"
            created = api.create_backfill(dag_id, first, last, reprocess=reprocess, max_active_runs=max_parallel)
            err.print(f"created Airflow backfill {created.get('id')} of prescore_score__{model}; following it")
            final = api.follow_backfill(int(created["id"]), say=lambda m: err.print(m, highlight=False))
            final["runs"] = api.backfill_run_states(dag_id, first, last)
            if as_json:
                emit_json(final)
            else:
                for day, state in final["runs"].items():
                    err.print(f"{day}  {state}")
            if not final["runs"] or any(state != "success" for state in final["runs"].values()):
                raise UserError(f"Airflow backfill {created.get('id')} did not succeed for every date: "
                                f"{final['runs'] or 'no runs were created'}; see the Airflow UI")  # fmt: skip
            return
        from jobs.backfill import backfill as run_backfill

        with progress_bar(f"backfill {model} {first}..{last}", unit="dates") as bar:
            report = run_backfill(
                rt, model, first, last, publish=publish, force=force,  # type: ignore[arg-type]
                max_parallel=max_parallel, device=device, skip_missing=skip_missing, progress=bar,
            )  # fmt: skip
    finally:
        rt.close()
    if as_json:
        emit_json(report.to_dict())
    else:
        table = Table(title=f"backfill {model} {report.start}..{report.end} in {report.seconds:.0f}s")
        for col in ("date", "status", "run", "rows", "seconds", "error"):
            table.add_column(col)
        for d in report.dates:
            table.add_row(d.date, d.status, d.run_id or "-", f"{d.rows:,}", f"{d.seconds:.1f}", d.error or "")
        err.print(table)
        err.print(report.publish_note or f"published: {report.published}")
    if any(d.status == "failed" for d in report.dates):
        raise typer.Exit(1)


@app.command()
@user_errors
def status(
    model: str = typer.Option(None, "--model", "-m", help="One model (default: every model)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Per model: feature partitions, production model versions (with hashes), recent runs and failures."""
    rt = _runtime()
    try:
        if model:
            rt.config.model(model)  # unknown model → UnknownModelError
        names = [model] if model else rt.config.model_names
        from jobs.status import model_status

        data = [model_status(rt, name) for name in names]
    finally:
        rt.close()
    if as_json:
        emit_json(data)
        return
    for item in data:
        table = Table(title=f"model {item['model']} (feature set {item['feature_set']})", show_header=False)
        table.add_row("feature partitions", ", ".join(item["feature_dates"]) or "none (run prescore synth)")
        for kind, info in item["production"].items():
            text = "none (run prescore train)"
            if info:
                text = f"{info['version']}  sha256 {info['sha256'][:12]}…  AUC {info['metrics'].get('auc', 0):.4f}"
            table.add_row(f"production {kind}", text)
        current = item["store"].get("current")
        if "error" in item["store"]:
            table.add_row("published run", f"not readable: {item['store']['error']}")
        elif current:
            table.add_row(
                "published run",
                f"{current['run_id']}  as_of {current['as_of']}  age {current['age_s']}s "
                f"(max {current['max_age_s']:.0f}s: {current['state']})  rows {current['rows']:,}",
            )
            retained = [r["run_id"] for r in item["store"]["runs"] if r["run_id"] != current["run_id"]]
            table.add_row("retained runs", ", ".join(retained) or "none")
        elif item["store"].get("health", {}).get("state") != "lost":
            table.add_row("published run", "none (prescore publish)")
        health = item["store"].get("health")
        if health and health["state"] == "lost":
            table.add_row("[red]scores LOST[/red]", f"{health['reason']}; restore them: prescore restore --model "
                          f"{item['model']} (the prescore_reconcile DAG does it every 5 minutes)")  # fmt: skip
        for pub in item["publications"][:3]:
            table.add_row(f"{pub['action']}", f"{pub['run_id']} at {pub['at']} (previous {pub['previous_run_id']})")
        for run in item["recent_runs"][:5]:
            table.add_row(f"run {run['date']}", f"{run['run_id']} {run['status']} rows={run['rows']}")
        for fail in item["last_failures"]:
            table.add_row("last failure", f"{fail['date']} {fail['run_id']}: {fail['error']}")
        err.print(table)


@app.command()
@user_errors
def retention(
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be removed; change nothing."),
    as_json: bool = JSON_OPT,
) -> None:
    """Enforce every store's bound: old score runs, crashed writers' leftovers, old catalog rows, old model
    versions, old prediction-log days, oversized log files. Never the live run or a rollback target."""
    from jobs.retention import apply_retention

    rt = _runtime()
    try:
        report = apply_retention(rt, now=dt.datetime.now(dt.UTC), dry_run=dry_run)
    finally:
        rt.close()
    if as_json:
        emit_json(report.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    table = Table(title=f"retention as of {report.now}{' (dry run)' if dry_run else ''}")
    for col in ("store", "action", "item", "reason"):
        table.add_column(col, overflow="fold")
    for r in report.removed:
        table.add_row(r.store, verb, r.item, r.reason)
    for k in report.kept:
        table.add_row(k.store, "kept", k.item, k.reason)
    err.print(table)
    for note in report.notes:
        err.print(note, highlight=False, soft_wrap=True)
    counts = ", ".join(f"{n} from {store}" for store, n in report.counts().items()) or "nothing"
    err.print(f"{verb} {counts} ({report.bytes_freed:,} bytes)", highlight=False)


@app.command()
@user_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
    workers: int = typer.Option(1, "--workers", "-w", help="uvicorn worker processes."),
    detach: bool = typer.Option(False, "--detach", help="Run in the background; wait until ready; record its PID."),
    stop: bool = typer.Option(False, "--stop", help="Stop the API started here with --detach (by PID)."),
    log_file: str = typer.Option(None, "--log-file", hidden=True, help="The file this process's output goes to."),
) -> None:
    """Serve the online lookup API (FastAPI under uvicorn): /v1/scores, /v1/models, /readyz, /metrics, /docs."""
    from pathlib import Path

    from jobs import serve as srv
    from warehouse.settings import Settings

    settings = Settings()
    home = settings.local_dir
    log_max_bytes, log_backups = settings.log_max_bytes, settings.log_backups
    if stop:
        info = srv.stop_detached(home)
        err.print(f"stopped the API at {info.url} (pid {info.pid})" if info else "no detached API was running")
        return
    if detach:
        info = srv.start_detached(home, host, port, workers, log_max_bytes=log_max_bytes, log_backups=log_backups)
        err.print(f"API ready at {info.url} (pid {info.pid}); docs {info.url}/docs; log {info.log_file}; "
                  "stop it with `prescore serve --stop`", highlight=False)  # fmt: skip
        return
    srv.serve_foreground(host, port, workers, Path(log_file) if log_file else None, log_max_bytes, log_backups)


FEATURES_HELP = 'JSON object, entity id → {feature: value}, for the fallback model: \'{"NEW1": {"f00": 1.5, ...}}\'.'


@app.command()
@user_errors
def lookup(
    entity_ids: list[str] = typer.Argument(..., metavar="ID...", help="Entity ids to look up."),
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    features: str = typer.Option(None, "--features", help=FEATURES_HELP),
    as_json: bool = JSON_OPT,
) -> None:
    """Look entities up through the same ladder as the API (precomputed → fallback → stale → default)."""
    # The one place jobs/ reaches into online/: the CLI is the entry point of every layer (see pyproject).
    from online.lookup import lookup as online_lookup

    parsed = None
    if features is not None:
        try:
            parsed = json.loads(features)
        except ValueError as exc:
            raise UserError(f"--features is not valid JSON ({exc}); give an object of id → feature values") from None
        if not isinstance(parsed, dict):
            raise UserError("--features must be a JSON object of entity id → {feature: value}")
    answers = online_lookup(model, entity_ids, parsed)
    if as_json:
        emit_json(answers)
        return
    table = Table(title=f"model {model}")
    for column in ("entity_id", "score", "source", "stale", "age_s", "model_version", "run_id"):
        table.add_column(column)
    for a in answers:
        age = "" if a["age_s"] is None else f"{a['age_s']:.0f}"
        table.add_row(a["entity_id"], f"{a['score']:.6f}", a["source"], str(a["stale"]), age,
                      a["model_version"] or "", a["run_id"] or "")  # fmt: skip
    Console().print(table)


@redis_app.command("start")
@user_errors
def redis_start() -> None:
    """Start (or reuse) the embedded Redis under PRESCORE_HOME and print its URL."""
    from warehouse.settings import Settings
    from warehouse.store import ensure_local_redis

    server = ensure_local_redis(Settings().embedded_redis_dir)
    typer.echo(server.url)


@redis_app.command("stop")
@user_errors
def redis_stop() -> None:
    """Stop the embedded Redis of PRESCORE_HOME (it saves a snapshot first)."""
    from warehouse.settings import Settings
    from warehouse.store import stop_local_redis

    stopped = stop_local_redis(Settings().embedded_redis_dir)
    err.print("stopped the embedded Redis" if stopped else "no embedded Redis was running")


@airflow_app.command("up")
@user_errors
def airflow_up(
    host: str = typer.Option("127.0.0.1", "--host", help="Address of the UI and API (loopback by default)."),
    port: int = typer.Option(8080, "--port", "-p", help="Port of the UI and API."),
    parallelism: int = typer.Option(2, "--parallelism", help="Task processes run at once (LocalExecutor)."),
    triggerer: bool = typer.Option(False, "--triggerer", help="Also start a triggerer (prescore's DAGs need none)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Start the Airflow services in the background (home: PRESCORE_HOME/airflow-local); print the URL and login."""
    from jobs import airflow_services
    from warehouse.settings import Settings

    info = airflow_services.up(Settings(), host=host, port=port, parallelism=parallelism, triggerer=triggerer)
    if as_json:
        emit_json(info.to_dict())
        return
    say = lambda msg: err.print(msg, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"Airflow UI and API: {info.url}  (login {info.user} / {info.password}; the api-server generated the "
        f"password into {info.passwords_file})")  # fmt: skip
    say(f"running: {', '.join(f'{c.name} (pid {c.pid})' for c in info.components if c.running)}")
    say(f"tasks use PRESCORE_REDIS_URL={info.redis_url}; logs and pid files in {info.home}/run; "
        f"task logs in {info.home}/logs")  # fmt: skip
    if not triggerer:
        say("no triggerer: prescore's sensor reschedules and nothing defers, so the Home page's Triggerer badge "
            "stays red (--triggerer starts one)")  # fmt: skip
    say("first data and models, if not done yet: prescore synth && prescore train --model churn; "
        "stop everything with `prescore airflow down`")  # fmt: skip


@airflow_app.command("down")
@user_errors
def airflow_down() -> None:
    """Stop the Airflow services started with `prescore airflow up`, by PID."""
    from jobs import airflow_services
    from warehouse.settings import Settings

    stopped = airflow_services.down(Settings().local_dir)
    if not stopped:
        err.print("no Airflow services were running")
    for c in stopped:
        err.print(f"stopped {c.name} (pid {c.pid})", highlight=False)


@airflow_app.command("status")
@user_errors
def airflow_status(as_json: bool = JSON_OPT) -> None:
    """Whether each Airflow service started here runs (by its pid file), its URL and login."""
    from jobs import airflow_services
    from warehouse.settings import Settings

    info = airflow_services.status(Settings().local_dir)
    if as_json:
        emit_json(info.to_dict())
        return
    for c in info.components:
        state = f"running (pid {c.pid})" if c.running else "not running"
        err.print(f"{c.name}: {state}; log {c.log_file}", highlight=False, soft_wrap=True)
    if info.running:
        err.print(f"UI and API: {info.url} (login {info.user}, password in {info.passwords_file})", highlight=False)


@app.command()
@user_errors
def demo(
    entities: int = typer.Option(1_000_000, "--entities", "-n", help="Synthetic entities per day."),
    days: int = typer.Option(4, "--days", help="Daily partitions to synthesise."),
    airflow: bool = typer.Option(True, "--airflow/--no-airflow", help="Run the nightly DAG through Airflow."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Start the lookup API and query it."),
    port: int = typer.Option(8000, "--port", "-p", help="API port (a free one when it is taken)."),
) -> None:
    """Run prescore end to end on embedded defaults, saying what it does at each step."""
    import importlib.util

    from jobs.demo import run_demo

    if airflow and importlib.util.find_spec("airflow") is None:
        err.print("Airflow is not installed (uv sync --extra airflow): scoring without it")
        airflow = False
    say = lambda msg: err.print(msg, highlight=False, soft_wrap=True)  # noqa: E731
    run_demo(entities=entities, days=days, say=say, airflow=airflow, serve=serve, port=port)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
