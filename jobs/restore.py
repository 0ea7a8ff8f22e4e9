"""Bringing Redis back to what the catalog says after it lost data: ``prescore restore`` and the reconcile DAG.

Redis is the cache; the catalog and the committed Parquet are the record. ``check_model`` says whether a model's
scores are lost (``warehouse.store_health.judge``: the catalog's live run against what Redis holds). ``restore_model``
makes Redis hold the catalog's live run again, and its rollback targets:

1. refuse a Redis that would evict score buckets; take the model's restore lock (one restore of a model at a time: a
   second one reports ``busy`` and does nothing);
2. the live run is the one the catalog's newest pointer record names. Its Parquet must be intact
   (``score_files.run_problem``: there, and every part as its manifest records it); when it is not, the restore
   refuses with one line (``RestoreRefusedError``) — or, only with ``restore_fallback_to_older_run`` in the models
   file, takes the next older run of the published history whose Parquet is intact;
3. reload it unless Redis holds it complete (``jobs.publish.load_run`` on Dask workers): a run whose metadata is
   gone is loaded afresh (its leftover buckets removed first); one whose buckets are partly gone is reopened and its
   parts written again — the same scores, so readers of it see each missing one come back and never another run's;
   then the counts and a sample are checked against Parquet (``verify_sample``);
4. flip the pointer back (``ScoreStore.restore_pointer``): one transaction, applied only while the pointer is what
   step 2 saw, so a publish or rollback meanwhile wins (``superseded``) and nothing is mixed. No quality gate (the
   run passed it when it was published) and no as_of rule (the catalog decided). The catalog records it as action
   ``restore`` (a pointer record stamped with the flip's time);
5. the rollback targets (the ``keep_runs`` runs before it in ``expected_history`` of the pointer records) are
   reloaded the same way when their Parquet is intact and put back into the history (a second transaction), so
   ``rollback`` works afterwards.

Idempotent: a second call finds everything in place and changes nothing (status ``ok``). Users see fallback or
default answers while a run is missing, and precomputed ones again from the flip on (within the readers' one-second
pointer cache).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.cluster import open_cluster
from jobs.publish import load_run, record_flip, refuse_evicting_store, verify_sample, write_parts
from jobs.runtime import Runtime
from warehouse.catalog import COMMITTED, RunRecord
from warehouse.datasets.score_files import run_problem
from warehouse.errors import CatalogError, PointerMovedError, RestoreRefusedError, StoreError
from warehouse.model_config import ModelSpec
from warehouse.rollout import split_key
from warehouse.store import RunState, ScoreStore
from warehouse.store_health import Health, StoreState, expected_history, inspect, judge

log = logging.getLogger(__name__)
LOCK_TTL_S = 1800.0  # longer than any restore (the DAG task's execution timeout); a dead holder's lock expires


@dataclass(frozen=True)
class RestoreReport:
    """What ``restore_model`` did for one model.

    ``status``: ``ok`` (Redis already held it: nothing changed), ``restored``, ``never_published``, ``busy`` (another
    restore holds the lock), ``superseded`` (a publish or rollback moved the pointer meanwhile: it stands) or
    ``refused`` (``restore_models`` only: the Parquet cannot be reloaded; ``message`` says why). ``run_id``: the run
    Redis serves afterwards; ``live_run_id``: the one the catalog named; ``action``: how the run got there
    (``present``, ``loaded``, ``repaired``); ``targets``: rollback target → what happened to it."""

    model: str
    status: str
    message: str
    run_id: str | None = None
    live_run_id: str | None = None
    action: str | None = None
    rows: int = 0
    seconds: float = 0.0
    targets: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_model(rt: Runtime, store: ScoreStore, model: str) -> Health:
    """Whether ``model``'s scores are served, never published or lost (a catalog that cannot be read: judged from
    Redis alone, ``unchecked`` when it holds no pointer)."""
    try:
        live, read = rt.catalog.live_pointer(model), True
    except CatalogError:
        live, read = None, False
    return judge(model, live, inspect(store.client, model), catalog_read=read)


class DaskOnDemand:
    """A Dask client opened on first use only (a restore that finds everything in place starts no cluster), closed
    with ``stack``; ``client``: an already open one to use instead."""

    def __init__(self, rt: Runtime, stack: contextlib.ExitStack, client: Any = None) -> None:
        self.rt, self.stack, self.client = rt, stack, client

    def get(self) -> Any:
        if self.client is None:
            self.client, _info = self.stack.enter_context(open_cluster(self.rt.settings, "cpu"))
        return self.client


def _intact(rt: Runtime, run_id: str) -> tuple[RunRecord | None, str | None]:
    """The catalog row of ``run_id`` when its Parquet can be reloaded, else ``(None, why not)``."""
    try:
        run = rt.catalog.get_run(run_id)
    except CatalogError:
        return None, "the catalog no longer knows it (retention removed the run and its Parquet)"
    if run.status != COMMITTED:
        return None, f"it is {run.status} in the catalog, not committed (retention is removing its Parquet)"
    problem = run_problem(run.output_path)
    return (run, None) if problem is None else (None, problem)


def _choose(rt: Runtime, model: str, spec: ModelSpec, history: list[str]) -> tuple[RunRecord, str | None]:
    """The run to restore (the live one, or with ``restore_fallback_to_older_run`` the next older intact one of the
    published history) and, when it is not the live one, why the live one could not be."""
    live = history[0]
    run, problem = _intact(rt, live)
    if run is not None:
        return run, None
    fix = f"publish a new run (prescore score --model {model} --date YYYY-MM-DD --publish)"
    if not spec.restore_fallback_to_older_run:
        raise RestoreRefusedError(
            f"cannot restore {model}: its live run {live} cannot be reloaded: {problem}; the models file does not let "
            f"it fall back to an older run (models.{model}.restore_fallback_to_older_run); {fix}"
        )
    for older in history[1:]:
        candidate, _ = _intact(rt, older)
        if candidate is not None:
            log.warning("live run %s of %s cannot be reloaded (%s): restoring the older run %s instead "
                        "(restore_fallback_to_older_run)", live, model, problem, older)  # fmt: skip
            return candidate, f"live run {live} cannot be reloaded: {problem}"
    raise RestoreRefusedError(
        f"cannot restore {model}: its live run {live} cannot be reloaded ({problem}) and no older run of its published "
        f"history has intact Parquet; {fix}"
    )


def _ensure_loaded(rt: Runtime, store: ScoreStore, run: RunRecord, dask: DaskOnDemand) -> str:
    """Make Redis hold ``run`` complete and verified: ``present`` (it did), ``loaded`` or ``repaired``. A promoted
    challenger's run (catalog model ``churn@<version>``) lives in its model's namespace (``split_key``)."""
    model = split_key(run.model)[0]
    info = store.get_run(model, run.run_id)
    if info is None:
        purged = store.purge_run_keys(model, run.run_id)
        if purged:
            log.info("removed %d leftover bucket keys of run %s (its metadata was lost)", purged, run.run_id)
        load_run(rt, store, run, dask.get())
        action = "loaded"
    elif info.state is RunState.LOADING and info.reopened_from is None:
        load_run(rt, store, run, dask.get())  # a half-finished load: removed and loaded again
        action = "loaded"
    else:
        if info.state is not RunState.LOADING and store.count_rows(model, run.run_id) == info.expected_rows:
            verify_sample(store, run)
            return "present"
        store.reopen_run(model, run.run_id)
        write_parts(rt, run, info.n_buckets, dask.get())
        store.finalize_run(model, run.run_id)
        action = "repaired"
    verify_sample(store, run)
    return action


def restore_model(rt: Runtime, model: str, dask: DaskOnDemand | None = None) -> RestoreReport:
    """Make Redis hold what the catalog says for ``model`` (see the module docstring). ``RestoreRefusedError`` when
    the live run's Parquet cannot be reloaded (and no fallback is allowed or possible); ``dask``: where to load
    (default: a local cluster, opened only when something must be loaded)."""
    spec = rt.config.model(model)
    t0 = time.perf_counter()

    def done(status: str, message: str, **kw: Any) -> RestoreReport:
        return RestoreReport(model, status, message, seconds=round(time.perf_counter() - t0, 3), **kw)

    with ScoreStore.from_url(rt.redis_url, socket_timeout=30.0) as store, contextlib.ExitStack() as stack:
        refuse_evicting_store(store)
        held = stack.enter_context(store.lock(model, "restore", LOCK_TTL_S))
        if not held:
            return done("busy", "another restore of it is running; nothing done (retry when it has finished)")
        records = rt.catalog.pointer_records(model)
        check = inspect(store.client, model)
        health = judge(model, records[0] if records else None, check)
        if health.state is StoreState.NEVER_PUBLISHED:
            return done("never_published", "never published: nothing to restore")
        if health.state is StoreState.AHEAD:
            return done("ok", f"nothing to restore: {health.reason}", run_id=check.pointer)
        history = expected_history(records)
        run, fell_back = _choose(rt, model, spec, history)
        dask = dask or DaskOnDemand(rt, stack)
        seen = check.pointer
        try:
            action = _ensure_loaded(rt, store, run, dask)
            targets = history[history.index(run.run_id) + 1 :][: spec.keep_runs]
            pub = store.restore_pointer(model, run.run_id, seen=seen, history=targets)
        except (PointerMovedError, StoreError) as exc:
            now = inspect(store.client, model).pointer
            if isinstance(exc, PointerMovedError) or now not in (seen, run.run_id):
                return done("superseded", f"it now serves run {now}, published during the restore; that run stays",
                            run_id=now, live_run_id=history[0])  # fmt: skip
            raise
        changed = action != "present" or not pub.already_current
        if changed:
            detail: dict[str, Any] = {"action": action, "rows": run.rows_out, "replaced": seen}
            if fell_back:
                detail["fell_back"] = fell_back
            record_flip(rt, model, "restore", run.run_id, seen if fell_back is None else history[0], at=pub.at,
                        detail=detail)  # fmt: skip
            log.warning("restored run %s of %s into Redis (%s, %s rows)", run.run_id, model, action, run.rows_out)
        outcome = _targets(rt, store, model, run.run_id, targets, dask)
        if any(v in ("loaded", "repaired") for v in outcome.values()):
            changed = True
        rows = run.rows_out or 0
        verb = (
            f"restored run {run.run_id} ({action}, {rows:,} rows)"
            if changed
            else (f"nothing to restore: Redis serves run {run.run_id}, complete")
        )
        note = f" instead of {history[0]} ({fell_back})" if fell_back else ""
        return done("restored" if changed else "ok", f"{verb}{note}", run_id=run.run_id, live_run_id=history[0],
                    action=action, rows=rows, targets=outcome)  # fmt: skip


def _targets(
    rt: Runtime, store: ScoreStore, model: str, run_id: str, targets: list[str], dask: DaskOnDemand
) -> dict[str, str]:
    """Reload the rollback targets whose Parquet is intact and put them back into the history after ``run_id``."""
    outcome: dict[str, str] = {}
    for target in targets:
        run, problem = _intact(rt, target)
        if run is None:
            outcome[target] = f"not restored: {problem}"
            continue
        try:
            outcome[target] = _ensure_loaded(rt, store, run, dask)
        except StoreError as exc:
            outcome[target] = f"not restored: {exc}"
    kept = [t for t, how in outcome.items() if not how.startswith("not restored")]
    try:
        store.restore_pointer(model, run_id, seen=run_id, history=kept)
    except PointerMovedError:
        log.info("the pointer of %s moved during the restore: its rollback targets were left out", model)
    return outcome


def restore_models(rt: Runtime, models: list[str], only_lost: bool = False) -> list[RestoreReport]:
    """``restore_model`` for each of ``models`` on one Dask cluster (opened when a model needs a load); a refusal
    becomes a ``refused`` report instead of stopping the others. ``only_lost``: restore a model only when
    ``check_model`` says its scores are lost (the reconcile loop: a healthy store costs a few Redis reads and one
    catalog query per model, no cluster)."""
    reports = []
    with contextlib.ExitStack() as stack:
        dask = DaskOnDemand(rt, stack)
        for model in models:
            if only_lost:
                with ScoreStore.from_url(rt.redis_url) as store:
                    health = check_model(rt, store, model)
                if not health.lost:
                    reports.append(RestoreReport(model, "ok", health.reason, run_id=health.served_run_id,
                                                 live_run_id=health.live_run_id))  # fmt: skip
                    continue
                log.error("scores of %s are lost: %s; restoring", model, health.reason)
            try:
                reports.append(restore_model(rt, model, dask))
            except RestoreRefusedError as exc:
                log.error("%s", exc)
                reports.append(RestoreReport(model, "refused", str(exc)))
    return reports
