"""Delta scoring between nightly runs: the new intra-day delta drops of a model's feature set → one committed delta run.

``score_deltas`` is what `prescore delta` and the ``prescore_delta`` DAG call. Drops live inside the feature
partition they update (``warehouse.datasets.deltas``: ``dt=YYYY-MM-DD/delta=HHMMSS/``, drop id ``YYYY-MM-DD/HHMMSS``).
Steps:

1. list the complete drops (``--since T``: only those at or after T) and keep the ones no committed delta run scored
   (``Catalog.scored_drops``): nothing new is a no-op whose report says so;
2. refuse — not hold — unless every new drop is of the date whose nightly run is live (``Catalog.live_pointer``) and
   that run was scored by the production version: a delta is an overlay of the live run, so a drop of another date
   (or with nothing live) raises ``DeltaRefusedError`` naming the live run and what to do, and nothing is scored. The
   refusal is for the whole call, as is a contract violation: drops apply in drop-id order, so a later drop is never
   scored past an earlier one that is refused;
3. record a ``staged`` delta run (``warehouse.catalog.deltas``) listing the drop ids, then validate each drop against
   the feature set's contract (``contracts.validate_files``): a violation fails the run before anything is written;
4. map the drops' row groups over Dask with the nightly job's own task (``jobs.score.score_chunk``, planned by
   ``plan_chunks``): parts in drop order, so within the run a later row of an entity supersedes an earlier one;
5. commit: the manifest, one rename of ``.delta-staging-<run_id>`` to ``<scores partition>/delta=<run_id>/``
   (``warehouse.datasets.score_files``; on object storage the manifest written last is the commit), then one catalog
   transaction marks the run committed and claims its drop ids. A drop another run claimed first fails this run and
   removes its Parquet: a drop is scored once.

A job killed anywhere leaves no committed delta run: the catalog, not the directory listing, names committed delta
runs, and claims happen at commit, so a rerun scores the same drops again. A run left ``staged`` by a killed job is
marked failed after ``ABANDON_AFTER_S`` and its staging directory is removed by the next delta run of the date.

6. publish (``publish_deltas``, also on a no-op call): every committed delta run of the live base run that its
   overlay layer does not hold yet, oldest first, goes into the layer (``warehouse.store.overlays``: one new
   generation and one pointer flip each; each entity served with its own score and ``as_of``). So a job killed
   between commit and publish, or a Redis that was down, is mended by the next call. A nightly publish that lands
   first wins: the delta run stays committed, is not published (``DeltaRefusedError``: its base is no longer live),
   and the new nightly run serves its entities as of that night. Bounds (``PRESCORE_OVERLAY_MAX_ENTITIES``,
   ``PRESCORE_OVERLAY_MAX_DELTAS``) refuse a publish beyond them, saying to run the nightly job.

Time is read from ``clock`` only.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from jobs.cluster import ClusterInfo, open_cluster, resolve_device
from jobs.invalidate import overlays_for
from jobs.runtime import Runtime
from jobs.score import ModelRef, plan_chunks, predict_threads, score_chunk, scores_partition_dir
from warehouse.catalog import ABANDON_AFTER_S, COMMITTED, STAGED, RunRecord, new_run_id, utcnow
from warehouse.datasets import contracts, score_files, storage
from warehouse.datasets import features as fstore
from warehouse.datasets.deltas import Drop, complete_drops
from warehouse.datasets.storage import ObjectPath, StoragePath
from warehouse.errors import CatalogError, ContractViolationError, DeltaRefusedError, PrescoreError, UserError
from warehouse.store import BaseNotLiveError, ScoreStore

log = logging.getLogger(__name__)
NOOP = "no-op"  # ``DeltaReport.status`` when there was no new drop


@dataclass
class DeltaReport:
    model: str
    status: str  # committed | no-op
    message: str
    run_id: str | None = None
    base_run_id: str | None = None
    partition_date: str | None = None
    model_version: str | None = None
    drop_ids: list[str] = field(default_factory=list)
    rows_out: int = 0
    as_of: str | None = None
    output_path: str | None = None
    cluster: str | None = None
    published: list[str] = field(default_factory=list)  # delta runs published into the overlay layer by this call

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_drops(rt: Runtime, model: str, since: dt.datetime | None = None) -> list[Drop]:
    """The complete drops of ``model``'s feature set (at or after ``since``) that no committed delta run scored,
    in drop-id order."""
    spec = rt.config.model(model)
    fs = rt.config.feature_set(spec.feature_set)
    days = fstore.available_dates(rt.home, spec.feature_set, fs)
    if since is not None:
        days = [d for d in days if d >= since.astimezone(dt.UTC).date()]
    scored = rt.catalog.scored_drops(model)
    drops = complete_drops(rt.home, spec.feature_set, days, fs)
    return [d for d in drops if d.drop_id not in scored and (since is None or d.at >= since)]


def _base_run(rt: Runtime, model: str, drops: list[Drop], version: str) -> RunRecord:
    """The live run the drops overlay; ``DeltaRefusedError`` unless every drop is of its date (the one home of the
    rule "a delta applies to the live run only")."""
    names = ", ".join(d.drop_id for d in drops)
    live = rt.catalog.live_pointer(model)
    if live is None:
        raise DeltaRefusedError(
            f"delta drops {names} of {model} refused: no run of {model} is live; publish the nightly run of their "
            f"date first (prescore score --model {model} --date YYYY-MM-DD --publish), then rerun prescore delta"
        )
    base = rt.catalog.get_run(live.run_id)
    other = [d.drop_id for d in drops if d.day != base.partition_date]
    if other:
        raise DeltaRefusedError(
            f"delta drops {', '.join(other)} of {model} refused (nothing was scored): the live run is {base.run_id} "
            f"of {base.partition_date}, and a delta only applies to the live run's date. Publish the nightly run of "
            f"their date first, or move those drops away (or pass --since after them) to score the others"
        )
    if base.model_version != version:
        raise DeltaRefusedError(
            f"delta drops {names} of {model} refused: the live run {base.run_id} was scored by version "
            f"{base.model_version}, production is {version}; publish a nightly run of {version} first"
        )
    return base


def _validate(rt: Runtime, model: str, drops: list[Drop]) -> None:
    spec = rt.config.model(model)
    fs = rt.config.feature_set(spec.feature_set)
    for drop in drops:
        violations = contracts.validate_files(drop.files(), fs, f"the delta drop {drop.directory}")
        if violations:
            raise ContractViolationError(
                f"delta drop {drop.drop_id} ({drop.directory}) breaks its contract: {contracts.summarize(violations)}"
                "; fix or remove the drop, then rerun prescore delta (no drop of this call was scored)",
                list(violations),
            )


def _newest_as_of(files: list[StoragePath], ts_col: str) -> dt.datetime | None:
    stamps = [pc.max(fstore.read_parquet(p, columns=[ts_col]).column(ts_col)).as_py() for p in files]
    found = [s for s in stamps if s is not None]
    return max(found).astimezone(dt.UTC) if found else None


def _output(part_dir: StoragePath, run_id: str) -> StoragePath:
    """Where the run writes: the staging directory (local), or its final directory (object storage: no rename)."""
    if isinstance(part_dir, ObjectPath):
        return score_files.delta_dir(part_dir, run_id)
    try:
        part_dir.mkdir(parents=True, exist_ok=True)
        staging = score_files.delta_staging_dir(part_dir, run_id)
        staging.mkdir()
    except OSError as exc:
        raise UserError(f"cannot write delta scores under {part_dir}: {exc.strerror or exc}; "
                        "check that PRESCORE_HOME is writable and has free space") from None  # fmt: skip
    return staging


def _remove_abandoned(rt: Runtime, part_dir: StoragePath, keep: StoragePath) -> None:
    """Staging directories of delta runs that are no longer staged (failed or abandoned) are deleted."""
    if isinstance(part_dir, ObjectPath) or not part_dir.is_dir():
        return
    for path in part_dir.glob(f"{score_files.DELTA_STAGING_PREFIX}*"):
        run_id = path.name.removeprefix(score_files.DELTA_STAGING_PREFIX)
        try:
            staged = rt.catalog.get_delta_run(run_id).status == STAGED
        except CatalogError:
            staged = False
        if path != keep and not staged:
            storage.rmtree(path)


def score_deltas(
    rt: Runtime,
    model: str,
    since: dt.datetime | None = None,
    device: str = "auto",
    task_rows: int | None = None,
    cluster: tuple[Any, ClusterInfo] | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
    publish: bool = True,
) -> DeltaReport:
    """Score ``model``'s new delta drops as one delta run (see the module docstring); the report says what was done.

    ``since``: only drops at or after it (UTC-aware). ``cluster``: an open ``(client, info)`` to reuse. ``publish``:
    then publish the committed delta runs of the live run into its overlay layer (``publish_deltas``).
    """
    spec = rt.config.model(model)
    fs = rt.config.feature_set(spec.feature_set)
    rt.catalog.abandon_stale_delta_runs(model, now=clock(), after_s=ABANDON_AFTER_S)
    drops = new_drops(rt, model, since)
    if not drops:
        scored = len(rt.catalog.scored_drops(model))
        after = f" at or after {since.isoformat()}" if since else ""
        published = publish_deltas(rt, model) if publish else []
        mended = f"; published {len(published)} committed delta runs left unpublished" if published else ""
        return DeltaReport(model, NOOP, f"no new delta drops of {spec.feature_set} for {model}{after}: nothing "
                           f"scored ({scored} drops scored before){mended}", published=published)  # fmt: skip
    dev = resolve_device(device)
    features = rt.config.model_features(model)
    ref = ModelRef.load(rt, model, features)
    base = _base_run(rt, model, drops, ref.version)
    run_id = new_run_id(model, base.partition_date)
    ids = [d.drop_id for d in drops]
    rt.catalog.start_delta_run(run_id=run_id, model=model, base_run_id=base.run_id, partition_date=base.partition_date,
                               model_version=ref.version, drop_ids=ids, at=clock())  # fmt: skip
    part_dir = scores_partition_dir(rt, model, base.partition_date)
    staging: StoragePath | None = None
    final = score_files.delta_dir(part_dir, run_id)
    try:
        _validate(rt, model, drops)
        staging = _output(part_dir, run_id)
        _remove_abandoned(rt, part_dir, keep=staging)
        files = [f for d in drops for f in d.files()]
        chunks = plan_chunks(files, task_rows or rt.settings.task_rows)
        with nullcontext(cluster) if cluster else open_cluster(rt.settings, dev, tasks=len(chunks)) as (client, info):
            futures = client.map(
                score_chunk, chunks, ref=ref, entity_col=fs.entity_column, ts_col=fs.timestamp_column,
                staging=str(staging), run_id=run_id, device=dev, threads=predict_threads(client, info), pure=False,
            )  # fmt: skip
            stats = client.gather(futures)
        score_files.write_manifest(staging, run_id, [(s["part"], s["rows"]) for s in stats])
        if isinstance(staging, Path) and isinstance(final, Path):
            os.rename(staging, final)  # readers that follow the catalog see all parts or none
        staging = None
        as_of = _newest_as_of(files, fs.timestamp_column)
        rows = sum(s["rows"] for s in stats)
        parts_of = {str(d.directory): d.drop_id for d in drops}
        drop_parts: dict[str, list[str]] = {i: [] for i in ids}
        for chunk, s in zip(chunks, stats, strict=True):
            drop_parts[parts_of[str(storage.as_path(chunk.path).parent)]].append(s["part"])
        try:
            record = rt.catalog.commit_delta_run(
                run_id, rows_out=rows, as_of=as_of, output_path=str(final),
                report={"parts": drop_parts, "cluster": info.kind}, at=clock(),
            )  # fmt: skip
        except BaseException:
            score_files.remove_run(final)
            raise
    except BaseException as exc:
        if staging is not None:
            storage.rmtree(staging)
        reason = str(exc) if isinstance(exc, PrescoreError) else f"{type(exc).__name__}: {exc}"
        rt.catalog.fail_delta_run(run_id, error=reason, at=clock())
        raise
    log.info("delta run %s of %s: %d drops, %d rows over base run %s", run_id, model, len(ids), rows, base.run_id)
    published = publish_deltas(rt, model) if publish else []
    served = "; published into the overlay layer" if run_id in published else ""
    return DeltaReport(
        model, COMMITTED,
        f"committed delta run {run_id}: {len(ids)} drops ({', '.join(ids)}), {rows:,} rows of {model} over live run "
        f"{base.run_id} of {base.partition_date} → {final}{served}",
        published=published,
        run_id=run_id, base_run_id=base.run_id, partition_date=base.partition_date.isoformat(),
        model_version=ref.version, drop_ids=ids, rows_out=rows, output_path=str(final), cluster=info.kind,
        as_of=record.as_of.isoformat() if record.as_of else None,
    )  # fmt: skip


def publish_deltas(rt: Runtime, model: str) -> list[str]:
    """Publish every committed delta run of ``model``'s live base run that its overlay layer does not hold yet,
    oldest first (see the module docstring). Returns the delta run ids published now."""
    store = ScoreStore.from_url(rt.redis_url)
    try:
        overlays = overlays_for(rt, store)
        live, layer = overlays.live(model)
        if live is None:
            return []
        held = set(layer.deltas) if layer is not None else set()
        pending = [d for d in rt.catalog.delta_runs(model, status=COMMITTED) if d.base_run_id == live]
        published = []
        for delta in pending:
            if delta.run_id in held or not delta.output_path:
                continue
            table = score_files.read_run(delta.output_path, columns=["entity_id", "score", "as_of"])
            as_of = [t.timestamp() for t in table.column("as_of").to_pylist()]
            ids = table.column("entity_id").to_pylist()
            try:
                overlays.publish_delta(model, live, delta.run_id, ids, table.column("score").to_pylist(), as_of)
            except BaseNotLiveError as exc:
                what = f"delta run {delta.run_id} of {model} is committed but not published"
                raise DeltaRefusedError(f"{what}: {exc}") from None
            published.append(delta.run_id)
            log.info("published delta run %s of %s over run %s: %d rows", delta.run_id, model, live, len(ids))
        return published
    finally:
        store.close()


def delta_task(model: str) -> dict[str, Any]:
    """The ``prescore_delta`` DAG's task: ``score_deltas`` of ``model`` in its own ``Runtime``; the report as a dict."""
    from jobs.runtime import open_runtime

    with open_runtime() as rt:
        report = score_deltas(rt, model)
    log.info("summary: score_delta %s: %s", model, report.message)
    return report.to_dict()
