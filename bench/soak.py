"""Load and soak test of the online reader: capacity, then a long run at a fixed share of it with a publish and a
rollback in the middle, recording errors, latency before/during/after and the API's memory.

    python bench/soak.py [--duration 60] [--load 0.8] [--connections 32] [--entities 100000] [--json out.json]

Setup as ``bench_online.py``: a throw-away Redis (127.0.0.1) holding one published ``churn`` run (``bench-run``) of
``--entities`` scores, a PRESCORE_HOME with a promoted fallback, the API (``online.app:create_app``, one uvicorn
worker, prediction log on) pinned to CPU 0, wrk and redis-server pinned to CPU 1. GETs cycle over 1,000 ids.

1. Capacity: ``wrk -t1 -c<connections>`` for ``--capacity-duration`` s after a 2 s warm-up (requests/s).
2. Pacing: this wrk has no ``-R`` (constant rate, wrk2 only), so every connection waits ``delay()`` ms (wrk's Lua
   hook) before each request; one short calibration run measures the latency at that pace and sets the delay so
   the rate is ``--load`` x capacity.
3. Soak: ``--duration`` s in three equal, back-to-back wrk runs: ``before``, ``during`` (a separate process loads
   and publishes a new run ``soak-new`` at 25 % of it, another rolls back to ``bench-run`` at 65 %), ``after``.
   A Lua ``response()`` hook counts every answer by ``source`` and ``run_id``: "nothing lost" means every answer
   was 2xx and precomputed, none was a socket error, and both runs were served around the flip.
4. Memory: VmRSS of the API process from ``/proc/<pid>/status`` every second for the whole soak; growth =
   last - first sample, and over the second half alone (warm-up excluded).

Writes a JSON result (``--json``) and prints a summary.
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
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
from bench_online import MODEL, ROOT, Server, lua_get, parse_wrk, pin, setup, stop_servers_on_sigterm

from warehouse.prediction_stream import STREAM_KEY

NEW_RUN = "soak-new"
# Separate processes, as a scoring job and an operator would be: publish a new run of the same ids, roll back.
PUBLISH = f"""
import sys
from datetime import UTC, datetime, timedelta
import numpy as np
from warehouse.store import ScoreStore
url, n = sys.argv[1], int(sys.argv[2])
ids = [f"cust-{{i:08d}}" for i in range(n)]
scores = np.random.default_rng(9).random(n, dtype=np.float32)
with ScoreStore.from_url(url) as store:
    store.create_run("{MODEL}", "{NEW_RUN}", "primary-soak", datetime.now(UTC) - timedelta(hours=1), n)
    for i in range(0, n, 50_000):
        store.writer("{MODEL}", "{NEW_RUN}").write_batch(ids[i : i + 50_000], scores[i : i + 50_000])
    store.finalize_run("{MODEL}", "{NEW_RUN}")
    print(store.publish("{MODEL}", "{NEW_RUN}").run_id)
"""
ROLLBACK = f"""
import sys
from warehouse.store import ScoreStore
with ScoreStore.from_url(sys.argv[1]) as store:
    print(store.rollback("{MODEL}", to_run=sys.argv[2]).run_id)
"""


def counting_script(path: Path, plain: Path, delay_ms: int) -> Path:
    """``plain`` (the GET cycle) plus a fixed per-request delay and counts of answers by source and run id."""
    path.write_text(
        plain.read_text()
        + f"""
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {{}} end
function delay() return {delay_ms} end
function response(status, headers, body)
  local source = string.match(body, '"source":"(%a+)"') or ("status_" .. status)
  counts[source] = (counts[source] or 0) + 1
  local run = string.match(body, '"run_id":"([^"]+)"')
  if run then counts["run:" .. run] = (counts["run:" .. run] or 0) + 1 end
end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    local parts = {{}}
    for key, value in pairs(thread:get("counts")) do table.insert(parts, string.format('"%s":%d', key, value)) end
    io.write("COUNTS {{" .. table.concat(parts, ",") .. "}}\\n")
  end
end
"""
    )
    return path


def wrk(url: str, script: Path, connections: int, duration: float) -> dict[str, Any]:
    """One wrk run (one thread, 2 s request timeout); requests/s, percentiles (ms), errors and Lua counts."""
    cmd = [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "2s",
           "--latency", "-s", str(script), url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    requests = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    parsed = parse_wrk(out)
    result: dict[str, Any] = {
        "rps": parsed.pop("rps"),
        "requests": int(requests.group(1)) if requests else 0,
        "non_2xx": int(parsed.pop("non_2xx")),
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
    }
    result.update((key, round(value, 3)) for key, value in parsed.items())  # p50_ms … p99_ms
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        result["socket_errors"] = dict(
            zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True)
        )
    counts = re.search(r"^COUNTS (\{.*\})$", out, re.M)
    if counts:
        result["counts"] = json.loads(counts.group(1))
    return result


def rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) / 1024 if found else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase(url: str, script: Path, connections: int, duration: float, pid: int) -> dict[str, Any]:
    """``wrk`` plus what tells the API's own cost from the host's contention: the API's CPU ms per answer (flat
    when the API does not degrade) and the host's 1-minute load average at the end of the phase."""
    before = cpu_seconds(pid)
    result = wrk(url, script, connections, duration)
    used = cpu_seconds(pid) - before
    result["api_cpu_ms_per_answer"] = round(1000 * used / max(1, result["requests"]), 4)
    result["api_cpu_share"] = round(used / duration, 3)
    result["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    return result


class RssSampler(threading.Thread):
    """VmRSS of ``pid`` every ``every_s`` seconds until ``stop()``: ``samples`` = [(seconds since start, MiB)]."""

    def __init__(self, pid: int, every_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s, self.samples = pid, every_s, list[tuple[float, float]]()
        self._stop_event = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self._stop_event.is_set():
            value = rss_mib(self.pid)
            if value is not None:
                self.samples.append((round(time.monotonic() - start, 2), round(value, 2)))
            self._stop_event.wait(self.every_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def run_code(code: str, *args: str) -> dict[str, Any]:
    """Run ``python -c code args`` pinned with wrk (CPU 1); its outcome and how long it took."""
    t0 = time.monotonic()
    proc = subprocess.run([*pin(1), sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)  # fmt: skip
    return {"ok": proc.returncode == 0, "took_s": round(time.monotonic() - t0, 3),
            "output": (proc.stdout.strip() or proc.stderr.strip()[-500:])}  # fmt: skip


def events(url: str, entities: int, phase_s: float, log: list[dict[str, Any]], soak_start: float) -> None:
    """During the middle phase: publish ``soak-new`` at 25 % of it, roll back to ``bench-run`` at 65 %."""
    begin = time.monotonic()
    time.sleep(0.25 * phase_s)
    log.append({"event": "publish", "at_s": round(time.monotonic() - soak_start, 2),
                **run_code(PUBLISH, url, str(entities))})  # fmt: skip
    time.sleep(max(0.0, begin + 0.65 * phase_s - time.monotonic()))
    log.append({"event": "rollback", "at_s": round(time.monotonic() - soak_start, 2),
                **run_code(ROLLBACK, url, "bench-run")})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of soak (three equal phases)")
    parser.add_argument("--load", type=float, default=0.8, help="share of the measured capacity to hold")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--capacity-duration", type=float, default=5.0)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    phase_s = max(5.0, args.duration / 3)
    stop_servers_on_sigterm()
    load_before = round(os.getloadavg()[0], 2)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        server, run_id, _ = setup(work, args.entities)
        if pin(1):
            subprocess.run(["taskset", "-p", "-c", "1", str(server.pid)], check=True, capture_output=True)
        ids = [f"cust-{i:08d}" for i in np.random.default_rng(3).choice(args.entities, 1000, replace=False)]
        plain = lua_get(work / "get.lua", ids)
        env = {"PRESCORE_HOME": str(work / "home"), "PRESCORE_REDIS_URL": server.url, "PRESCORE_PREDICTION_LOG": "true"}
        api: Server | None = None
        sampler: RssSampler | None = None
        try:
            api = Server("online.app:create_app", env, "/readyz")
            wrk(api.url, plain, args.connections, 2)  # warm-up
            capacity = wrk(api.url, plain, args.connections, args.capacity_duration)
            target = args.load * capacity["rps"]
            delay = max(0, round(args.connections * 1000 / target))
            probe = wrk(api.url, counting_script(work / "probe.lua", plain, delay), args.connections, 3)
            latency_ms = max(0.0, args.connections * 1000 / probe["rps"] - delay)
            delay = max(0, round(args.connections * 1000 / target - latency_ms))
            script = counting_script(work / "soak.lua", plain, delay)
            print(f"capacity {capacity['rps']:.0f} rps at -c{args.connections}; holding {target:.0f} rps "
                  f"({args.load:.0%}) with a {delay} ms delay per request for {3 * phase_s:.0f} s",
                  flush=True)  # fmt: skip

            sampler = RssSampler(api.proc.pid)
            sampler.start()
            soak_start = time.monotonic()
            log: list[dict[str, Any]] = []
            phases: dict[str, dict[str, Any]] = {}
            phases["before"] = phase(api.url, script, args.connections, phase_s, api.proc.pid)
            mover = threading.Thread(target=events, args=(server.url, args.entities, phase_s, log, soak_start))
            mover.start()
            phases["during"] = phase(api.url, script, args.connections, phase_s, api.proc.pid)
            mover.join()
            phases["after"] = phase(api.url, script, args.connections, phase_s, api.proc.pid)
            sampler.stop()
            client = redis.Redis.from_url(server.url)
            stream_len = int(client.xlen(STREAM_KEY))
            client.close()
        finally:
            if sampler is not None:
                sampler.stop()
            if api is not None:
                api.stop()
            server.stop()

    samples = sampler.samples
    half = [v for t, v in samples if t >= samples[-1][0] / 2] if samples else []
    answers = sum(p["requests"] for p in phases.values())
    socket_errors = sum(sum(p["socket_errors"].values()) for p in phases.values())
    non_2xx = sum(p["non_2xx"] for p in phases.values())
    counted = {k: sum(p.get("counts", {}).get(k, 0) for p in phases.values()) for k in ("precomputed", "fallback",
                                                                                          "default")}  # fmt: skip
    runs_during = sorted(k.removeprefix("run:") for k in phases["during"].get("counts", {}) if k.startswith("run:"))
    runs_after = sorted(k.removeprefix("run:") for k in phases["after"].get("counts", {}) if k.startswith("run:"))
    not_precomputed = sum(v for p in phases.values() for k, v in p.get("counts", {}).items()
                          if not k.startswith("run:") and k != "precomputed")  # fmt: skip
    result = {
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average_1m": load_before,
                        "entities": args.entities, "connections": args.connections, "duration_s": 3 * phase_s,
                        "load": args.load, "command": " ".join(["python", "bench/soak.py", *sys.argv[1:]])},
        "capacity": capacity,
        "target_rps": round(target, 1),
        "delay_ms": delay,
        "phases": phases,
        "events": log,
        "answers": answers,
        "errors": {"non_2xx": non_2xx, "socket_errors": socket_errors, "not_precomputed": not_precomputed},
        "sources": counted,
        "runs_served_during": runs_during,
        "runs_served_after": runs_after,
        "prediction_log_entries": stream_len,
        "rss_mib": {
            "samples": samples,
            "first": samples[0][1] if samples else None,
            "last": samples[-1][1] if samples else None,
            "max": max(v for _, v in samples) if samples else None,
            "growth": round(samples[-1][1] - samples[0][1], 2) if samples else None,
            "growth_second_half": round(half[-1] - half[0], 2) if half else None,
        },
        "nothing_lost": non_2xx == 0 and socket_errors == 0 and not_precomputed == 0
        and all(e["ok"] for e in log) and NEW_RUN in runs_during and runs_after == [run_id],
    }  # fmt: skip

    print("\n| phase | requests | rps | p50 ms | p99 ms | non-2xx | socket errors | API CPU ms/answer | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, p in phases.items():
        print(f"| {name} | {p['requests']:,} | {p['rps']:.0f} | {p.get('p50_ms', 0):.2f} | {p.get('p99_ms', 0):.2f} "
              f"| {p['non_2xx']} | {sum(p['socket_errors'].values())} | {p['api_cpu_ms_per_answer']:.3f} "
              f"| {p['load_average_1m_end']} |")  # fmt: skip
    for e in log:
        print(f"{e['event']} at {e['at_s']} s: {'ok' if e['ok'] else 'FAILED'} in {e['took_s']} s ({e['output']})")
    rss = result["rss_mib"]
    print(f"RSS MiB: first {rss['first']}, last {rss['last']}, max {rss['max']}, growth {rss['growth']} "
          f"(second half {rss['growth_second_half']}); runs served during {runs_during}, after {runs_after}",
          flush=True)  # fmt: skip
    print(f"nothing lost: {result['nothing_lost']} ({answers:,} answers, {non_2xx} non-2xx, {socket_errors} socket "
          f"errors, {not_precomputed} not precomputed)")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if not result["nothing_lost"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
