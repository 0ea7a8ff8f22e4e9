"""Benchmark of the online reader over HTTP: prescore against a bare Starlette + orjson + redis.asyncio baseline.

    python bench/bench_online.py [--duration 5] [--connections 32] [--rounds 5] [--json out.json]

Sets up a throw-away Redis (127.0.0.1) holding one published ``churn`` run of ``--entities`` scores, and a
PRESCORE_HOME with a promoted 30-tree depth-4 fallback model. Then, with wrk on loopback (each server one uvicorn
worker, uvloop + httptools, pinned to CPU 0; wrk and redis-server pinned to CPU 1 when there are >= 2 CPUs),
all three servers up at once and loaded one at a time, in interleaved rounds so drift hits every variant alike:

- ``baseline``: ``bare_baseline.make_baseline``, GET /v1/scores/churn/<id> → one HGET on the id's bucket → orjson;
- ``prescore``: ``online.app:create_app`` (prediction log on), same URLs;
- ``prescore_nolog``: the same with ``PRESCORE_PREDICTION_LOG=false``.

Then p50/p99 at one connection (baseline and prescore, two interleaved runs each, both reported), and the
fallback path: POST /v1/scores/churn with the 8 features for ids that have no precomputed score. Every wrk run
cycles over the same 1000 entity URLs. Figures: requests/s (mean over rounds) and the median over rounds of the
ratio to the baseline measured in the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import xgboost as xgb

from warehouse.registry import Registry
from warehouse.store import ScoreStore, free_port, start_redis

MODEL = "churn"
FEATURES = [f"f0{i}" for i in range(8)]
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# ---------------------------------------------------------------- setup


def train_fallback() -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(scale=50.0, size=(5000, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + rng.normal(scale=20.0, size=len(x)) > 0).astype(np.float32)
    params = {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "tree_method": "hist"}
    return xgb.train(params, xgb.DMatrix(x, label=y, feature_names=FEATURES), num_boost_round=30)


def setup(work: Path, entities: int) -> tuple[Any, str, int]:
    """Redis with one published run, and a home with a promoted fallback. Returns (server, run id, buckets)."""
    server = start_redis(work / "redis")
    ids = [f"cust-{i:08d}" for i in range(entities)]
    scores = np.random.default_rng(1).random(entities, dtype=np.float32)
    run_id = "bench-run"
    with ScoreStore.from_url(server.url) as store:
        info = store.create_run(MODEL, run_id, "primary-bench", datetime.now(UTC) - timedelta(hours=2), entities)
        for i in range(0, entities, 50_000):
            store.writer(MODEL, run_id).write_batch(ids[i : i + 50_000], scores[i : i + 50_000])
        store.finalize_run(MODEL, run_id)
        store.publish(MODEL, run_id)
    registry = Registry(work / "home" / "models")
    manifest = registry.register(MODEL, "fallback", train_fallback(), FEATURES, {}, {})
    registry.promote(MODEL, "fallback", manifest.version)
    return server, run_id, info.n_buckets


def lua_get(path: Path, ids: list[str]) -> Path:
    urls = ",".join(f'"/v1/scores/{MODEL}/{i}"' for i in ids)
    cycle = "request = function()\n  n = n % #urls + 1\n  return wrk.format('GET', urls[n])\nend\n"
    path.write_text(f"local urls = {{{urls}}}\nlocal n = 0\n{cycle}")
    return path


def lua_fallback(path: Path, ids: list[str]) -> Path:
    rng = np.random.default_rng(2)
    bodies = []
    for i in ids:
        features = dict(zip(FEATURES, np.round(rng.normal(scale=50.0, size=8), 3).tolist(), strict=True))
        bodies.append("'" + orjson.dumps({"entity_id": i, "features": features}).decode() + "'")
    path.write_text(
        f"local bodies = {{{','.join(bodies)}}}\nlocal n = 0\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        "request = function()\n  n = n % #bodies + 1\n"
        f"  return wrk.format('POST', '/v1/scores/{MODEL}', nil, bodies[n])\nend\n"
    )
    return path


# ---------------------------------------------------------------- servers and wrk


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) >= 2 else []


class Server:
    """One uvicorn process (1 worker) on 127.0.0.1, stopped by PID."""

    def __init__(self, target: str, env: dict[str, str], ready_path: str, factory: bool = True) -> None:
        self.port = free_port()
        cmd = [*pin(0), sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level",
               "warning", "--app-dir", str(HERE)]  # fmt: skip
        if factory:
            cmd.append("--factory")
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{target} exited at start with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}{ready_path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{target} did not become ready within 30 s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def stop_servers_on_sigterm() -> None:
    """SIGTERM (a CI timeout, ``kill``) unwinds like Ctrl-C, so the ``finally`` blocks stop the redis-server and
    uvicorn processes started here instead of leaving them running."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, non-2xx count and latency percentiles (ms) from wrk's ``--latency`` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result = {"rps": rps, "non_2xx": float(errors.group(1)) if errors else 0.0}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        result[f"p{pct}_ms"] = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    return result


def wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, float]:
    cmd = [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per throughput run")
    parser.add_argument("--latency-duration", type=int, default=5, help="seconds per -c1 run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    stop_servers_on_sigterm()

    with tempfile.TemporaryDirectory(prefix="bench-online-") as tmp:
        work = Path(tmp)
        server, run_id, n_buckets = setup(work, args.entities)
        if pin(1):
            subprocess.run(["taskset", "-p", "-c", "1", str(server.pid)], check=True, capture_output=True)
        ids = [f"cust-{i:08d}" for i in np.random.default_rng(3).choice(args.entities, 1000, replace=False)]
        get_script = lua_get(work / "get.lua", ids)
        fallback_script = lua_fallback(work / "fallback.lua", [f"unknown-{i}" for i in range(1000)])
        prescore_env = {"PRESCORE_HOME": str(work / "home"), "PRESCORE_REDIS_URL": server.url}
        variants: dict[str, tuple[str, dict[str, str], str, bool]] = {
            "baseline": ("bare_baseline:make_baseline",
                         {"BENCH_REDIS_URL": server.url, "BENCH_RUN_ID": run_id, "BENCH_BUCKETS": str(n_buckets)},
                         "/healthz", True),
            "prescore": ("online.app:create_app", {**prescore_env, "PRESCORE_PREDICTION_LOG": "true"}, "/readyz", True),
            "prescore_nolog": ("online.app:create_app", {**prescore_env, "PRESCORE_PREDICTION_LOG": "false"},
                               "/readyz", True),
        }  # fmt: skip
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        servers: dict[str, Server] = {}
        try:
            for name, (target, env, ready, factory) in variants.items():
                servers[name] = Server(target, env, ready, factory)
                wrk(servers[name].url, get_script, args.connections, 2)  # warm-up
            for r in range(args.rounds):  # interleaved: machine drift hits every variant alike
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                for name in order:
                    runs[name].append(wrk(servers[name].url, get_script, args.connections, args.duration))
                print(f"round {r + 1}: " + ", ".join(f"{n} {runs[n][-1]['rps']:.0f}" for n in variants), flush=True)
            latency: dict[str, list[dict[str, float]]] = {"baseline": [], "prescore": []}
            for _ in range(2):
                for name in latency:
                    latency[name].append(wrk(servers[name].url, get_script, 1, args.latency_duration))
            wrk(servers["prescore"].url, fallback_script, args.connections, 1)
            fallback = wrk(servers["prescore"].url, fallback_script, args.connections, args.duration)
        finally:
            for srv in servers.values():
                srv.stop()
            server.stop()

    mean = {name: float(np.mean([x["rps"] for x in xs])) for name, xs in runs.items()}

    def per_round(a: str, b: str) -> float:  # median over rounds of the ratio measured within each round
        return float(np.median([x["rps"] / y["rps"] for x, y in zip(runs[a], runs[b], strict=True)]))

    result = {
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_average_1m": os.getloadavg()[0], "entities": args.entities,
                        "connections": args.connections, "duration_s": args.duration, "rounds": args.rounds},
        "rps": mean,
        "runs": runs,
        "ratio_prescore_vs_baseline": per_round("prescore", "baseline"),
        "ratio_nolog_vs_baseline": per_round("prescore_nolog", "baseline"),
        "ratio_log_on_vs_off": per_round("prescore", "prescore_nolog"),
        "latency_c1": latency,
        "fallback": fallback,
    }  # fmt: skip
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} interleaved rounds; mean requests/s, "
          "median of per-round ratios:\n")  # fmt: skip
    print("| variant | rps | vs baseline |\n|---|---:|---:|")
    for name, value in mean.items():
        print(f"| {name} | {value:.0f} | {per_round(name, 'baseline'):.2f} |")
    print(f"| prescore fallback (POST with features) | {fallback.get('rps', 0):.0f} | "
          f"{fallback.get('rps', 0) / mean['baseline']:.2f} |")  # fmt: skip
    print(f"\nprediction log on/off: {result['ratio_log_on_vs_off']:.3f}")
    for name, lats in latency.items():
        for lat in lats:
            p50, p99 = lat.get("p50_ms", 0.0), lat.get("p99_ms", 0.0)
            print(f"-c1 {name}: {lat['rps']:.0f} rps, p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    if any(x["non_2xx"] for xs in runs.values() for x in xs) or fallback.get("non_2xx"):
        print("WARNING: some responses were not 2xx", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
