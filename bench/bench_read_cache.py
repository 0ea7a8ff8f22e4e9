"""Benchmark of the online reader's read cache on skewed and uniform traffic, against a bare Starlette + orjson +
redis.asyncio baseline, in the same run.

    python bench/bench_read_cache.py [--entities 1000000] [--duration 5] [--rounds 3] [--json out.json]

Sets up a throw-away Redis (127.0.0.1) holding one published ``churn`` run of ``--entities`` scores and a
PRESCORE_HOME with a promoted fallback (``bench_online.setup``). Then, with wrk on loopback (each server one uvicorn
worker, uvloop + httptools, pinned to CPU 0; wrk and redis-server pinned to CPU 1 when there are >= 2 CPUs), these
servers up at once and loaded one at a time, in interleaved rounds so drift hits every variant alike:

- ``baseline``: ``bare_baseline.make_baseline`` (GET → one HGET of the id's bucket → orjson, from a module that
  imports nothing else, so its heap and GC pauses are a bare app's); its answers are checked against prescore's
  before the rounds;
- ``cache``: ``online.app:create_app`` as configured by default (read cache on: 100k ids, 64 MiB; prediction log
  on; GC frozen after start-up);
- ``nocache``: the same with ``PRESCORE_READ_CACHE=false``;
- ``nofreeze``: the same with ``PRESCORE_READ_CACHE=false PRESCORE_GC_FREEZE=false`` (the collector left as the
  interpreter sets it, as before ``gc_freeze``: its tail latency at -c32 for comparison).

Two workloads of GET /v1/scores/churn/<id>, each a pre-generated list of ``--requests`` ids written to a file that
the wrk Lua script reads at start and cycles through from a random offset per wrk run (so no run replays what an
earlier one sent): ``zipf`` (ranks drawn with P(k) ∝ k^-s, s = ``--zipf-s`` 1.1, over every published entity, rank
mapped to an entity by a fixed random permutation) and ``uniform`` (every entity alike). Each server is warmed with
2 s of the Zipf list first; the ``cache`` server's cache is then brought to its steady state, that of a reader up
for a while, by ``--warm-draws`` (800k) more Zipf draws of another seed sent as batches of 500 (an LRU of 100k ids
fed Zipf s=1.1 draws over 1M ids answers ~79 % of its first 200k draws, ~88.5 % after 600k). Per workload:
``--rounds`` interleaved rounds at ``--connections`` (32), then ``--latency-runs`` (3) interleaved -c1 runs of each
variant. The
cache's hit ratio of each run is read from its ``/metrics`` (``prescore_read_cache_hits_total`` /
``_misses_total``) before and after it.

Figures: requests/s (mean over rounds), the median over rounds of the ratio to the baseline measured in the same
round, p50/p99 at -c32 (median over rounds, and the median per-round ratio of p99 to the baseline's) and at -c1
(each run, and their median). Targets: zipf ``cache`` >= 1.5x baseline at -c32 and its -c1 p99 not above the
baseline's; uniform ``cache`` >= 0.85x; at -c32 every prescore variant's p99 within 1.5x the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
from bench_online import MODEL, Server, parse_wrk, pin, setup, stop_servers_on_sigterm

VARIANTS = ("baseline", "cache", "nocache", "nofreeze")
WORKLOADS = ("zipf", "uniform")
LUA = """local ids = {}
for line in io.lines("%(path)s") do ids[#ids + 1] = line end
local n = 0
init = function(args) n = (tonumber(args[1]) or 0) %% #ids end
request = function()
  n = n %% #ids + 1
  return wrk.format("GET", "/v1/scores/%(model)s/" .. ids[n])
end
"""


def id_list(path: Path, entities: int, requests: int, zipf_s: float | None, seed: int) -> Path:
    """``requests`` entity ids, one a line: Zipf-ranked (``zipf_s``) or uniform over ``entities``."""
    rng = np.random.default_rng(seed)
    if zipf_s is None:
        picked = rng.integers(0, entities, requests)
    else:
        cdf = np.cumsum(np.arange(1, entities + 1, dtype=np.float64) ** -zipf_s)
        ranks = np.minimum(np.searchsorted(cdf, rng.random(requests) * cdf[-1]), entities - 1)
        picked = np.random.default_rng(0).permutation(entities)[ranks]
    path.write_text("".join(f"cust-{i:08d}\n" for i in picked.tolist()))
    return path


def wrk(url: str, script: Path, connections: int, duration: int, offset: int) -> dict[str, float]:
    cmd = [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url, "--",
           str(offset)]  # fmt: skip
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout)


def warm_cache(url: str, entities: int, draws: int, zipf_s: float, seed: int) -> None:
    """Zipf draws (another seed than the request lists', the same rank → entity map) looked up in batches of 500."""
    cdf = np.cumsum(np.arange(1, entities + 1, dtype=np.float64) ** -zipf_s)
    rng = np.random.default_rng(seed)
    ranks = np.minimum(np.searchsorted(cdf, rng.random(draws) * cdf[-1]), entities - 1)
    picked = np.random.default_rng(0).permutation(entities)[ranks].tolist()
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, draws, 500):
            ids = [f"cust-{i:08d}" for i in picked[start : start + 500]]
            client.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": ids}).raise_for_status()


def cache_counts(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = [re.search(rf"^prescore_read_cache_{k}_total (\S+)$", text, re.M) for k in ("hits", "misses")]
    return (float(found[0].group(1)), float(found[1].group(1))) if found[0] and found[1] else (0.0, 0.0)


def check_answers(servers: dict[str, Server], entities: int) -> None:
    """The baseline's scores equal prescore's (its key and bucket rules are written out, not imported)."""
    for i in np.random.default_rng(5).integers(0, entities, 20).tolist():
        path = f"/v1/scores/{MODEL}/cust-{i:08d}"
        scores = {n: httpx.get(f"{s.url}{path}", timeout=5).json()["score"] for n, s in servers.items()}
        if len(set(scores.values())) != 1 or None in scores.values():
            raise RuntimeError(f"the servers disagree on {path}: {scores}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per -c32 run")
    parser.add_argument("--latency-duration", type=int, default=5, help="seconds per -c1 run")
    parser.add_argument("--latency-runs", type=int, default=3, help="-c1 runs of each variant per workload")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2_000_000, help="ids in each pre-generated list")
    parser.add_argument("--zipf-s", type=float, default=1.1)
    parser.add_argument("--warm-draws", type=int, default=800_000, help="Zipf draws that warm the cache (batches)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    stop_servers_on_sigterm()
    offsets = np.random.default_rng(11)

    with tempfile.TemporaryDirectory(prefix="bench-read-cache-") as tmp:
        work = Path(tmp)
        print(f"loading {args.entities:,} scores into Redis ...", flush=True)
        server, run_id, n_buckets = setup(work, args.entities)
        if pin(1):
            subprocess.run(["taskset", "-p", "-c", "1", str(server.pid)], check=True, capture_output=True)
        scripts = {}
        for name, s, seed in (("zipf", args.zipf_s, 21), ("uniform", None, 22)):
            ids = id_list(work / f"{name}.txt", args.entities, args.requests, s, seed)
            scripts[name] = work / f"{name}.lua"
            scripts[name].write_text(LUA % {"path": ids, "model": MODEL})
        prescore = {"PRESCORE_HOME": str(work / "home"), "PRESCORE_REDIS_URL": server.url}
        envs: dict[str, tuple[str, dict[str, str], str]] = {
            "baseline": ("bare_baseline:make_baseline", {"BENCH_REDIS_URL": server.url, "BENCH_RUN_ID": run_id,
                                                        "BENCH_BUCKETS": str(n_buckets)}, "/healthz"),
            "cache": ("online.app:create_app", prescore, "/readyz"),
            "nocache": ("online.app:create_app", {**prescore, "PRESCORE_READ_CACHE": "false"}, "/readyz"),
            "nofreeze": ("online.app:create_app", {**prescore, "PRESCORE_READ_CACHE": "false",
                                                 "PRESCORE_GC_FREEZE": "false"}, "/readyz"),
        }  # fmt: skip
        runs = {w: {v: [] for v in VARIANTS} for w in WORKLOADS}  # type: ignore[var-annotated]
        c1 = {w: {v: [] for v in VARIANTS} for w in WORKLOADS}  # type: ignore[var-annotated]
        servers: dict[str, Server] = {}

        def run(variant: str, workload: str, connections: int, duration: int) -> dict[str, float]:
            offset = int(offsets.integers(0, args.requests))
            before = cache_counts(servers[variant].url) if variant == "cache" else (0.0, 0.0)
            result = wrk(servers[variant].url, scripts[workload], connections, duration, offset)
            if variant == "cache":
                after = cache_counts(servers[variant].url)
                looked = after[0] - before[0] + after[1] - before[1]
                result["hit_ratio"] = (after[0] - before[0]) / looked if looked else 0.0
            return result

        try:
            for name, (target, env, ready) in envs.items():
                servers[name] = Server(target, env, ready)
                run(name, "zipf", args.connections, 2)  # warm-up
            check_answers(servers, args.entities)
            print(f"warming the cache with {args.warm_draws:,} Zipf draws ...", flush=True)
            warm_cache(servers["cache"].url, args.entities, args.warm_draws, args.zipf_s, 23)
            for workload in WORKLOADS:
                for r in range(args.rounds):  # interleaved: machine drift hits every variant alike
                    order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
                    for name in order:
                        runs[workload][name].append(run(name, workload, args.connections, args.duration))
                    print(f"{workload} round {r + 1}: " + ", ".join(
                        f"{n} {runs[workload][n][-1]['rps']:.0f} rps p99 {runs[workload][n][-1]['p99_ms']:.1f} ms"
                        for n in VARIANTS), flush=True)  # fmt: skip
                for k in range(args.latency_runs):
                    for name in VARIANTS if k % 2 == 0 else reversed(VARIANTS):
                        c1[workload][name].append(run(name, workload, 1, args.latency_duration))
        finally:
            for srv in servers.values():
                srv.stop()
            server.stop()

    def ratio(workload: str, name: str, key: str) -> float:  # median over rounds of the per-round ratio
        pairs = zip(runs[workload][name], runs[workload]["baseline"], strict=True)
        return float(np.median([x[key] / y[key] for x, y in pairs]))

    def median(workload: str, name: str, key: str) -> float:
        return float(np.median([x[key] for x in runs[workload][name]]))

    hit_ratio = {w: float(np.mean([x["hit_ratio"] for x in runs[w]["cache"]])) for w in WORKLOADS}

    result = {
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_average_1m": os.getloadavg()[0], "entities": args.entities, "requests": args.requests,
                        "zipf_s": args.zipf_s, "connections": args.connections, "duration_s": args.duration,
                        "rounds": args.rounds},
        "runs": runs,
        "latency_c1": c1,
        "hit_ratio": hit_ratio,
        "summary": {w: {n: {"rps": float(np.mean([x["rps"] for x in runs[w][n]])),
                            "rps_vs_baseline": ratio(w, n, "rps"), "p50_ms": median(w, n, "p50_ms"),
                            "p99_ms": median(w, n, "p99_ms"), "p99_vs_baseline": ratio(w, n, "p99_ms")}
                        for n in VARIANTS} for w in WORKLOADS},
    }  # fmt: skip
    print(
        f"\nwrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} interleaved rounds, {args.entities:,} "
        "entities; mean requests/s, medians over rounds (ratios: median of per-round ratios to the baseline):\n"
    )
    print("| workload | variant | rps | rps vs baseline | p50 ms | p99 ms | p99 vs baseline |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for w in WORKLOADS:
        for n in VARIANTS:
            s = result["summary"][w][n]  # type: ignore[index]
            print(f"| {w} | {n} | {s['rps']:.0f} | {s['rps_vs_baseline']:.2f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
                  f"| {s['p99_vs_baseline']:.2f} |")  # fmt: skip
    print()
    for w in WORKLOADS:
        print(f"{w}: read-cache hit ratio {hit_ratio[w]:.3f} (mean of the -c{args.connections} runs)")
        for n in VARIANTS:
            p50, p99 = (float(np.median([x[k] for x in c1[w][n]])) for k in ("p50_ms", "p99_ms"))
            each = "; ".join(f"{x['rps']:.0f} rps, p50 {x['p50_ms']:.3f}, p99 {x['p99_ms']:.3f}" for x in c1[w][n])
            print(f"  -c1 {n}: median p50 {p50:.3f} ms, p99 {p99:.3f} ms; runs (ms): {each}")
    if any(x["non_2xx"] for by in runs.values() for xs in by.values() for x in xs):
        print("WARNING: some responses were not 2xx", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
