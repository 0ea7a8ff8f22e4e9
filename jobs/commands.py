"""What the batch ``prescore`` commands do once ``jobs.cli`` has parsed their options: one function per command.

Each opens a ``Runtime`` for its duration (``open_runtime``), calls one function of ``jobs/``, and prints the
result: ``--json`` as JSON on stdout, otherwise lines and tables on stderr (``jobs.console``, ``jobs.report_tables``).
A user mistake raises ``UserError`` (``jobs.console.user_errors`` turns it into exit code 1); a backfill with failed
dates ends with exit code 1 after its table. The ``jobs`` modules behind them are imported on first use.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import typer

from jobs.console import emit_json, err, say
from jobs.progress import progress_bar
from jobs.report_tables import backfill_table, retention_table, status_table, training_table
from jobs.runtime import open_runtime
from warehouse.errors import OlderRunError, UserError


def synth(
    entities: int, days: int, end_date: dt.date | None, feature_set: str, seed: int | None, as_json: bool
) -> None:
    from jobs.synth import synth as run_synth

    with open_runtime() as rt:
        end = end_date or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
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


def train(model: str, end_date: dt.date | None, as_json: bool, challenger: bool = False) -> None:
    from jobs.train import train_model

    with open_runtime() as rt:
        report = train_model(rt, model, end_date, challenger=challenger)
    if as_json:
        emit_json(report.to_dict())
        return
    err.print(training_table(model, report))


def register(
    model: str,
    role: str,
    path: Path | None,
    from_mlflow: str | None,
    features: list[str] | None,
    promote: bool,
    as_json: bool,
    challenger: bool = False,
    reference_date: dt.date | None = None,
) -> None:
    from jobs.register import register_model

    with open_runtime() as rt:
        report = register_model(rt, model, role, path, from_mlflow=from_mlflow, features=features, promote=promote,
                                challenger=challenger, reference_date=reference_date)  # fmt: skip
    if as_json:
        emit_json(report.to_dict())
        return
    state = "production" if report.promoted else f"not production (production stays {report.previous_production})"
    if report.challenger:
        state = f"a challenger of production {report.previous_production} (scored in shadow from the next run)"
    probe = report.probe
    probed = (
        f"probe on {probe['rows']} rows of {probe['date']}: {probe['min']:.4g}..{probe['max']:.4g}"
        if probe
        else ("no feature partition to probe yet")
    )
    err.print(f"registered {model} {role} {report.version} ({report.objective}, {len(report.features)} features), "
              f"{state}; {probed}")  # fmt: skip


def score(model: str, day: dt.date, device: str, publish: bool, force: bool, as_json: bool) -> None:
    from jobs.score import score_partition
    from jobs.shadow import shadow

    with open_runtime() as rt:
        report = score_partition(rt, model, day, device=device, force=force)
        result: dict[str, Any] = {"run": report.to_dict()}
        if publish:
            from jobs.publish import publish_run

            publication = publish_run(rt, model, report.run_id, force=force)
            if publication.declined:
                raise OlderRunError(f"run {report.run_id} committed but not published: {publication.declined}")
            result["publication"] = publication.to_dict()
        checked = rt.catalog.get_run(report.run_id).input_fingerprint  # the input the champion's run validated
        result["challengers"] = shadow(rt, model, day, device=device, force=force, validated=checked, publish=publish)
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
    for shadowed in result["challengers"]:
        what = shadowed.get("error") or f"run {shadowed['run_id']} ({shadowed['status']})"
        err.print(f"challenger {shadowed['version']}: {what}")


def publish(model: str, run: str, force: bool, as_json: bool) -> None:
    from jobs.publish import publish_run

    with open_runtime() as rt:
        report = publish_run(rt, model, run, force=force)
    if report.declined:
        raise OlderRunError(f"not published: {report.declined}")
    if as_json:
        emit_json(report.to_dict())
        return
    note = " (already current)" if report.already_current else ""
    err.print(f"published run {report.run_id} of {model}{note}; previous {report.previous_run_id}; psi={report.psi}")


def rollback(model: str, to: str | None, as_json: bool) -> None:
    from jobs.publish import rollback_model

    with open_runtime() as rt:
        result = rollback_model(rt, model, to)
    if as_json:
        emit_json(result)
        return
    err.print(f"{model} now serves run {result['run_id']} (was {result['previous_run_id']})")


COMPARE_ROWS = 60  # stored comparisons `prescore compare` lists, newest first


def compare(model: str, day: dt.date | None, as_json: bool) -> None:
    """``day``: compare that date again (``jobs.compare.compare_date``); None: list the stored comparisons."""
    from jobs.compare import compare_date
    from jobs.promote import check_gate
    from jobs.report_tables import comparison_table, gate_table

    with open_runtime() as rt:
        rt.config.model(model)  # unknown model → UnknownModelError
        rows = compare_date(rt, model, day) if day else rt.catalog.comparisons(model, limit=COMPARE_ROWS)
        gates = [check_gate(rt, model, version) for version in rt.registry.challengers(model)]
    if as_json:
        emit_json({"model": model, "comparisons": [r.to_dict() for r in rows], "gates": [g.to_dict() for g in gates]})
        return
    if not rows and not gates:
        say(f"{model} has no challengers and no comparisons (prescore train|register --challenger adds one)")
        return
    err.print(comparison_table(model, rows))
    for gate in gates:
        err.print(gate_table(gate))


def monitor(model: str, day: dt.date, days: int, as_json: bool) -> None:
    """``jobs.monitor``: one date, or ``days`` dates up to ``day``; a summary per date."""
    from jobs.monitor import monitor_date, monitor_range

    with open_runtime() as rt:
        rt.config.model(model)  # unknown model → UnknownModelError
        rows = monitor_range(rt, model, day, days) if days > 1 else [monitor_date(rt, model, day)]
    if as_json:
        emit_json({"model": model, "reports": [r.to_dict() for r in rows]})
        return
    for r in rows:
        quality = r.published_quality or {}
        shown = " ".join(f"{k}={quality[k]:.4f}" for k in ("auc", "logloss", "ece", "rmse", "mae", "bias")
                         if isinstance(quality.get(k), float))  # fmt: skip
        mix = (r.serving or {}).get("all", {})
        served = f" ({mix.get('answers')} answers, miss rate {mix.get('miss_rate')})" if mix else ""
        drifted = "" if r.n_drifted is None else f" ({r.n_drifted} of {len(r.features)} features drifted)"
        err.print(f"{model} {r.partition_date} (run {r.run_id}, version {r.model_version}): drift {r.drift_status}"
                  f"{drifted}, score psi {r.score_psi_previous} vs previous run; quality {r.quality_status} {shown}; "
                  f"serving {r.serving_status}{served}")  # fmt: skip
        for note in r.notes:
            err.print(f"  {note}")


def report(model: str, days: int, out: str) -> None:
    """``jobs.report_page``: the page of ``model``'s newest ``days`` dates, written to ``out``."""
    from jobs.report_page import collect, render

    path = Path(out)
    if not path.parent.is_dir():
        raise UserError(f"--out {out}: directory {path.parent} does not exist; create it or choose another path")
    with open_runtime() as rt:
        data = collect(rt, model, days)
    path.write_text(render(data), encoding="utf-8")
    say(f"wrote {path} ({len(data.dates)} dates, {len(data.runs)} runs, {len(data.reports)} monitoring reports)")


def promote(model: str, version: str, force: bool, as_json: bool) -> None:
    from jobs.promote import promote_challenger

    with open_runtime() as rt:
        report = promote_challenger(rt, model, version, force=force)
    if as_json:
        emit_json(report.to_dict())
        return
    failing = [c["name"] for c in report.gate["checks"] if not c["passed"]]
    note = f" (FORCED past {', '.join(failing)})" if failing else ""
    say(f"promoted {model} {version}{note}: production was {report.previous_version}; {model} serves run "
        f"{report.run_id} of {report.partition_date} (was {report.previous_run_id}); back with prescore rollback "
        f"--model {model}")  # fmt: skip


def restore(model: str | None, as_json: bool) -> None:
    """``model``: one model; None: every model of the models file."""
    from jobs.restore import restore_models

    with open_runtime() as rt:
        names = [model] if model else rt.config.model_names
        for name in names:
            rt.config.model(name)  # unknown model → UnknownModelError
        reports = restore_models(rt, names)
    if as_json:
        emit_json([r.to_dict() for r in reports])
    else:
        for r in reports:
            if r.status == "refused":
                continue
            targets = "; ".join(f"{t} {how}" for t, how in r.targets.items())
            took = f" in {r.seconds:.1f} s" if r.status == "restored" else ""
            say(f"{r.model}: {r.message}{took}" + (f"; rollback targets: {targets}" if targets else ""))
    failed = [r for r in reports if r.status in ("refused", "busy")]
    if failed:
        raise UserError("; ".join(r.message if r.status == "refused" else f"{r.model}: {r.message}" for r in failed))


def backfill(
    model: str, first: dt.date, last: dt.date, publish: str, force: bool, max_parallel: int, device: str,
    skip_missing: bool, via_airflow: bool, as_json: bool,
) -> None:  # fmt: skip
    with open_runtime() as rt:
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
    if as_json:
        emit_json(report.to_dict())
    else:
        err.print(backfill_table(model, report))
        err.print(report.publish_note or f"published: {report.published}")
    if any(d.status == "failed" for d in report.dates):
        raise typer.Exit(1)


def status(model: str | None, as_json: bool) -> None:
    """``model``: one model; None: every model of the models file."""
    from jobs.status import model_status

    with open_runtime() as rt:
        if model:
            rt.config.model(model)  # unknown model → UnknownModelError
        names = [model] if model else rt.config.model_names
        data = [model_status(rt, name) for name in names]
    if as_json:
        emit_json(data)
        return
    for item in data:
        err.print(status_table(item))


def retention(dry_run: bool, as_json: bool) -> None:
    from jobs.retention import apply_retention

    with open_runtime() as rt:
        report = apply_retention(rt, now=dt.datetime.now(dt.UTC), dry_run=dry_run)
    if as_json:
        emit_json(report.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    err.print(retention_table(report, dry_run))
    for note in report.notes:
        say(note)
    counts = ", ".join(f"{n} from {store}" for store, n in report.counts().items()) or "nothing"
    err.print(f"{verb} {counts} ({report.bytes_freed:,} bytes)", highlight=False)
