"""The ``prescore`` command line: a thin layer over functions in ``jobs/``.

Here: the commands, their options and the checks of what was typed; the batch commands' bodies are in
``jobs.commands`` (imported when one runs), exit codes, ``--json`` and the stderr console in ``jobs.console``.
Exit codes: 0 success, 1 a user error (one line on stderr saying what to do), 2 a usage error, 3 Redis is
unavailable (one line; nothing was changed by the failed step: retry when it answers again). ``--json`` prints a
machine-readable summary on stdout; human output and logs go to stderr.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console

from jobs.console import JSON_OPT, emit_json, err, parse_day, say, user_errors
from jobs.report_tables import lookup_table
from warehouse.errors import UserError

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
rollout_app = typer.Typer(help="Challenger versions online: stop or resume a canary at once, drop a challenger.")
app.add_typer(rollout_app, name="rollout")


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
    from jobs import commands

    day = parse_day(end_date, "--end-date") if end_date else None
    commands.synth(entities, days, day, feature_set, seed, as_json)


@app.command()
@user_errors
def train(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    end_date: str = typer.Option(None, "--end-date", help="Newest partition to use (hold-out day)."),
    challenger: bool = typer.Option(
        False, "--challenger", help="Make the new primary a challenger (shadow-scored; promote with prescore promote)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Train the primary and fallback models, evaluate on a hold-out day, register and promote them."""
    from jobs import commands

    commands.train(model, parse_day(end_date, "--end-date") if end_date else None, as_json, challenger=challenger)


@app.command()
@user_errors
def register(
    path: str = typer.Argument(None, help="The model file (.ubj or .json); or use --from-mlflow."),
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    role: str = typer.Option(..., "--role", help="primary (scored nightly) or fallback (scored online on misses)."),
    features: str = typer.Option(
        None, "--features", help="Comma-separated feature names in column order, for a model that stores none."
    ),
    from_mlflow: str = typer.Option(
        None, "--from-mlflow", help="models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH or a model directory."
    ),
    promote: bool = typer.Option(False, "--promote", help="Make the new version production once it passes."),
    challenger: bool = typer.Option(
        False, "--challenger", help="A primary version scored in shadow next to production (prescore promote later)."
    ),
    reference_date: str = typer.Option(
        None, "--reference-date", help="The feature partition profiled as the version's baseline (default: newest)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Register an XGBoost model trained elsewhere: checked (format, objective, features, a probe prediction),
    hash-checked in the registry; with --promote it becomes production, with --challenger a challenger."""
    from pathlib import Path

    from jobs import commands

    if role not in ("primary", "fallback"):
        raise typer.BadParameter(f"--role must be primary or fallback, not {role!r}")
    if (path is None) == (from_mlflow is None):
        raise typer.BadParameter("give a model file or --from-mlflow URI (one of them)")
    names = [f.strip() for f in features.split(",") if f.strip()] if features else None
    if challenger and (promote or role != "primary"):
        raise typer.BadParameter("--challenger takes --role primary and no --promote")
    reference = parse_day(reference_date, "--reference-date") if reference_date else None
    commands.register(model, role, Path(path) if path else None, from_mlflow, names, promote, as_json, challenger,
                      reference)  # fmt: skip


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
    from jobs import commands

    commands.score(model, parse_day(date, "--date"), device, publish, force, as_json)


@app.command()
@user_errors
def delta(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    since: str = typer.Option(
        None, "--since", help="Only drops at or after this UTC time (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS])."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (auto: cuda when a GPU is visible)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Score the new intra-day delta drops (features/<fs>/dt=D/delta=HHMMSS/) over the live nightly run of their date,
    on Dask, and commit them as a delta run (catalog and Parquet). Each drop is scored once; no new drop: a no-op."""
    import datetime as dt

    from jobs.delta import score_deltas
    from jobs.runtime import open_runtime

    after = None
    if since:
        try:
            after = dt.datetime.fromisoformat(since)
        except ValueError:
            raise UserError(f"--since {since!r} is not a time: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]") from None
        after = after.replace(tzinfo=dt.UTC) if after.tzinfo is None else after
    with open_runtime() as rt:
        report = score_deltas(rt, model, since=after, device=device)
    if as_json:
        emit_json(report.to_dict())
        return
    say(report.message)


@app.command()
@user_errors
def invalidate(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    ids: str = typer.Option(..., "--ids", help="A file of entity ids, one per line, or - for stdin."),
    reason: str = typer.Option("invalidated", "--reason", help="Why (served in each answer's reason; <= 200 bytes)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Mark entities of the live run invalid until a later run rescores them: the online ladder skips their
    precomputed score (fallback with request features, else the default) and says why. Atomic per call; ids the live
    run does not hold are counted, not marked; at most PRESCORE_INVALIDATE_MAX_IDS ids per call."""
    from jobs.invalidate import invalidate as run_invalidate
    from jobs.invalidate import read_ids
    from jobs.runtime import open_runtime

    entity_ids = read_ids(ids)
    with open_runtime() as rt:
        done = run_invalidate(rt, model, entity_ids, reason)
    if as_json:
        emit_json(done)
        return
    say(f"invalidated {done['invalidated']:,} entities of {model} in live run {done['run_id']} "
        f"({done['unknown']:,} ids not in it, not marked): reason {reason!r}")  # fmt: skip


@app.command()
@user_errors
def publish(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    run: str = typer.Option(..., "--run", "-r", help="A committed run id (see `prescore status`)."),
    force: bool = typer.Option(False, "--force", help="Override the quality gate and the older-as_of rule."),
    as_json: bool = JSON_OPT,
) -> None:
    """Load a committed run into Redis, verify it, pass the quality gate, and make it current atomically."""
    from jobs import commands

    commands.publish(model, run, force, as_json)


@app.command()
@user_errors
def rollback(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    to: str = typer.Option(None, "--to", help="A retained run id (default: the previously published run)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Point the model back at its previous published run: one pointer change, instant."""
    from jobs import commands

    commands.rollback(model, to, as_json)


@app.command()
@user_errors
def compare(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    date: str = typer.Option(
        None, "--date", "-d", help="Compare this date again (YYYY-MM-DD; fills in labels that arrived since)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """The champion against each challenger per date (PSI, rank correlation, changed decisions, realized quality),
    and each challenger's promotion gate. Without --date: the stored comparisons, newest first."""
    from jobs import commands

    commands.compare(model, parse_day(date, "--date") if date else None, as_json)


@app.command()
@user_errors
def monitor(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    date: str = typer.Option(..., "--date", "-d", help="Partition date, YYYY-MM-DD (the newest with --days)."),
    days: int = typer.Option(1, "--days", help="Monitor this many dates up to --date (>= 1)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Drift against the production version's baseline, realized quality on labels (published and served), and the
    serving mix of the prediction log, per date; stored in the catalog (a rerun replaces a date)."""
    from jobs import commands

    if days < 1:
        raise typer.BadParameter(f"--days must be >= 1, not {days}")
    commands.monitor(model, parse_day(date, "--date"), days, as_json)


@app.command()
@user_errors
def report(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    days: int = typer.Option(30, "--days", help="The newest N partition dates with a run or a monitoring report."),
    out: str = typer.Option(..., "--out", "-o", help="The HTML file to write (self-contained: opens offline)."),
) -> None:
    """One HTML page of plots from the catalog: score distributions, feature drift, calibration, realized quality
    and the serving mix of the newest --days dates (prescore score and prescore monitor fill it)."""
    from jobs import commands

    if days < 1:
        raise typer.BadParameter(f"--days must be >= 1, not {days}")
    commands.report(model, days, out)


@app.command()
@user_errors
def promote(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    version: str = typer.Option(..., "--version", help="The challenger version to make the champion."),
    force: bool = typer.Option(False, "--force", help="Promote although checks of the gate fail (recorded)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Make a challenger the champion through its promotion gate (models.<m>.promotion): the registry, then one
    pointer change to its already-loaded run. The old champion's run stays a rollback target."""
    from jobs import commands

    commands.promote(model, version, force, as_json)


@app.command()
@user_errors
def restore(
    model: str = typer.Option(None, "--model", "-m", help="One model of the models file."),
    all_models: bool = typer.Option(False, "--all", help="Every model of the models file."),
    as_json: bool = JSON_OPT,
) -> None:
    """Reload what the catalog says is live (and its rollback targets) from committed Parquet into Redis after Redis
    lost it, verify it and flip the pointer back atomically. Idempotent: nothing changes when Redis holds it all."""
    from jobs import commands

    if bool(model) == all_models:
        raise UserError("give --model NAME or --all")
    commands.restore(model, as_json)


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
    from jobs import commands

    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    if first > last:
        raise UserError(f"--start {first} is after --end {last}; swap them")
    commands.backfill(model, first, last, publish, force, max_parallel, device, skip_missing, via_airflow, as_json)


@app.command()
@user_errors
def status(
    model: str = typer.Option(None, "--model", "-m", help="One model (default: every model)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Per model: feature partitions, production model versions (with hashes), recent runs and failures."""
    from jobs import commands

    commands.status(model, as_json)


@app.command()
@user_errors
def retention(
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be removed; change nothing."),
    as_json: bool = JSON_OPT,
) -> None:
    """Enforce every store's bound: old score runs, crashed writers' leftovers, old catalog rows, old model
    versions, old prediction-log days, oversized log files. Never the live run or a rollback target."""
    from jobs import commands

    commands.retention(dry_run, as_json)


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
    Console().print(lookup_table(model, answers))


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
    run_demo(entities=entities, days=days, say=say, airflow=airflow, serve=serve, port=port)


@rollout_app.command("abort")
@user_errors
def rollout_abort(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    as_json: bool = JSON_OPT,
) -> None:
    """Stop the model's canary now: every reader answers from the champion from its next pointer read (one Redis
    write; no restart). `prescore rollout resume` gives the percent back to the models file."""
    from jobs import challengers
    from jobs.runtime import open_runtime

    with open_runtime() as rt:
        result = challengers.abort_canary(rt, model)
    if as_json:
        emit_json(result)
        return
    say(f"canary of {model} aborted: 0 % of entities from challenger {result['challenger']} (the models file says "
        f"{result['configured_percent']}); readers follow within their pointer refresh time")  # fmt: skip


@rollout_app.command("resume")
@user_errors
def rollout_resume(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    as_json: bool = JSON_OPT,
) -> None:
    """Remove an abort: the models file's rollout.percent applies again."""
    from jobs import challengers
    from jobs.runtime import open_runtime

    with open_runtime() as rt:
        result = challengers.resume_canary(rt, model)
    if as_json:
        emit_json(result)
        return
    say(f"canary of {model} follows the models file again ({result['configured_percent']} %)")


@rollout_app.command("drop")
@user_errors
def rollout_drop(
    model: str = typer.Option(..., "--model", "-m", help="Model name from the models file."),
    version: str = typer.Option(..., "--version", help="The challenger version to stop scoring in shadow."),
    as_json: bool = JSON_OPT,
) -> None:
    """Stop scoring a challenger in shadow and remove its challenger pointer (its runs stay in Parquet)."""
    from jobs import challengers
    from jobs.runtime import open_runtime

    with open_runtime() as rt:
        result = challengers.drop_challenger(rt, model, version)
    if as_json:
        emit_json(result)
        return
    say(f"challenger {version} of {model} dropped (its Redis run {result['dropped_run_id']} is retired)")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
