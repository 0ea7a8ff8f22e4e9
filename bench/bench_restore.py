"""Time to recover after Redis lost the scores: ``prescore restore`` against the publish path, same run and machine.

    python bench/bench_restore.py --entities 1000000 --json bench-restore.json

A throw-away redis-server and PRESCORE_HOME hold one committed score run of ``--entities`` rows (Parquet parts of
1M rows, as the scoring job writes them, and its catalog row). Measured in one run, each from an empty Redis:

1. baseline: ``publish_run`` (what ``prescore publish`` does: load the Parquet into Redis on a local Dask cluster,
   verify counts and a sample, flip the pointer, record it);
2. FLUSHALL, then ``check_model`` (what the API's watch and the reconcile DAG do to find the loss) and
   ``restore_model`` (what ``prescore restore`` and the reconcile DAG do): the time to recover once the loss is seen;
3. a third of the run's buckets deleted (what one node of a 3-primary cluster restarted empty leaves), then
   ``check_model`` and ``restore_model`` again (the run is reopened and rewritten in place).

Every restore is checked: every entity is served with its Parquet score. Ratios are against step 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from jobs.publish import publish_run
from jobs.restore import check_model, restore_model
from jobs.runtime import Runtime
from warehouse.catalog import COMMITTED
from warehouse.datasets import score_files
from warehouse.settings import Settings
from warehouse.store import ScoreReader, ScoreStore, start_redis, store_key

MODEL = "churn"
PART_ROWS = 1_000_000  # jobs.score.TASK_ROWS: one part per scoring task
DAY = dt.date(2026, 1, 1)


def make_ids(n: int, seed: int) -> np.ndarray:
    """``n`` distinct 10-digit entity ids (as the synthetic warehouse has them), shuffled."""
    rng = np.random.default_rng(seed)
    step = 8_999_999_999 // n
    base = 1_000_000_000 + np.arange(n, dtype=np.int64) * step + rng.integers(0, step, n)
    return rng.permutation(base)


def write_run(rt: Runtime, n: int) -> tuple[str, Path]:
    """A committed run of ``n`` rows: parts under scores/<model>/dt=…/run=<id>/, its manifest, its catalog row."""
    run_id = rt.catalog.start_run(model=MODEL, model_version="bench-v1", partition_date=DAY)
    directory = Path(str(rt.settings.scores_dir)) / MODEL / f"dt={DAY}" / f"run={run_id}"
    directory.mkdir(parents=True)
    ids, scores = make_ids(n, 0), np.random.default_rng(1).random(n, dtype=np.float32)
    as_of = pa.scalar(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2), type=pa.timestamp("us", tz="UTC"))
    parts = []
    for k, start in enumerate(range(0, n, PART_ROWS)):
        rows = slice(start, min(n, start + PART_ROWS))
        m = rows.stop - rows.start
        table = pa.table({
            "entity_id": pa.array(ids[rows].astype(str)),
            "score": pa.array(scores[rows], type=pa.float32()),
            "as_of": pa.array(np.full(m, as_of.value), type=pa.timestamp("us", tz="UTC")),
        })  # fmt: skip
        name = score_files.part_name(k)
        pq.write_table(table, directory / name, compression="snappy")
        parts.append((name, m))
    score_files.write_manifest(directory, run_id, parts)
    rt.catalog.finish_run(run_id, status=COMMITTED, output_path=str(directory), rows_in=n, rows_out=n)
    return run_id, directory


def served_equals_parquet(url: str, directory: Path, run_id: str) -> bool:
    reader = ScoreReader.from_url(url, socket_timeout=30)
    try:
        for part in score_files.committed_parts(directory) or []:
            table = pq.read_table(part, columns=["entity_id", "score"])
            ids, want = table.column("entity_id").to_pylist(), table.column("score").to_pylist()
            for i in range(0, len(ids), 50_000):
                hits = reader.get_many(MODEL, ids[i : i + 50_000])
                if any(h is None or h.run_id != run_id or h.score != w for h, w in zip(hits, want[i:], strict=False)):
                    return False
    finally:
        reader.close()
    return True


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    n = args.entities
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp) / "redis")
        try:
            settings = Settings(home=Path(tmp) / "home", redis_url=server.url, catalog_url=None, dask_local="threads")
            rt = Runtime.from_settings(settings)
            client = redis.Redis.from_url(server.url)
            t_gen, (run_id, directory) = timed(lambda: write_run(rt, n))
            parts = len(list(directory.glob("part-*.parquet")))
            results: dict[str, Any] = {"entities": n, "parts": parts, "redis": client.info()["redis_version"],
                                       "write_parquet_s": round(t_gen, 2)}  # fmt: skip

            t_publish, _ = timed(lambda: publish_run(rt, MODEL, run_id))
            results["publish_s"] = t_publish
            results["publish_served_ok"] = served_equals_parquet(server.url, directory, run_id)

            client.flushall()
            with ScoreStore.from_url(server.url) as store:
                t_check, health = timed(lambda: check_model(rt, store, MODEL))
            t_restore, report = timed(lambda: restore_model(rt, MODEL))
            results["flushall"] = {"check_s": t_check, "state": health.state.value, "restore_s": t_restore,
                                   "status": report.status, "action": report.action,
                                   "served_ok": served_equals_parquet(server.url, directory, run_id)}  # fmt: skip

            keys = [k for k in client.scan_iter(match=store_key(MODEL, "bucket", run_id, "*"), count=10_000)]
            doomed = keys[::3]
            for i in range(0, len(doomed), 10_000):
                client.unlink(*doomed[i : i + 10_000])
            with ScoreStore.from_url(server.url) as store:
                t_check, health = timed(lambda: check_model(rt, store, MODEL))
            t_repair, report = timed(lambda: restore_model(rt, MODEL))
            served = served_equals_parquet(server.url, directory, run_id)
            results["third_of_buckets"] = {"buckets_deleted": len(doomed), "buckets": len(keys), "check_s": t_check,
                                           "state": health.state.value, "restore_s": t_repair, "served_ok": served,
                                           "status": report.status, "action": report.action}  # fmt: skip
            t_noop, report = timed(lambda: restore_model(rt, MODEL))
            results["idempotent_rerun"] = {"restore_s": t_noop, "status": report.status}
            results["redis_used_memory_mb"] = round(int(client.info("memory")["used_memory"]) / 2**20, 1)
            client.close()
            rt.close()
        finally:
            server.stop()
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_table(r: dict[str, Any]) -> None:
    base = r["publish_s"]
    print(f"\n{r['entities']:,} entities in {r['parts']} parts, Redis {r['redis']}, {r['redis_used_memory_mb']} MB\n")
    print("| step | seconds | ÷ publish | entities/s | served = Parquet |")
    print("|---|---:|---:|---:|---|")
    print(f"| publish_run from an empty Redis (baseline) | {base:.2f} | 1.00 | {r['entities'] / base:,.0f} | "
          f"{r['publish_served_ok']} |")  # fmt: skip
    for name, label in (
        ("flushall", "restore after FLUSHALL"),
        ("third_of_buckets", "restore, a third of buckets lost"),
    ):
        row = r[name]
        print(f"| {label} ({row['action']}) | {row['restore_s']:.2f} | {row['restore_s'] / base:.2f} | "
              f"{r['entities'] / row['restore_s']:,.0f} | {row['served_ok']} |")  # fmt: skip
        print(f"| check_model finding it {row['state']} | {row['check_s']:.3f} | {row['check_s'] / base:.3f} | | |")
    print(f"| restore again (status {r['idempotent_rerun']['status']}) | {r['idempotent_rerun']['restore_s']:.2f} | "
          f"{r['idempotent_rerun']['restore_s'] / base:.2f} | | |")  # fmt: skip


if __name__ == "__main__":
    main()
