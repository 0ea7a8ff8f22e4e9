"""Benchmark of the Redis score store against a naive per-key SET loader, on a throw-away redis-server.

    python bench/bench_store.py --entities 1000000 --json bench-store.json

Measures in one run: naive pipelined ``SET key value`` (1000 per round trip) and ``RunWriter.write_batch`` (HSET
buckets): entities/s and bytes/entity (INFO used_memory delta); then single-``get`` latency p50/p99 with no load and
during a load by another process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis

from warehouse.store import ScoreReader, ScoreStore, start_redis

MODEL = "bench"
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)


def make_ids(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    step = 8_999_999_999 // n
    base = 1_000_000_000 + np.arange(n, dtype=np.int64) * step + rng.integers(0, step, n)
    return [str(x) for x in rng.permutation(base).tolist()]


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure(client: redis.Redis, n: int, load: Callable[[], object]) -> dict[str, float]:
    before = used_memory(client)
    start = time.perf_counter()
    load()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "entities_per_s": n / seconds, "bytes_per_entity": (used_memory(client) - before) / n}


def naive_set(client: redis.Redis, ids: list[str], values: bytes) -> None:
    pipe = client.pipeline(transaction=False)
    for i, entity in enumerate(ids):
        pipe.set(f"naive:{entity}", values[4 * i : 4 * i + 4])
        if (i + 1) % 1000 == 0:
            pipe.execute()
    pipe.execute()


def load_hset(store: ScoreStore, run_id: str, ids: list[str], scores: np.ndarray, batch: int) -> None:
    writer = store.writer(MODEL, run_id)
    for i in range(0, len(ids), batch):
        writer.write_batch(ids[i : i + batch], scores[i : i + batch])


def background_load(url: str, n: int, batch: int) -> None:
    with ScoreStore.from_url(url) as store:
        ids = make_ids(n, seed=99)
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
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp))
        try:
            client = redis.Redis.from_url(server.url)
            store = ScoreStore.from_url(server.url, socket_timeout=60)
            results: dict[str, object] = {"entities": n, "batch": args.batch, "redis": client.info()["redis_version"]}
            results["naive_set"] = measure(client, n, lambda: naive_set(client, ids, scores.astype("<f4").tobytes()))
            client.flushall()
            for name, loader in (("hset_buckets", load_hset),):
                run_id = name.replace("_", "-")
                store.create_run(MODEL, run_id, "v1", AS_OF, n)
                store.heartbeat(MODEL, run_id)
                row = measure(client, n, lambda: loader(store, run_id, ids, scores, args.batch))  # noqa: B023
                start = time.perf_counter()
                store.finalize_run(MODEL, run_id)
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
    print("| loader | entities/s | bytes/entity | vs naive |")
    print("|---|---:|---:|---:|")
    for name in ("naive_set", "hset_buckets"):
        row: dict[str, float] = r[name]  # type: ignore[assignment]
        ratio = row.get("ratio_vs_naive", 1.0)
        print(f"| {name} | {row['entities_per_s']:,.0f} | {row['bytes_per_entity']:.1f} | {ratio:.1f}x |")
    print("\n| get latency | lookups | p50 µs | p99 µs |")
    print("|---|---:|---:|---:|")
    for name in ("get_idle", "get_during_load"):
        lat: dict[str, float] = r[name]  # type: ignore[assignment]
        print(f"| {name} | {lat['lookups']:.0f} | {lat['p50_us']:.0f} | {lat['p99_us']:.0f} |")


if __name__ == "__main__":
    main()
