"""Publishing committed runs to the Redis score store, rolling back, and retention.

``publish_run`` (what `prescore publish` and `prescore score --publish` call):

1. the run must be committed in the catalog and belong to the model;
2. load it into its own Redis namespace unless already loaded: Dask workers read the committed Parquet parts
   and write them straight to Redis (nothing funnels through this process). Each loader task owns a range of the
   run's buckets (``PRESCORE_LOAD_ROWS`` rows each, ``load_buckets``): it reads the id and score columns of every part,
   keeps the rows of its buckets and writes them in one batch, so every bucket arrives whole and goes as one
   ``RESTORE`` of its listpack (``warehouse.store.writer``) instead of many ``HSET`` s; a run of one task loads
   inline. A half-loaded namespace left by a crashed loader is removed and loaded again;
3. verify, before the pointer moves: the entity count equals the Parquet rows, and a random sample read back
   from the run's namespace equals Parquet exactly. A run that is already current and was not loaded again by
   this call (a retried publish) is not sampled here: after the pointer moved, the one check is the DAG's
   ``verify_online`` (``jobs.orchestration``), through the reader the online service uses;
4. quality gate: PSI of the run's score distribution (deciles of the current run's, ``jobs.scoring.run_psi``: any
   real-valued score) against the current run's above ``max_psi`` blocks the
   publish unless ``force`` (the block is recorded in the catalog);
5. one atomic pointer change, recorded in the catalog; then runs beyond ``keep_runs`` and abandoned loads are
   removed in bounded batches.

A run whose scores are older than the live run's (``warehouse.store.older_than_live``: history never replaces the
live run) is declined before step 2 unless ``force``: nothing is loaded, and the report's ``declined`` says why. So
is a champion run scored by a version that is no longer production (a challenger was promoted, or a training run
promoted a new version, after it was scored): checked before the load and again just before the flip, so a nightly
publish racing ``prescore promote`` does not put the demoted version back.
The store applies the same rule inside the pointer transaction, for a newer run published meanwhile.

The pointer lives in Redis and its record in the catalog, so no transaction spans both. Each record carries the
time the store stamped on the flip, so the catalog orders pointer changes as Redis made them. When the catalog
refuses the record after the flip (unreachable, read-only after a failover), ``CatalogError`` says so, and the next
``publish_run`` or ``rollback_model`` of the model first records the live pointer the catalog missed (action
``reconcile``) before it changes anything: a pointer change never stays without its catalog record. A pointer
published *before* the catalog's newest record is not a missed change but Redis gone back to older data
(``warehouse.store_health``): it is never recorded, and ``jobs.restore`` brings back what the catalog says.

Publishing (and restoring) refuses a Redis whose ``maxmemory-policy`` would evict score buckets (``allkeys-*``).

A challenger's run (catalog model ``warehouse.rollout.challenger_key``: ``churn@<version>``) goes through the same
steps into the model's own Redis namespace, but its flip moves the challenger pointer (``ScoreStore.
publish_challenger``), never the live one; the older-run rule and the PSI gate compare it with the challenger's
previous run, and its publications are recorded under the challenger key.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from jobs.cluster import open_cluster
from jobs.runtime import Runtime
from warehouse.catalog import COMMITTED, RunRecord
from warehouse.datasets.features import read_parquet
from warehouse.datasets.score_files import committed_parts
from warehouse.datasets.storage import StoragePath, as_path
from warehouse.errors import CatalogError, QualityGateError, StoreError
from warehouse.rollout import split_key
from warehouse.store import RunInfo, RunState, ScoreStore, buckets, id_array, older_than_live
from warehouse.store_health import eviction_policies, eviction_problem, inspect, judge, served_after

log = logging.getLogger(__name__)
LOAD_ROWS = 4_000_000  # rows per loader task (PRESCORE_LOAD_ROWS's default): a range of buckets, written whole
SAMPLE_ROWS = 1000
ORPHAN_AFTER_S = 3600.0


@dataclass(frozen=True)
class PublishReport:
    model: str
    run_id: str
    previous_run_id: str | None
    loaded: bool  # False when the run was already loaded in Redis
    rows: int
    psi: float | None
    forced: bool
    already_current: bool
    removed_runs: dict[str, str]
    declined: str | None = None  # why nothing changed: the run is older than the live one (``older_than_live``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_buckets(
    bucket_range: tuple[int, int], parts: list[str], model: str, run_id: str, n_buckets: int, redis_url: str
) -> int:
    """Write the rows of buckets ``[lo, hi)`` of a committed run, read from every one of its Parquet parts (local
    paths or URLs), into the run's Redis namespace in one batch (on a Dask worker). Returns the rows written."""
    lo, hi = bucket_range
    ids_of: list[pa.Array] = []
    scores_of: list[np.ndarray] = []
    for path in parts:
        table = read_parquet(as_path(path), columns=["entity_id", "score"])
        ids = id_array(table.column("entity_id"))
        scores = table.column("score").to_numpy()
        if (lo, hi) != (0, n_buckets):
            bucket = buckets(ids, n_buckets)
            keep = np.flatnonzero((bucket >= lo) & (bucket < hi))
            ids, scores = ids.take(pa.array(keep)), scores[keep]
        ids_of.append(ids)
        scores_of.append(scores)
    if not ids_of:
        return 0
    all_ids = pa.concat_arrays(ids_of) if len(ids_of) > 1 else ids_of[0]
    store = ScoreStore.from_url(redis_url)
    try:
        return store.writer(model, run_id).write_batch(all_ids, np.concatenate(scores_of))
    finally:
        store.close()


def load_ranges(n_buckets: int, rows: int, rows_per_task: int = LOAD_ROWS) -> list[tuple[int, int]]:
    """The bucket ranges of the loader tasks of a run of ``rows`` rows in ``n_buckets`` buckets: about
    ``rows_per_task`` rows each (the bucket of an id is a hash: rows spread evenly over the buckets)."""
    tasks = max(1, min(n_buckets, -(-max(rows, 1) // rows_per_task)))
    edges = [n_buckets * i // tasks for i in range(tasks + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def _parts(run: RunRecord) -> list[StoragePath]:
    """The parts its commit manifest lists (``datasets.score_files``): an uncommitted output is never loaded."""
    parts = committed_parts(run.output_path) if run.output_path else None
    if parts is None:
        raise StoreError(f"run {run.run_id} has no committed output at {run.output_path}; rescore the partition")
    return parts


def _as_of(parts: list[StoragePath]) -> float:
    latest = max(pc.max(read_parquet(p, columns=["as_of"]).column("as_of")).as_py() for p in parts)
    return float(latest.timestamp())


def write_parts(rt: Runtime, run: RunRecord, n_buckets: int, client: Any = None) -> int:
    """Write every committed part of ``run`` into its Redis namespace (which must be loading, in ``n_buckets``
    buckets) from Dask workers, a range of buckets per task (``load_ranges``; ``client``: a Dask client; None: a
    local cluster for this call, or none for one task). Returns the rows written."""
    parts = [str(p) for p in _parts(run)]
    ranges = load_ranges(n_buckets, run.rows_out or 0, rt.settings.load_rows)
    if client is None:
        with open_cluster(rt.settings, "cpu", tasks=len(ranges)) as (own, _info):
            return write_parts(rt, run, n_buckets, own)
    model = split_key(run.model)[0]  # a challenger's run loads into its model's namespace
    futures = client.map(load_buckets, ranges, parts=parts, model=model, run_id=run.run_id, n_buckets=n_buckets,
                         redis_url=rt.redis_url, pure=False)  # fmt: skip
    written = int(sum(client.gather(futures)))
    log.info("loaded %s rows of run %s into Redis", f"{written:,}", run.run_id)
    return written


def load_run(rt: Runtime, store: ScoreStore, run: RunRecord, client: Any = None, as_of: float | None = None) -> RunInfo:
    """Load a committed run into Redis from its Parquet parts, in parallel on Dask workers, and verify counts.
    ``as_of``: the run's newest score time (epoch s), when the caller already read it from the parts."""
    as_of = _as_of(_parts(run)) if as_of is None else as_of  # first: a run without committed parts changes nothing
    model = split_key(run.model)[0]
    existing = store.get_run(model, run.run_id)
    if existing is not None and existing.state is RunState.LOADING:
        log.warning("run %s has a half-finished load in Redis; removing it and loading again", run.run_id)
        store.abort_run(model, run.run_id)
    created = store.create_run(model, run.run_id, run.model_version, as_of, run.rows_out or 0)
    write_parts(rt, run, created.n_buckets, client)
    return store.finalize_run(model, run.run_id)


def refuse_evicting_store(store: ScoreStore) -> None:
    """``StoreError`` when the store's Redis would evict score buckets (``warehouse.store_health``); a policy that
    cannot be read (``CONFIG`` refused by a managed Redis) is logged and accepted."""
    policies = eviction_policies(store.client)
    if policies is None:
        log.info("could not read maxmemory-policy (CONFIG refused); make sure it is noeviction for the score store")
    problem = eviction_problem(policies)
    if problem:
        raise StoreError(f"refusing to load scores: {problem}")


def verify_sample(store: ScoreStore, run: RunRecord, seed: int = 0) -> None:
    """Read back a random sample of the run from Redis and compare it with Parquet, bit for bit."""
    parts = _parts(run)
    rng = np.random.default_rng(seed)
    table = read_parquet(parts[int(rng.integers(len(parts)))], columns=["entity_id", "score"])
    if table.num_rows == 0:
        return
    idx = rng.choice(table.num_rows, size=min(SAMPLE_ROWS, table.num_rows), replace=False)
    sample = table.take(np.sort(idx))
    model = split_key(run.model)[0]
    mismatches = store.sample_check(model, run.run_id, sample.column("entity_id"), sample.column("score"))
    if mismatches:
        first = mismatches[0]
        raise StoreError(
            f"run {run.run_id} failed verification: {len(mismatches)} of {sample.num_rows} sampled entities differ "
            f"from Parquet (e.g. {first.entity_id}: stored {first.actual}, expected {first.expected}); "
            "publish again to reload it"
        )


def _gate(rt: Runtime, current: RunInfo | None, run: RunRecord) -> tuple[float | None, str | None]:
    """PSI of ``run`` against ``current`` (the run its flip replaces) and that run's id."""
    if current is None or current.run_id == run.run_id:
        return None, None
    try:
        previous = rt.catalog.get_run(current.run_id)
    except CatalogError:
        return None, current.run_id
    from jobs import scoring  # imports xgboost (seconds): only a publish that gates needs it, never a restore

    value = scoring.run_psi(previous.report, run.report)
    return (None if value is None else round(value, 6)), current.run_id


def record_flip(rt: Runtime, model: str, action: str, run_id: str, previous_run_id: str | None, **kw: Any) -> None:
    """Record a pointer change that already happened in Redis (``at``: the time the store stamped on it);
    ``CatalogError`` when the catalog refuses it."""
    try:
        rt.catalog.record_publication(model=model, action=action, run_id=run_id, previous_run_id=previous_run_id, **kw)
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CatalogError(
            f"run {run_id} of model {model} is live in Redis, but the catalog could not record the {action} "
            f"({reason}); once the catalog is back, the next publish or rollback of {model} records it first"
        ) from exc


def reconcile_pointer(rt: Runtime, store: ScoreStore, model: str) -> str | None:
    """Record the live pointer when the catalog missed its change (see module docstring). Returns the run id
    recorded, or None when the catalog's newest pointer record already names the current run, or names a run
    recorded after the current one was published (Redis went back: nothing to record; ``prescore restore``)."""
    current = store.current_run(model)
    if current is None:
        return None
    last = rt.catalog.live_pointer(model)
    recorded = last.run_id if last else None
    if recorded == current.run_id:
        return None
    if last is not None and not served_after(current, last):
        log.warning("Redis serves run %s of %s, published before the catalog's live run %s: Redis went back to "
                    "older data; not recording it (prescore restore brings back the live run)",
                    current.run_id, model, recorded)  # fmt: skip
        return None
    log.warning("catalog missed a pointer change of %s (records %s, Redis serves %s); recording it now",
                model, recorded, current.run_id)  # fmt: skip
    record_flip(rt, model, "reconcile", current.run_id, recorded, at=current.published_at,
                detail={"reason": "pointer changed while the catalog was unavailable"})  # fmt: skip
    return current.run_id


def _replaced(store: ScoreStore, model: str, challenger: str | None) -> RunInfo | None:
    """The run a flip would replace: the live run, or the challenger's current run."""
    if challenger is None:
        return store.current_run(model)
    run_id = store.challengers(model).get(challenger)
    return store.get_run(model, run_id) if run_id else None


def _demoted(rt: Runtime, model: str, run: RunRecord, challenger: str | None) -> str | None:
    """Why a champion run must not go live: it was scored by a version that is no longer production."""
    production = rt.registry.production_version(model, "primary")
    if challenger is not None or production is None or run.model_version == production:
        return None
    return (f"run {run.run_id} was scored by version {run.model_version}, but production is {production} now (promoted "
            f"after it was scored): rescore the partition, or publish with --force")  # fmt: skip


def publish_run(rt: Runtime, model: str, run_id: str, force: bool = False) -> PublishReport:
    """Verify, gate and publish a committed run (see module docstring). ``model``: the model, or a challenger key
    (``warehouse.rollout.challenger_key``) for a challenger's run."""
    base, challenger = split_key(model)
    spec = rt.config.model(base)
    run = rt.catalog.get_run(run_id)
    if run.model != model:
        raise StoreError(f"run {run_id} belongs to model {run.model!r}, not {model!r}")
    if run.status != COMMITTED:
        raise StoreError(f"run {run_id} is {run.status}: only committed runs can be published")
    store = ScoreStore.from_url(rt.redis_url)
    try:
        refuse_evicting_store(store)
        if challenger is None:
            reconcile_pointer(rt, store, model)
        info = store.get_run(base, run_id)
        loaded = info is None or info.state is RunState.LOADING
        current = _replaced(store, base, challenger)
        as_of = _as_of(_parts(run)) if loaded else info.as_of.timestamp()  # type: ignore[union-attr]
        if not force:  # decided before anything is loaded; the store applies the same rule inside its flip
            declined = older_than_live(run_id, datetime.fromtimestamp(as_of, UTC), current)
            declined = declined or _demoted(rt, base, run, challenger)
            if declined:
                return _declined(run, current.run_id if current else None, declined)
        if loaded:
            load_run(rt, store, run, as_of=as_of)
        current = _replaced(store, base, challenger)
        if loaded or current is None or current.run_id != run_id:
            verify_sample(store, run)  # the gate: the pointer has not moved to this run yet
        psi, current_id = _gate(rt, current, run)
        if psi is not None and psi > spec.max_psi and not force:
            rt.catalog.record_publication(
                model=model, action="blocked", run_id=run_id, previous_run_id=current_id,
                detail={"psi": psi, "max_psi": spec.max_psi},
            )  # fmt: skip
            raise QualityGateError(
                f"quality gate blocked run {run_id}: score PSI {psi:.4f} against current run {current_id} exceeds "
                f"max_psi {spec.max_psi}; inspect the run, then publish with --force to override"
            )
        demoted = None if force else _demoted(rt, base, run, challenger)  # promoted meanwhile?
        if demoted:
            return _declined(run, current_id, demoted, loaded=loaded)
        if challenger is None:
            pub = store.publish(model, run_id, force=force)
        else:
            pub = store.publish_challenger(base, challenger, run_id, force=force)
        if pub.declined:  # a newer run went live between the check above and the flip
            return _declined(run, pub.previous_run_id, pub.declined, loaded=loaded)
        if not pub.already_current:
            record_flip(rt, model, "publish", run_id, pub.previous_run_id, forced=force, at=pub.at,
                        detail={"psi": psi, "rows": run.rows_out})  # fmt: skip
        cleaned = store.cleanup(base, keep_runs=spec.keep_runs, orphan_after_s=ORPHAN_AFTER_S)
        return PublishReport(
            model=model, run_id=run_id, previous_run_id=pub.previous_run_id, loaded=loaded,
            rows=run.rows_out or 0, psi=psi, forced=force, already_current=pub.already_current,
            removed_runs=dict(cleaned.removed),
        )  # fmt: skip
    finally:
        store.close()


def _declined(run: RunRecord, live_run_id: str | None, reason: str, loaded: bool = False) -> PublishReport:
    log.info("run %s of %s not published: %s", run.run_id, run.model, reason)
    return PublishReport(
        model=run.model, run_id=run.run_id, previous_run_id=live_run_id, loaded=loaded, rows=run.rows_out or 0,
        psi=None, forced=False, already_current=False, removed_runs={}, declined=reason,
    )  # fmt: skip


def rollback_model(rt: Runtime, model: str, to_run: str | None = None) -> dict[str, Any]:
    """Point the model back at its previous published run (or ``to_run``); recorded in the catalog."""
    rt.config.model(model)
    store = ScoreStore.from_url(rt.redis_url)
    try:
        health = judge(model, rt.catalog.live_pointer(model), inspect(store.client, model))
        if health.lost:
            raise StoreError(f"cannot roll back {model}: {health.reason}; restore it first (prescore restore --model "
                             f"{model}: it brings back the live run and its rollback targets)")  # fmt: skip
        reconcile_pointer(rt, store, model)
        pub = store.rollback(model, to_run=to_run)
    finally:
        store.close()
    record_flip(rt, model, "rollback", pub.run_id, pub.previous_run_id, at=pub.at)
    return {"model": model, "run_id": pub.run_id, "previous_run_id": pub.previous_run_id, "at": pub.at.isoformat()}


def store_status(rt: Runtime, model: str, now: datetime | None = None) -> dict[str, Any]:
    """The model's runs in Redis: current run, its as_of and age, retained runs, the current run's overlay layer
    (``layer``: delta runs and invalidations between nightly runs, ``LayerInfo.describe``; None without one) and
    the freshness contract (``warehouse.schedule.contract``: promise, late, next run) at ``now`` (default: the
    current time)."""
    from warehouse import schedule

    now = now or datetime.now(UTC)
    store = ScoreStore.from_url(rt.redis_url)
    try:
        current = store.current_run(model)
        runs = store.list_runs(model)
        layer = store.overlays.live(model)[1] if current is not None else None
    finally:
        store.close()
    spec = rt.config.model(model)
    out: dict[str, Any] = {"current": None, "runs": [{"run_id": r.run_id, "state": r.state.value,
                                                    "rows": r.loaded_rows} for r in runs]}  # fmt: skip
    out["layer"] = layer.describe() if layer is not None and current is not None else None
    promise = schedule.contract(spec.schedule, spec.staleness.max_age_s, current.as_of if current else None, now)
    upcoming = promise["next_run_at"]  # as text, like as_of: the status goes to JSON and Airflow's XCom
    out["freshness"] = {"promise_s": promise["promise_s"], "late": promise["late"],
                        "next_run_at": upcoming.isoformat() if upcoming else None}  # fmt: skip
    if current is not None:
        age = max(0.0, (now - current.as_of).total_seconds())
        state = spec.staleness.freshness(age)
        out["current"] = {
            "run_id": current.run_id, "model_version": current.model_version, "as_of": current.as_of.isoformat(),
            "age_s": round(age), "max_age_s": spec.staleness.max_age_s, "state": state, "rows": current.loaded_rows,
        }  # fmt: skip
    return out
