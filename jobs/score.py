"""The bulk scoring job: one (model, date) partition → committed scores Parquet, recorded in the catalog.

``score_partition`` is the per-partition function that the CLI (`prescore score`), the backfill and the
Airflow DAGs all call. Steps:

1. resolve the production primary model (hash- and contract-checked), the feature partition's files and their
   fingerprint (``jobs.fingerprint``);
2. skip when a committed run of this partition exists with the same model version and input (idempotent);
3. validate the partition against its contract — a violation is recorded as a failed run and fails it before
   anything is written. A caller that validated the partition itself (the DAG's ``validate_contract`` task) passes
   the fingerprint it checked: when the input still has it, the contract is not checked again;
4. start a catalog run (refused when another run of the partition is running);
5. map the row groups over Dask: each worker loads the model once (hash-checked), reads its row groups,
   predicts with ``inplace_predict`` and writes ``part-NNNNN.parquet`` into a staging directory;
6. commit: the manifest (``warehouse.datasets.score_files``: parts and row counts) is written last, then one atomic
   rename of the staging directory to ``scores/<model>/dt=D/run=<run_id>/``; on any failure the staging
   directory is removed and the run is marked failed with the reason.

With ``PRESCORE_HOME`` on object storage (``warehouse.datasets.storage``) there is no rename: the parts are written
straight under ``run=<run_id>/`` and the manifest after the last one is the commit; a failed run's parts are
deleted, and a crashed one's (no manifest, never read) by the next run of the partition. Workers read features
and write parts on object storage themselves, and load the model from a hash-checked local copy.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import scoring
from jobs.cluster import ClusterInfo, open_cluster, resolve_device
from jobs.feature_matrix import to_matrix
from jobs.fingerprint import fingerprint
from jobs.runtime import Runtime
from warehouse.catalog import COMMITTED, FAILED, RunRecord
from warehouse.datasets import contracts, score_files, storage
from warehouse.datasets import features as fstore
from warehouse.datasets.storage import ObjectPath, StoragePath, sha256_file
from warehouse.errors import ContractViolationError, PrescoreError, UserError
from warehouse.rollout import challenger_key
from warehouse.xgboost_loader import xgboost

log = logging.getLogger(__name__)
TASK_ROWS = 1_000_000  # rows per Dask task (whole row groups are never split): PRESCORE_TASK_ROWS's default
# ``RunReport.contract``: how this call settled the partition's contract
VALIDATED = "validated"  # it checked the partition against the contract
CONFIRMED = "confirmed"  # the caller had checked this very input (same fingerprint): not checked again
REUSED = "reused"  # a committed run of the same input was returned: nothing was read


@dataclass(frozen=True)
class Chunk:
    """Row groups of one input file that one task scores into one output part."""

    index: int
    path: str
    row_groups: tuple[int, ...]
    rows: int


@dataclass(frozen=True)
class ModelRef:
    path: str
    sha256: str
    version: str
    features: tuple[str, ...]
    categories: tuple[tuple[str, tuple[str, ...]], ...] = ()  # category feature → code order (the manifest's)

    @classmethod
    def load(cls, rt: Runtime, model: str, features: list[str], challenger: str | None = None) -> ModelRef:
        """The reference the scoring tasks load: the production (or ``challenger``) primary model of ``model`` from
        the registry, its hash and the feature contract checked first (before any work)."""
        loaded = rt.registry.load(model, "primary", features, challenger)
        manifest = loaded.manifest
        order = tuple((name, tuple(values)) for name, values in sorted(manifest.categories.items()))
        return cls(str(loaded.path), manifest.sha256, manifest.version, tuple(features), order)


@dataclass
class RunReport:
    run_id: str
    model: str
    model_version: str
    partition_date: str
    status: str
    output_path: str | None
    device: str
    cluster: str
    rows_in: int = 0
    rows_out: int = 0
    null_values: int = 0
    histogram: list[int] = field(default_factory=list)
    quantiles: list[float] = field(default_factory=list)  # the score distribution (``jobs.scoring``)
    psi: float | None = None
    psi_against: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    rows_per_s: float = 0.0
    reused: bool = False
    contract: str = VALIDATED
    dashboard: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- worker side ----------------------------------------------------------------------------------------
_BOOSTERS: dict[tuple[str, str, str], Any] = {}


def _booster(ref: ModelRef, device: str, threads: int) -> Any:
    """The model, loaded once per worker process and device, after checking its sha256."""
    xgb = xgboost()

    key = (ref.path, ref.sha256, device)
    booster = _BOOSTERS.get(key)
    if booster is None:
        local = storage.local_copy(storage.as_path(ref.path), ref.sha256)  # the path itself when local
        actual = sha256_file(local)
        if actual != ref.sha256:
            raise UserError(f"model artifact {ref.path} changed during the job (sha256 mismatch); rerun")
        booster = xgb.Booster()
        booster.load_model(local)
        booster.set_param({"device": device, "nthread": threads})
        _BOOSTERS[key] = booster
    return booster


def _to_device(x: np.ndarray, device: str) -> Any:
    if device != "cuda":
        return x
    import cupy
    import cupyx

    pinned = cupyx.empty_pinned(x.shape, dtype=x.dtype)
    pinned[...] = x
    return cupy.asarray(pinned)


def _entity_ids(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The entity ids as strings (an ``int64`` entity column of a lake is served as its decimal text)."""
    return column.cast(pa.string()) if pa.types.is_integer(column.type) else column


def score_chunk(
    chunk: Chunk,
    ref: ModelRef,
    entity_col: str,
    ts_col: str,
    staging: str,
    run_id: str,
    device: str,
    threads: int,
) -> dict[str, Any]:
    """Score one chunk and write its part file; return its statistics (runs on a Dask worker)."""
    t0 = time.perf_counter()
    table = fstore.parquet_file(storage.as_path(chunk.path)).read_row_groups(
        list(chunk.row_groups), columns=[entity_col, ts_col, *ref.features]
    )
    x = to_matrix(table, list(ref.features), {name: list(order) for name, order in ref.categories})
    t1 = time.perf_counter()
    scores = scoring.predict(_booster(ref, device, threads), _to_device(x, device))
    t2 = time.perf_counter()
    n = table.num_rows
    out = pa.table(
        {
            "entity_id": _entity_ids(table.column(entity_col)),
            "score": pa.array(scores, type=pa.float32()),
            "model_version": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, dtype=np.int32)), pa.array([ref.version])
            ),
            "run_id": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([run_id])),
            "as_of": table.column(ts_col),
            "scored_at": pa.array(
                np.full(n, np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None), "us")),
                type=pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    name = score_files.part_name(chunk.index)
    where, filesystem = storage.arrow(storage.as_path(staging) / name)
    pq.write_table(out, where, compression="snappy", filesystem=filesystem)
    t3 = time.perf_counter()
    return {
        "part": name,
        "rows": n,
        "nulls": int(np.isnan(x).sum()),
        "histogram": scoring.histogram(scores),
        "quantiles": scoring.quantile_summary(scores),
        "read_s": t1 - t0,
        "predict_s": t2 - t1,
        "write_s": t3 - t2,
    }


# ---- driver side ----------------------------------------------------------------------------------------
def plan_chunks(files: list[StoragePath], task_rows: int = TASK_ROWS) -> list[Chunk]:
    """Group each file's row groups into tasks of about ``task_rows`` rows."""
    chunks: list[Chunk] = []
    for path in files:
        meta = fstore.parquet_file(path).metadata
        group: list[int] = []
        rows = 0
        for rg in range(meta.num_row_groups):
            group.append(rg)
            rows += meta.row_group(rg).num_rows
            if rows >= task_rows:
                chunks.append(Chunk(len(chunks), str(path), tuple(group), rows))
                group, rows = [], 0
        if group:
            chunks.append(Chunk(len(chunks), str(path), tuple(group), rows))
    return chunks


def scores_partition_dir(rt: Runtime, model: str, day: dt.date) -> StoragePath:
    return score_files.partition_of(rt.settings.scores_dir, model, day)


def _prepare_output(part_dir: StoragePath, run_id: str) -> StoragePath:
    if isinstance(part_dir, ObjectPath):
        out = score_files.run_dir(part_dir, run_id)  # no rename: parts go straight under run=<id>/
        try:
            probe = out / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(
                f"cannot write scores under {part_dir}: {exc}; check the bucket, the credentials "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and AWS_ENDPOINT_URL"
            ) from None
        return out
    try:
        part_dir.mkdir(parents=True, exist_ok=True)
        staging = score_files.staging_dir(part_dir, run_id)
        staging.mkdir()
        probe = staging / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write scores under {part_dir}: {exc.strerror or exc}; "
            "check that PRESCORE_HOME is writable and has free space"
        ) from None
    return staging


def _report_of(run: RunRecord, cluster: str, reused: bool) -> RunReport:
    rep = dict(run.report)
    return RunReport(
        run_id=run.run_id,
        model=run.model,
        model_version=run.model_version,
        partition_date=run.partition_date.isoformat(),
        status=run.status,
        output_path=run.output_path,
        device=run.device,
        cluster=cluster,
        rows_in=run.rows_in or 0,
        rows_out=run.rows_out or 0,
        null_values=rep.get("null_values", 0),
        histogram=rep.get("histogram", []),
        quantiles=rep.get("quantiles", []),
        psi=rep.get("psi"),
        psi_against=rep.get("psi_against"),
        timings=dict(run.timings),
        rows_per_s=rep.get("rows_per_s", 0.0),
        reused=reused,
        contract=REUSED if reused else VALIDATED,
    )


def score_partition(
    rt: Runtime,
    model: str,
    day: dt.date,
    device: str = "auto",
    force: bool = False,
    task_rows: int | None = None,
    cluster: tuple[Any, ClusterInfo] | None = None,
    validated: str | None = None,
    challenger: str | None = None,
) -> RunReport:
    """Score one partition end to end (see module docstring). Returns the run report.

    ``challenger``: score that challenger version instead of the production one; its run is recorded and written
    under ``warehouse.rollout.challenger_key(model, challenger)`` (``jobs.shadow``), which is the report's model.

    ``cluster`` is an open ``(client, info)`` from ``open_cluster`` to reuse (a backfill scores many dates on
    one cluster); without it a cluster is opened for this call and closed after it. ``validated``: the
    fingerprint of the input the caller validated against the contract; when the partition's input still has
    it, the contract is not checked again (``contract`` of the report: ``confirmed``), otherwise it is.
    """
    spec = rt.config.model(model)
    fs = rt.config.feature_set(spec.feature_set)
    features = rt.config.model_features(model)
    dev = resolve_device(device)
    ref = ModelRef.load(rt, model, features, challenger)
    if challenger is not None:
        model = challenger_key(model, challenger)  # the catalog and Parquet name of the challenger's runs
    files = fstore.partition_files(rt.home, spec.feature_set, day, fs)
    fp = fingerprint(files)

    if not force:
        for prev in rt.catalog.runs(model, partition_date=day, status=COMMITTED, limit=5):
            same = prev.model_version == ref.version and prev.input_fingerprint == fp
            if same and score_files.is_committed(prev.output_path):
                log.info("%s %s already committed as run %s; reusing it", model, day, prev.run_id)
                return _report_of(prev, "none", reused=True)

    contract = CONFIRMED if validated == fp else VALIDATED
    if contract == CONFIRMED:
        log.info("%s %s is the input validated before (fingerprint %s…): not validating it again", model, day, fp[:12])
    else:
        if validated is not None:
            log.warning("%s %s changed since it was validated (fingerprint %s…, now %s…): validating it again",
                        model, day, validated[:12], fp[:12])  # fmt: skip
        try:
            contracts.require_valid(rt.home, spec.feature_set, day, fs)
        except ContractViolationError as exc:
            run_id = rt.catalog.start_run(model=model, model_version=ref.version, partition_date=day, device=dev)
            rt.catalog.finish_run(
                run_id, status=FAILED, error=str(exc),
                report={"violations": [vars(v) if hasattr(v, "__dataclass_fields__") else str(v)
                                       for v in exc.violations]},
            )  # fmt: skip
            raise

    run_id = rt.catalog.start_run(model=model, model_version=ref.version, partition_date=day, device=dev)
    part_dir = scores_partition_dir(rt, model, day)
    staging: StoragePath | None = None
    t_start = time.perf_counter()
    try:
        staging = _prepare_output(part_dir, run_id)
        _remove_abandoned_staging(rt, part_dir, keep=staging)
        chunks = plan_chunks(files, task_rows or rt.settings.task_rows)
        with nullcontext(cluster) if cluster else open_cluster(rt.settings, dev, tasks=len(chunks)) as (client, info):
            t_cluster = time.perf_counter()
            threads = predict_threads(client, info)
            futures = client.map(
                score_chunk, chunks, ref=ref, entity_col=fs.entity_column, ts_col=fs.timestamp_column,
                staging=str(staging), run_id=run_id, device=dev, threads=threads, pure=False,
            )  # fmt: skip
            stats = client.gather(futures)
        t_scored = time.perf_counter()
        final = score_files.run_dir(part_dir, run_id)
        score_files.write_manifest(staging, run_id, [(s["part"], s["rows"]) for s in stats])
        if isinstance(staging, Path) and isinstance(final, Path):
            os.rename(staging, final)  # the commit: readers see all parts or none
        staging = None  # committed (on object storage by the manifest, written last)
        report = _build_report(rt, model, day, run_id, ref.version, dev, info, stats, final)
        report.contract = contract
        report.timings.update(
            cluster_s=round(t_cluster - t_start, 3),
            score_wall_s=round(t_scored - t_cluster, 3),
            total_s=round(time.perf_counter() - t_start, 3),
        )
        report.rows_per_s = round(report.rows_out / max(report.timings["score_wall_s"], 1e-9), 1)
        rt.catalog.finish_run(
            run_id, status=COMMITTED, rows_in=report.rows_in, rows_out=report.rows_out,
            input_fingerprint=fp, output_path=str(final), timings=report.timings,
            report={k: getattr(report, k) for k in ("null_values", "histogram", "quantiles", "psi", "psi_against",
                                                     "rows_per_s", "cluster", "dashboard")},
        )  # fmt: skip
        return report
    except BaseException as exc:
        if staging is not None:
            storage.rmtree(staging)
        no_room = storage.no_room(exc)
        if no_room:
            clear = UserError(
                f"no room to write the scores of {model} for {day} under {part_dir} ({no_room}); "
                f"run {run_id} is marked failed, nothing was committed and its staged parts were removed: free "
                "space (or point PRESCORE_HOME at a larger volume), then rerun"
            )
            rt.catalog.finish_run(run_id, status=FAILED, error=str(clear)[:2000])
            raise clear from exc
        reason = str(exc) if isinstance(exc, PrescoreError) else f"{type(exc).__name__}: {exc}"
        rt.catalog.finish_run(run_id, status=FAILED, error=reason[:2000])
        raise


def predict_threads(client: Any, info: ClusterInfo) -> int:
    if info.kind.startswith("local") or info.kind == "inline":
        slots = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()) or 1
        return max(1, (os.cpu_count() or 1) // slots)
    return 1


def _remove_abandoned_staging(rt: Runtime, part_dir: StoragePath, keep: StoragePath) -> None:
    """Staging directories of runs that are no longer running (crashed jobs) are deleted at once; on object
    storage, ``run=<id>/`` prefixes without a commit manifest (the rule: ``jobs.retention.abandoned_staging``)."""
    from jobs.retention import abandoned_staging

    for path, _run_id, _status in abandoned_staging(rt.catalog, part_dir, keep=keep):
        storage.rmtree(path)


def _build_report(
    rt: Runtime,
    model: str,
    day: dt.date,
    run_id: str,
    version: str,
    device: str,
    info: ClusterInfo,
    stats: list[dict[str, Any]],
    final: StoragePath,
) -> RunReport:
    rows = sum(s["rows"] for s in stats)
    hist = scoring.merge_histograms([s["histogram"] for s in stats])
    quantiles = scoring.merge_summaries([(s["rows"], s["quantiles"]) for s in stats])
    previous = rt.catalog.latest_committed(model, exclude=run_id)
    psi_value = None
    if previous and rows:
        value = scoring.run_psi(previous.report, {"quantiles": quantiles, "histogram": hist})
        psi_value = None if value is None else round(value, 6)
    return RunReport(
        run_id=run_id,
        model=model,
        model_version=version,
        partition_date=day.isoformat(),
        status=COMMITTED,
        output_path=str(final),
        device=device,
        cluster=info.kind,
        rows_in=rows,
        rows_out=rows,
        null_values=sum(s["nulls"] for s in stats),
        histogram=hist,
        quantiles=quantiles,
        psi=psi_value,
        psi_against=previous.run_id if previous else None,
        timings={
            "read_s": round(sum(s["read_s"] for s in stats), 3),
            "predict_s": round(sum(s["predict_s"] for s in stats), 3),
            "write_s": round(sum(s["write_s"] for s in stats), 3),
        },
        dashboard=info.dashboard,
    )
