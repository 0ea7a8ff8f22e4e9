"""Benchmark of a canary's lookup cost: the online reader serving a model with a 10 % canary against the same reader
serving it champion-only, in the same run.

    python bench/bench_canary.py [--duration 5] [--connections 32] [--rounds 5] [--json out.json]

Sets up a throw-away Redis (127.0.0.1) holding a published ``churn`` run and a challenger run of ``--entities``
scores each, and a PRESCORE_HOME whose registry holds a promoted fallback, a production primary version and a
registered challenger. Three ``online.app:create_app`` servers (one uvicorn worker each, uvloop + httptools, pinned
to CPU 0; wrk and redis-server pinned to CPU 1 when there are >= 2 CPUs; prediction log on), up at once and loaded
one at a time in interleaved rounds, so drift hits every variant alike:

- ``champion``: the models file without a rollout (every lookup: one HGET of the champion's bucket);
- ``canary``: ``rollout: {challenger, percent: 10, mode: canary}`` (one HGET of the chosen variant's bucket);
- ``shadow``: ``mode: shadow`` (both runs' buckets in one pipeline).

Each round runs GET /v1/scores/churn/<id> cycling over 1000 ids, then POST /v1/scores/churn/batch of 100 ids
cycling over 50 bodies. Figures: requests/s (mean over rounds) and the median over rounds of the ratio to
``champion`` measured in the same round (target: canary >= 0.90).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from bench_online import MODEL, Server, lua_get, pin, stop_servers_on_sigterm, train_fallback, wrk

from warehouse.registry import Registry
from warehouse.settings import DEFAULT_MODELS_FILE
from warehouse.store import ScoreStore, start_redis

VARIANTS = ("champion", "canary", "shadow")


def setup(work: Path, entities: int) -> tuple[Any, dict[str, Path]]:
    """Redis with the champion's and the challenger's runs; a home with a fallback, a production primary and a
    challenger; one models file per variant. Returns (server, variant → models file)."""
    server = start_redis(work / "redis")
    ids = [f"cust-{i:08d}" for i in range(entities)]
    registry = Registry(work / "home" / "models")
    fallback = registry.register(MODEL, "fallback", train_fallback(), [f"f0{i}" for i in range(8)], {}, {})
    registry.promote(MODEL, "fallback", fallback.version)
    champion, challenger = (registry.register(MODEL, "primary", train_fallback(), [f"f0{i}" for i in range(8)], {},
                                              {"n": n}).version for n in (1, 2))  # fmt: skip
    registry.promote(MODEL, "primary", champion)
    registry.add_challenger(MODEL, challenger)
    as_of = datetime.now(UTC) - timedelta(hours=2)
    with ScoreStore.from_url(server.url) as store:
        for run_id, version, seed in (("bench-champion", champion, 1), ("bench-challenger", challenger, 2)):
            scores = np.random.default_rng(seed).random(entities, dtype=np.float32)
            store.create_run(MODEL, run_id, version, as_of, entities)
            for i in range(0, entities, 50_000):
                store.writer(MODEL, run_id).write_batch(ids[i : i + 50_000], scores[i : i + 50_000])
            store.finalize_run(MODEL, run_id)
        store.publish(MODEL, "bench-champion")
        store.publish_challenger(MODEL, challenger, "bench-challenger")
    files = {}
    for name in VARIANTS:
        raw = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
        if name != "champion":
            mode = "shadow" if name == "shadow" else "canary"
            raw["models"][MODEL]["rollout"] = {"challenger": challenger, "percent": 10.0, "mode": mode}
        files[name] = work / f"models-{name}.yaml"
        files[name].write_text(yaml.safe_dump(raw))
    return server, files


def lua_batch(path: Path, ids: list[str], size: int) -> Path:
    bodies = ["'" + orjson.dumps({"entity_ids": ids[i : i + size]}).decode() + "'" for i in range(0, len(ids), size)]
    path.write_text(
        f"local bodies = {{{','.join(bodies)}}}\nlocal n = 0\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        "request = function()\n  n = n % #bodies + 1\n"
        f"  return wrk.format('POST', '/v1/scores/{MODEL}/batch', nil, bodies[n])\nend\n"
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    stop_servers_on_sigterm()

    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp:
        work = Path(tmp)
        server, files = setup(work, args.entities)
        if pin(1):
            subprocess.run(["taskset", "-p", "-c", "1", str(server.pid)], check=True, capture_output=True)
        rng = np.random.default_rng(3)
        ids = [f"cust-{i:08d}" for i in rng.choice(args.entities, 5000, replace=False)]
        scripts = {"get": lua_get(work / "get.lua", ids[:1000]), "batch": lua_batch(work / "batch.lua", ids, 100)}
        env = {"PRESCORE_HOME": str(work / "home"), "PRESCORE_REDIS_URL": server.url, "PRESCORE_PREDICTION_LOG": "true"}
        runs: dict[str, dict[str, list[dict[str, float]]]] = {k: {n: [] for n in VARIANTS} for k in scripts}
        servers: dict[str, Server] = {}
        try:
            for name in VARIANTS:
                servers[name] = Server("online.app:create_app", {**env, "PRESCORE_MODELS_FILE": str(files[name])},
                                       "/readyz")  # fmt: skip
                for script in scripts.values():
                    wrk(servers[name].url, script, args.connections, 2)  # warm-up
            for r in range(args.rounds):  # interleaved: machine drift hits every variant alike
                order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
                for kind, script in scripts.items():
                    for name in order:
                        runs[kind][name].append(wrk(servers[name].url, script, args.connections, args.duration))
                    print(f"round {r + 1} {kind}: "
                          + ", ".join(f"{n} {runs[kind][n][-1]['rps']:.0f}" for n in VARIANTS), flush=True)  # fmt: skip
        finally:
            for srv in servers.values():
                srv.stop()
            server.stop()

    def ratio(kind: str, name: str) -> float:  # median over rounds of the ratio measured within each round
        pairs = zip(runs[kind][name], runs[kind]["champion"], strict=True)
        return float(np.median([x["rps"] / y["rps"] for x, y in pairs]))

    mean = {kind: {n: float(np.mean([x["rps"] for x in xs])) for n, xs in by.items()} for kind, by in runs.items()}
    result = {
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_average_1m": os.getloadavg()[0], "entities": args.entities,
                        "connections": args.connections, "duration_s": args.duration, "rounds": args.rounds},
        "rps": mean,
        "runs": runs,
        "ratio_vs_champion": {kind: {n: ratio(kind, n) for n in VARIANTS} for kind in runs},
    }  # fmt: skip
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} interleaved rounds; mean requests/s, "
          "median of per-round ratios to champion-only:\n")  # fmt: skip
    print("| request | variant | rps | vs champion |\n|---|---|---:|---:|")
    for kind in runs:
        for name in VARIANTS:
            print(f"| {kind} | {name} | {mean[kind][name]:.0f} | {ratio(kind, name):.3f} |")
    if any(x["non_2xx"] for by in runs.values() for xs in by.values() for x in xs):
        print("WARNING: some responses were not 2xx", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
