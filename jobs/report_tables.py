"""The tables human ``prescore`` output shows: one function per command result, each a ``rich`` table.

Pure: a result in, a table out; the CLI prints it on stderr (``jobs.console``).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table


def training_table(model: str, report: Any) -> Table:
    """``prescore train``: one row per trained kind (``jobs.train.TrainReport``)."""
    table = Table(title=f"{model}: trained on {', '.join(report.train_dates)}; hold-out {report.holdout_date}")
    names = list(dict.fromkeys(k for r in report.results for k in r.metrics))  # auc, logloss | rmse, mae
    head = names[0] if names else "auc"
    for col in ("kind", "version", "features", *names, f"production {head}", "promoted"):
        table.add_column(col)
    for r in report.results:
        prod = f"{r.production_metrics[head]:.4f}" if r.production_metrics and head in r.production_metrics else "-"
        values = (f"{r.metrics[n]:.4f}" if n in r.metrics else "-" for n in names)
        table.add_row(r.kind, r.version, str(len(r.features)), *values, prod, "yes" if r.promoted else "no")
    return table


def backfill_table(model: str, report: Any) -> Table:
    """``prescore backfill``: one row per date (``jobs.backfill.BackfillReport``)."""
    table = Table(title=f"backfill {model} {report.start}..{report.end} in {report.seconds:.0f}s")
    for col in ("date", "status", "run", "rows", "seconds", "error"):
        table.add_column(col)
    for d in report.dates:
        table.add_row(d.date, d.status, d.run_id or "-", f"{d.rows:,}", f"{d.seconds:.1f}", d.error or "")
    return table


def status_table(item: dict[str, Any]) -> Table:
    """``prescore status``: one model's ``jobs.status.model_status``."""
    table = Table(title=f"model {item['model']} (feature set {item['feature_set']})", show_header=False)
    table.add_row("feature partitions", ", ".join(item["feature_dates"]) or "none (run prescore synth)")
    for kind, info in item["production"].items():
        text = "none (run prescore train, or prescore register --promote)"
        if info and info["version"]:
            auc = info["metrics"].get("auc")
            text = f"{info['version']}  sha256 {info['sha256'][:12]}…" + (f"  AUC {auc:.4f}" if auc is not None else "")
        if info and info.get("newest_registered"):
            text += f"; newer registered, not promoted: {info['newest_registered']}"
        table.add_row(f"production {kind}", text)
    for contender in item.get("challengers", []):
        latest = contender["latest_run"]
        scored = f"newest run {latest['run_id']} ({latest['date']})" if latest else "not scored yet"
        loaded = f"; in Redis: {contender['redis_run_id']}" if contender["redis_run_id"] else "; not in Redis yet"
        table.add_row("challenger", f"{contender['version']}  sha256 {contender['sha256'][:12]}…  {scored}{loaded}")
    rollout = item.get("rollout")
    if rollout:
        override = rollout.get("override_percent")
        percent = f"{rollout['percent']:g} %" + (f" (aborted: {override:g} % now)" if override is not None else "")
        table.add_row("rollout", f"{rollout['mode']} of {rollout['challenger']}: {percent}")
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
        layer = item["store"].get("layer")
        table.add_row(
            "between nightly runs",
            "no overlays, no invalidations"
            if not layer
            else (
                f"{layer['overlays']} delta runs (newest as_of {layer['newest_as_of'] or '-'}), {layer['rescored']:,} "
                f"entities rescored, {layer['invalidated']:,} invalidated (generation {layer['generation']})"
            ),
        )
    elif item["store"].get("health", {}).get("state") != "lost":
        table.add_row("published run", "none (prescore publish)")
    promise = item["store"].get("freshness")
    if promise:
        late = {True: "[red]LATE[/red]: older than promised", False: "on time", None: "no live run"}[promise["late"]]
        upcoming = promise["next_run_at"] or "not a cron schedule"
        table.add_row("freshness", f"{late} (promise {promise['promise_s']:.0f}s); next run {upcoming}")
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
    return table


def retention_table(report: Any, dry_run: bool) -> Table:
    """``prescore retention``: what was (or would be) removed and what was kept (``jobs.retention``)."""
    verb = "would remove" if dry_run else "removed"
    table = Table(title=f"retention as of {report.now}{' (dry run)' if dry_run else ''}")
    for col in ("store", "action", "item", "reason"):
        table.add_column(col, overflow="fold")
    for r in report.removed:
        table.add_row(r.store, verb, r.item, r.reason)
    for k in report.kept:
        table.add_row(k.store, "kept", k.item, k.reason)
    return table


def lookup_table(model: str, answers: list[dict[str, Any]]) -> Table:
    """``prescore lookup``: one row per answer of ``online.lookup.lookup``."""
    table = Table(title=f"model {model}")
    for column in ("entity_id", "score", "source", "stale", "age_s", "model_version", "run_id"):
        table.add_column(column)
    for a in answers:
        age = "" if a["age_s"] is None else f"{a['age_s']:.0f}"
        table.add_row(a["entity_id"], f"{a['score']:.6f}", a["source"], str(a["stale"]), age,
                      a["model_version"] or "", a["run_id"] or "")  # fmt: skip
    return table


def _num(value: Any, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def comparison_table(model: str, rows: list[Any]) -> Table:
    """``prescore compare``: one row per (date, challenger) (``warehouse.catalog.ComparisonRecord``)."""
    table = Table(title=f"{model}: champion against challengers")
    for col in ("date", "challenger", "status", "champion", "joined", "psi", "rank corr", "decisions changed",
                "quality (champion / challenger)"):  # fmt: skip
        table.add_column(col, overflow="fold")
    for r in rows:
        if r.status != "compared":
            table.add_row(r.partition_date.isoformat(), r.challenger_version, f"[red]{r.status}[/red]",
                          r.champion_version or "-", "-", "-", "-", "-", r.reason or "")  # fmt: skip
            continue
        if r.champion_quality and r.challenger_quality:
            quality = "  ".join(f"{k} {r.champion_quality[k]:.4f} / {r.challenger_quality.get(k, float('nan')):.4f}"
                                for k in r.champion_quality)  # fmt: skip
        else:
            quality = "no labels yet"
        table.add_row(r.partition_date.isoformat(), r.challenger_version, r.status, r.champion_version or "-",
                      f"{r.n_joined:,}" if r.n_joined is not None else "-", _num(r.psi), _num(r.rank_correlation),
                      _num(r.decision_change, ".2%"), quality)  # fmt: skip
    return table


def gate_table(gate: Any) -> Table:
    """The promotion gate of one challenger (``jobs.promote.Gate``): each check, its value and bound."""
    verdict = "[green]passes[/green]" if gate.passed else "[red]not met[/red]"
    table = Table(title=f"promotion gate of {gate.model} {gate.version} (champion {gate.champion_version}): {verdict}")
    for col in ("check", "passed", "value", "bound", "detail"):
        table.add_column(col, overflow="fold")
    for c in gate.checks:
        table.add_row(c.name, "yes" if c.passed else "[red]no[/red]", _num(c.value, ".4g"), f"{c.bound:g}", c.detail)
    return table
