"""Benchmark of the Redis score store's loaders against a naive per-key SET loader, on a throw-away redis-server.

    python bench/bench_store.py --entities 1000000 --json bench-store.json

Measures in one run, each from one loader process on the same ids (Arrow string columns, as ``load_part`` passes a
Parquet part's column) and the same server:

- ``naive_set``: pipelined ``SET key value`` per entity (1000 per round trip), the baseline;
- ``hset_buckets``: ``RunWriter.write_batch`` with ``restore = False``, in ``--batch``-entity batches in input order
  (every batch spreads over all buckets, as the Parquet parts of a run do);
- ``restore_buckets``: ``RunWriter.write_batch`` (RESTORE of whole buckets) from a loader that owns whole buckets:
  it groups its ids by bucket range itself (timed) and writes ~``--batch``-entity batches of whole buckets;
- ``restore_unaligned``: the RESTORE writer on ``hset_buckets``' batches (only a bucket's first batch can be
  restored; the others add to it by HSET).

Each row: entities/s (wall), bytes/entity (INFO used_memory delta), the loader's and Redis's CPU seconds (so a noisy
host can be read: on a quiet one the load takes about the larger of the two), the ratio to the naive loader. Then
single-``get`` latency p50/p99 with no load and during a load by another process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import redis

from warehouse.store import ScoreReader, ScoreStore, buckets, id_array, start_redis

MODEL = "bench"
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)


def make_ids(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    step = 8_999_999_999 // n
    base = 1_000_000_000 + np.arange(n, dtype=np.int64) * step + rng.integers(0, step, n)
    return [str(x) for x in rng.permutation(base).tolist()]


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def server_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def measure(client: redis.Redis, n: int, load: Callable[[], object]) -> dict[str, float]:
    before, redis_cpu = used_memory(client), server_cpu(client)
    start, loader_cpu = time.perf_counter(), time.process_time()
    load()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "entities_per_s": n / seconds,
        "bytes_per_entity": (used_memory(client) - before) / n,
        "loader_cpu_s": time.process_time() - loader_cpu,
        "redis_cpu_s": server_cpu(client) - redis_cpu,
    }


def naive_set(client: redis.Redis, ids: list[str], values: bytes) -> None:
    pipe = client.pipeline(transaction=False)
    for i, entity in enumerate(ids):
        pipe.set(f"naive:{entity}", values[4 * i : 4 * i + 4])
        if (i + 1) % 1000 == 0:
            pipe.execute()
    pipe.execute()


def load_hset(store: ScoreStore, run_id: str, ids: pa.Array, scores: np.ndarray, batch: int) -> None:
    writer = store.writer(MODEL, run_id)
    writer.restore = False
    for i in range(0, len(ids), batch):
        writer.write_batch(ids[i : i + batch], scores[i : i + batch])


def load_restore_unaligned(store: ScoreStore, run_id: str, ids: pa.Array, scores: np.ndarray, batch: int) -> None:
    writer = store.writer(MODEL, run_id)
    for i in range(0, len(ids), batch):
        writer.write_batch(ids[i : i + batch], scores[i : i + batch])


def load_restore(store: ScoreStore, run_id: str, ids: pa.Array, scores: np.ndarray, batch: int) -> None:
    """A loader that owns whole buckets: its ids grouped by bucket range (a 16-bit radix sort), written in
    ~``batch``-entity batches of whole buckets."""
    writer = store.writer(MODEL, run_id)
    n_buckets, parts = writer.info.n_buckets, max(1, min(65535, -(-len(ids) // batch)))
    part = (buckets(id_array(ids), n_buckets) * parts // n_buckets).astype(np.uint16)
    order = np.argsort(part, kind="stable")
    take = pa.Array.from_buffers(pa.int64(), len(order), [None, pa.py_buffer(order)])
    sorted_ids, sorted_scores = ids.take(take), scores[order]
    for s, e in itertools.pairwise([0, *np.cumsum(np.bincount(part, minlength=parts)).tolist()]):
        if e > s:
            writer.write_batch(sorted_ids[s:e], sorted_scores[s:e])


LOADERS: dict[str, Callable[[ScoreStore, str, pa.Array, np.ndarray, int], None]] = {
    "hset_buckets": load_hset,
    "restore_buckets": load_restore,
    "restore_unaligned": load_restore_unaligned,
}


def background_load(url: str, n: int, batch: int) -> None:
    with ScoreStore.from_url(url) as store:
        ids = id_array(make_ids(n, seed=99)).cast(pa.large_string())
        store.create_run(MODEL, "background", "v2", AS_OF, n)
        load_hset(store, "background", ids, np.ones(n, np.float32), batch)


def latencies(reader: ScoreReader, ids: list[str], count: int, until: Callable[[], bool]) -> dict[str, float]:
    rng = np.random.default_rng(1)
    picks = [ids[i] for i in rng.integers(0, len(ids), count)]
    taken = []
    for entity in picks:
        start = time.perf_counter()
        hit = reader.get(MODEL, entity)
        taken.append(time.perf_counter() - start)
        assert hit is not None
        if until():
            break
    micro = np.array(taken) * 1e6
    return {"lookups": len(taken), "p50_us": float(np.percentile(micro, 50)), "p99_us": float(np.percentile(micro, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000, help="entities per write_batch call (one partition)")
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    n = args.entities
    ids, scores = make_ids(n, seed=0), np.random.default_rng(0).random(n, dtype=np.float32)
    column = id_array(ids).cast(pa.large_string())  # what load_part passes: a Parquet part's string column
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp))
        try:
            client = redis.Redis.from_url(server.url)
            store = ScoreStore.from_url(server.url, socket_timeout=60)
            results: dict[str, object] = {"entities": n, "batch": args.batch, "redis": client.info()["redis_version"]}
            results["naive_set"] = measure(client, n, lambda: naive_set(client, ids, scores.astype("<f4").tobytes()))
            client.flushall()
            for name, loader in LOADERS.items():
                run_id = name.replace("_", "-")
                store.create_run(MODEL, run_id, "v1", AS_OF, n)
                store.heartbeat(MODEL, run_id)
                row = measure(client, n, lambda: loader(store, run_id, column, scores, args.batch))  # noqa: B023
                start = time.perf_counter()
                info = store.finalize_run(MODEL, run_id)
                assert info.loaded_rows == n, info
                row["finalize_s"] = time.perf_counter() - start
                row["ratio_vs_naive"] = row["entities_per_s"] / results["naive_set"]["entities_per_s"]  # type: ignore[index]
                results[name] = row
                sample = np.random.default_rng(2).integers(0, n, 1000)
                assert store.sample_check(MODEL, run_id, [ids[i] for i in sample], scores[sample]) == []
            store.publish(MODEL, "hset-buckets")
            reader = ScoreReader.from_url(server.url)
            results["get_idle"] = latencies(reader, ids, args.lookups, lambda: False)
            proc = multiprocessing.get_context("spawn").Process(
                target=background_load, args=(server.url, n, args.batch)
            )
            proc.start()
            while store.get_run(MODEL, "background") is None or not store.get_run(MODEL, "background").loaded_rows:  # type: ignore[union-attr]
                time.sleep(0.01)
            results["get_during_load"] = latencies(reader, ids, args.lookups, lambda: not proc.is_alive())
            proc.join()
        finally:
            server.stop()
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_table(r: dict[str, object]) -> None:
    print(f"\n{r['entities']:,} entities, batch {r['batch']:,}, Redis {r['redis']}\n")
    print("| loader | entities/s | bytes/entity | loader CPU s | Redis CPU s | vs naive |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("naive_set", *LOADERS):
        row: dict[str, float] = r[name]  # type: ignore[assignment]
        ratio = row.get("ratio_vs_naive", 1.0)
        print(
            f"| {name} | {row['entities_per_s']:,.0f} | {row['bytes_per_entity']:.1f} | {row['loader_cpu_s']:.2f} "
            f"| {row['redis_cpu_s']:.2f} | {ratio:.1f}x |"
        )
    print("\n| get latency | lookups | p50 µs | p99 µs |")
    print("|---|---:|---:|---:|")
    for name in ("get_idle", "get_during_load"):
        lat: dict[str, float] = r[name]  # type: ignore[assignment]
        print(f"| {name} | {lat['lookups']:.0f} | {lat['p50_us']:.0f} | {lat['p99_us']:.0f} |")


if __name__ == "__main__":
    main()
