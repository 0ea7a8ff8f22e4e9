"""Benchmark of the overlay layer (``warehouse.store.overlays``): lookup cost with 0, 1 and 10 delta runs published
over a base run, against base-only lookups measured in the same rounds, and the latency of a delta publish from
the call to the first lookup that serves it, against publishing the same entities as a fresh base run.

    python bench/bench_overlay.py [--entities 1000000] [--delta 10000] [--rounds 5] [--trials 4] [--json out.json]
    python bench/bench_overlay.py --quick     # small sizes: a smoke test

Sets up a throw-away redis-server (127.0.0.1) and loads two models with identical base runs of ``--entities``
scores: ``plain`` never gets a layer (the baseline) and ``layered`` gets the deltas. Delta ``k`` (0-based) holds
``--delta`` entities: half existing ids rescored, half new ids, each half sharing 20 % of its ids with delta
``k - 1`` (so 10 deltas make a layer of ~8.2 × ``--delta`` entities).

1. **Lookups** (sync ``ScoreReader``, read cache off: every lookup goes to Redis; pointers cached, ``refresh_s``
   0.5 as by default). Stages: 0 overlays, 1 delta, 10 deltas. In each stage ``--rounds`` rounds; in each round
   both models are measured one after the other (order alternating per round) on the same ids: ``--lookups``
   single-id ``get`` calls and ``--batches`` ``get_many`` calls of 100 ids, with ids drawn (afresh each round)
   ``uniform`` over the base ids (~1 % of them in a 10k layer, plus the Bloom filter's false positives) or only
   from the ``overlaid`` existing ids (worst case: every id reads the layer's bucket too). Figures: µs per call,
   median over rounds, and the median over rounds of the per-round ratio layered ÷ plain. Target: 10 overlays
   within 10 % of base-only on uniform ids.
2. **Publish → servable** (``--trials`` trials, on ``plain`` once the lookups are done, with a second identical
   base run to reset to): a reader in another process (``refresh_s`` 0.5, the online reader's pointer cache,
   polling every ~1 ms as a busy reader would) is handed a changed id and its new score; the time from calling
   ``publish_delta`` until that reader first returns it, and the ``publish_delta`` call alone. Cases: the first
   delta over the base (no layer), the 10th (a layer of 9 deltas), and the baseline: the same ``--delta``
   entities published as a fresh base run of their own model (create_run, write_batch, finalize_run, publish).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from bench_store import make_ids

from warehouse.store import ScoreReader, ScoreStore, start_redis
from warehouse.store.ids import encode_entity_id

PLAIN, LAYERED, FULL = "plain", "layered", "fresh"
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
STAGES = (0, 1, 10)
WORKLOADS = ("uniform", "overlaid")
OPS = ("get", "get_many_100")
OVERLAP = 0.2  # share of a delta's half (existing / new ids) that the previous delta holds too


class Deltas:
    """The delta runs: ``ids(k)``, ``scores(k)`` (in [1 + k, 2 + k), so never a base score or an earlier delta's)
    and ``existing(k)``, the base ids delta ``k`` rescores."""

    def __init__(self, base_ids: list[str], size: int, count: int) -> None:
        half = size // 2
        step = max(1, int(half * (1 - OVERLAP)))
        need = step * (count - 1) + half
        if need > len(base_ids):
            raise SystemExit(f"{count} deltas of {size} need {need} base ids; --entities is {len(base_ids)}")
        picked = np.random.default_rng(7).permutation(len(base_ids))[:need]
        self.pool = [base_ids[i] for i in picked.tolist()]
        self.new = [f"new-{i:09d}" for i in range(need)]
        self.half, self.step, self.size = half, step, size

    def existing(self, k: int) -> list[str]:
        return self.pool[k * self.step : k * self.step + self.half]

    def ids(self, k: int) -> list[str]:
        fresh = self.new[k * self.step : k * self.step + self.size - self.half]
        return [*self.existing(k), *fresh]

    def scores(self, k: int, offset: float = 0.0) -> list[float]:
        rng = np.random.default_rng(100 + k)
        values = (rng.random(self.size).astype(np.float32) + np.float32(1 + k + offset)).astype(np.float32)
        return [float(x) for x in values]


def load_base(store: ScoreStore, model: str, run_id: str, ids: list[str], scores: np.ndarray) -> None:
    store.create_run(model, run_id, "v1", AS_OF, len(ids))
    store.writer(model, run_id, entities_per_round_trip=50_000).write_batch(ids, scores)
    info = store.finalize_run(model, run_id)
    assert info.loaded_rows == len(ids), info


def publish_delta(store: ScoreStore, model: str, deltas: Deltas, k: int, name: str, offset: float = 0.0) -> float:
    """``publish_delta`` of delta ``k`` over the live run of ``model``; returns the call's seconds."""
    base = store.current_run(model)
    assert base is not None
    ids, now = deltas.ids(k), time.time()
    start = time.perf_counter()
    store.overlays.publish_delta(model, base.run_id, name, ids, deltas.scores(k, offset), [now] * len(ids))
    return time.perf_counter() - start


# ---------------------------------------------------------------- 1. lookups


def time_gets(reader: ScoreReader, model: str, ids: list[str]) -> float:
    """µs per ``get``."""
    get = reader.get
    start = time.perf_counter()
    for entity in ids:
        get(model, entity)
    return (time.perf_counter() - start) / len(ids) * 1e6


def time_get_many(reader: ScoreReader, model: str, batches: list[list[str]]) -> float:
    """µs per ``get_many`` of one batch."""
    get_many = reader.get_many
    start = time.perf_counter()
    for batch in batches:
        get_many(model, batch)
    return (time.perf_counter() - start) / len(batches) * 1e6


def lookup_stage(
    reader: ScoreReader, base_ids: list[str], overlaid: list[str], args: argparse.Namespace, rng: np.random.Generator
) -> dict[str, Any]:
    """``--rounds`` interleaved rounds of both models on the same ids; µs per call of each, per round."""
    runs: dict[str, dict[str, dict[str, list[float]]]] = {
        w: {op: {PLAIN: [], LAYERED: []} for op in OPS} for w in WORKLOADS
    }
    for r in range(args.rounds):
        for workload in WORKLOADS:
            pool = base_ids if workload == "uniform" else overlaid
            singles = [pool[i] for i in rng.integers(0, len(pool), args.lookups).tolist()]
            many = [[pool[i] for i in rng.integers(0, len(pool), 100).tolist()] for _ in range(args.batches)]
            order = (PLAIN, LAYERED) if r % 2 == 0 else (LAYERED, PLAIN)
            for model in order:
                runs[workload]["get"][model].append(time_gets(reader, model, singles))
            for model in reversed(order):
                runs[workload]["get_many_100"][model].append(time_get_many(reader, model, many))
    return runs


def check_layer(reader: ScoreReader, deltas: Deltas, applied: int) -> dict[str, float]:
    """The layered model serves the newest delta's scores; the share of uniform base ids its filter flags."""
    k = applied - 1
    ids, scores = deltas.ids(k), deltas.scores(k)
    for i in (0, len(ids) - 1):
        hit = reader.get(LAYERED, ids[i])
        assert hit is not None and hit.overlay and hit.score == scores[i], (ids[i], hit, scores[i])
        assert reader.get(PLAIN, ids[i]) != hit
    layer = reader.layer(LAYERED)
    assert layer is not None and layer.overlays == applied, layer
    return {"layer_entities": layer.entities, "layer_buckets": layer.n_buckets}


def filter_share(reader: ScoreReader, base_ids: list[str], rng: np.random.Generator) -> float:
    layer = reader.layer(LAYERED)
    if layer is None:
        return 0.0
    drawn = [base_ids[i] for i in rng.integers(0, len(base_ids), 20_000).tolist()]
    return sum(layer.may_hold(encode_entity_id(e)) for e in drawn) / len(drawn)


# ---------------------------------------------------------------- 2. publish → servable


def poller(url: str, conn: Connection) -> None:
    """A busy reader in its own process: polls the target ``(model, id, score)`` it is sent every ~1 ms and sends
    back the ``time.monotonic()`` (system-wide) at which a lookup first returned that score; None ends it."""
    reader = ScoreReader.from_url(url, refresh_s=0.5)
    target: tuple[str, str, float] | None = None
    while True:
        if conn.poll(0 if target else None):
            target = conn.recv()
            if target is None:
                return
        assert target is not None
        model, entity, score = target
        hit = reader.get(model, entity)
        if hit is not None and hit.score == score:
            conn.send(time.monotonic())
            target = None
        else:
            time.sleep(0.001)


def servable(
    conn: Connection, model: str, entity: str, score: float, publish: Any, rng: np.random.Generator
) -> dict[str, float]:
    """Hand the poller its target, wait a random phase, call ``publish``: the call's seconds and the seconds from
    the call until the poller first served ``score``."""
    conn.send((model, entity, score))
    time.sleep(0.3 + 0.5 * float(rng.random()))  # the reader polls: its pointer cache at a random phase
    start = time.monotonic()
    publish()
    returned = time.monotonic()
    if not conn.poll(30):
        raise RuntimeError(f"the reader never served the new score of {entity} ({model})")
    seen = float(conn.recv())
    return {"call_s": returned - start, "servable_s": seen - start}


def publish_trials(
    store: ScoreStore, url: str, deltas: Deltas, args: argparse.Namespace
) -> dict[str, list[dict[str, float]]]:
    rng = np.random.default_rng(31)
    out: dict[str, list[dict[str, float]]] = {"fresh_run": [], "delta_no_layer": [], "delta_over_9": []}
    parent, child = multiprocessing.get_context("spawn").Pipe()
    proc = multiprocessing.get_context("spawn").Process(target=poller, args=(url, child), daemon=True)
    proc.start()
    changed = deltas.existing(0)[0]  # rescored by delta 0 (and, as the fresh run's first id, by it)
    last = deltas.existing(9)[0]  # rescored by delta 8 too: its score changes again
    try:
        for t in range(args.trials):
            base = ("base-a", "base-b")[t % 2]
            store.publish(PLAIN, base, force=True)  # a pointer change: the layer goes
            offset = 100.0 * (t + 1)
            first = deltas.scores(0, offset)[0]

            def first_delta(t: int = t, offset: float = offset) -> None:
                publish_delta(store, PLAIN, deltas, 0, f"t{t}-d0", offset)

            out["delta_no_layer"].append(servable(parent, PLAIN, changed, first, first_delta, rng))
            for k in range(1, 9):
                publish_delta(store, PLAIN, deltas, k, f"t{t}-d{k}", offset)
            tenth = deltas.scores(9, offset)[0]

            def tenth_delta(t: int = t, offset: float = offset) -> None:
                publish_delta(store, PLAIN, deltas, 9, f"t{t}-d9", offset)

            out["delta_over_9"].append(servable(parent, PLAIN, last, tenth, tenth_delta, rng))
            ids, scores = deltas.ids(0), deltas.scores(0, offset)

            def fresh_run(t: int = t, ids: list[str] = ids, scores: list[float] = scores) -> None:
                run_id = f"fresh-{t}"
                store.create_run(FULL, run_id, "v1", AS_OF + timedelta(hours=t + 1), len(ids))
                store.writer(FULL, run_id).write_batch(ids, np.asarray(scores, dtype=np.float32))
                store.finalize_run(FULL, run_id)
                store.publish(FULL, run_id)

            out["fresh_run"].append(servable(parent, FULL, changed, first, fresh_run, rng))
            print(f"publish trial {t + 1}: " + ", ".join(
                f"{k} call {v[-1]['call_s'] * 1e3:.0f} ms, servable {v[-1]['servable_s'] * 1e3:.0f} ms"
                for k, v in out.items()), flush=True)  # fmt: skip
    finally:
        parent.send(None)
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
    return out


# ---------------------------------------------------------------- report


def med(values: list[float]) -> float:
    return float(np.median(values))


def summarize(stages: dict[int, dict[str, Any]]) -> dict[str, Any]:
    rows = {}
    for stage, runs in stages.items():
        for w in WORKLOADS:
            for op in OPS:
                plain, layered = runs[w][op][PLAIN], runs[w][op][LAYERED]
                rows[f"{stage}:{w}:{op}"] = {
                    "overlays": stage, "ids": w, "op": op, "plain_us": med(plain), "layered_us": med(layered),
                    "ratio": med([y / x for x, y in zip(plain, layered, strict=True)]),
                    "ratio_min": min(y / x for x, y in zip(plain, layered, strict=True)),
                    "ratio_max": max(y / x for x, y in zip(plain, layered, strict=True)),
                }  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=1_000_000, help="entities of each base run")
    parser.add_argument("--delta", type=int, default=10_000, help="entities of each delta run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved lookup rounds per stage")
    parser.add_argument("--lookups", type=int, default=2000, help="single-id gets per model per round")
    parser.add_argument("--batches", type=int, default=200, help="get_many calls of 100 ids per model per round")
    parser.add_argument("--trials", type=int, default=4, help="publish → servable trials")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.entities, args.delta, args.rounds, args.lookups, args.batches, args.trials = 50_000, 1000, 2, 200, 20, 1
    command = shlex.join(["python", "bench/bench_overlay.py", *sys.argv[1:]])
    n = args.entities
    base_ids, base_scores = make_ids(n, seed=0), np.random.default_rng(0).random(n, dtype=np.float32)
    deltas = Deltas(base_ids, args.delta, 10)
    rng = np.random.default_rng(3)
    stages: dict[int, dict[str, Any]] = {}
    checks: dict[int, dict[str, float]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-overlay-") as tmp:
        server = start_redis(Path(tmp))
        try:
            store = ScoreStore.from_url(server.url, socket_timeout=60)
            print(f"loading 2 x {n:,} base scores ...", flush=True)
            for model in (PLAIN, LAYERED):
                load_base(store, model, "base-a", base_ids, base_scores)
                store.publish(model, "base-a")
            reader = ScoreReader.from_url(server.url, cache=None)
            publish_s: list[float] = []
            applied = 0
            for stage in STAGES:
                while applied < stage:
                    publish_s.append(publish_delta(store, LAYERED, deltas, applied, f"delta-{applied}"))
                    applied += 1
                if stage:
                    time.sleep(1.0)  # the reader's pointer cache (refresh_s 0.5, max_stale_s 0.9) sees the layer
                    checks[stage] = check_layer(reader, deltas, stage)
                    checks[stage]["filter_share"] = filter_share(reader, base_ids, rng)
                overlaid = list(dict.fromkeys(e for k in range(max(1, stage)) for e in deltas.existing(k)))
                for model in (PLAIN, LAYERED):  # warm-up (connections, pointer cache)
                    time_gets(reader, model, base_ids[:200])
                stages[stage] = lookup_stage(reader, base_ids, overlaid, args, rng)
                s = summarize({stage: stages[stage]})
                print(f"{stage} overlays: " + ", ".join(f"{r['ids']} {r['op']} {r['ratio']:.3f}" for r in s.values()),
                      flush=True)  # fmt: skip
            reader.close()
            print(f"loading a second base run of {PLAIN} ...", flush=True)
            load_base(store, PLAIN, "base-b", base_ids, base_scores)
            trials = publish_trials(store, server.url, deltas, args)
            redis_version = str(store.client.info()["redis_version"])
        finally:
            server.stop()
    rows = summarize(stages)
    pub = {k: {"call_s": med([x["call_s"] for x in v]), "servable_s": med([x["servable_s"] for x in v])}
           for k, v in trials.items()}  # fmt: skip
    for k in pub:
        pub[k]["call_vs_fresh"] = pub[k]["call_s"] / pub["fresh_run"]["call_s"]
        pub[k]["servable_vs_fresh"] = pub[k]["servable_s"] / pub["fresh_run"]["servable_s"]
    result = {
        "command": command,
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(), "redis": redis_version,
                        "load_average_1m": os.getloadavg()[0], "entities": n, "delta": args.delta,
                        "rounds": args.rounds, "lookups": args.lookups, "batches": args.batches,
                        "trials": args.trials, "seconds": time.perf_counter() - started},
        "layer_checks": checks, "lookup_runs": stages, "lookups": rows,
        "layered_publish_s": publish_s, "publish_trials": trials, "publish": pub,
    }  # fmt: skip
    print(f"\n{command}\n{n:,} base entities, deltas of {args.delta:,}; {args.rounds} interleaved rounds per stage "
          f"({args.lookups} gets, {args.batches} get_many of 100 per model per round); read cache off\n")  # fmt: skip
    print("| overlays | ids | call | base-only µs | layered µs | layered ÷ base-only (median; min–max) |")
    print("|---:|---|---|---:|---:|---:|")
    for r in rows.values():
        print(f"| {r['overlays']} | {r['ids']} | {r['op']} | {r['plain_us']:.1f} | {r['layered_us']:.1f} "
              f"| {r['ratio']:.3f} ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) |")  # fmt: skip
    print()
    for stage, c in checks.items():
        print(f"layer after {stage} delta(s): {c['layer_entities']:.0f} entities, {c['layer_buckets']:.0f} buckets; "
              f"filter flags {c['filter_share'] * 100:.2f} % of uniform base ids")  # fmt: skip
    print(f"layered model's publish_delta calls (s): {', '.join(f'{s:.2f}' for s in publish_s)}")
    print(f"\npublish → servable, {args.trials} trial(s), medians (reader in another process, refresh_s 0.5):\n")
    print("| publish | call ms | servable ms | call ÷ fresh run | servable ÷ fresh run |")
    print("|---|---:|---:|---:|---:|")
    for k, v in pub.items():
        print(f"| {k} | {v['call_s'] * 1e3:.0f} | {v['servable_s'] * 1e3:.0f} | {v['call_vs_fresh']:.2f} "
              f"| {v['servable_vs_fresh']:.2f} |")  # fmt: skip
    target = rows["10:uniform:get"]["ratio"], rows["10:uniform:get_many_100"]["ratio"]
    met = "met" if max(target) <= 1.10 else "NOT met"
    print(f"\ntarget: 10 overlays within 10 % of base-only on uniform ids: get {target[0]:.3f}, "
          f"get_many {target[1]:.3f}: {met}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
