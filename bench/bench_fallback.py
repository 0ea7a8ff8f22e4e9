"""Benchmark of single-row fallback scoring: xgboost's ``inplace_predict`` against the compiled ``FallbackModel``.

    python bench/bench_fallback.py --json bench-fallback.json [--sweep]

Trains a 30-tree, depth-4, 8-feature ``binary:logistic`` booster (hist) on synthetic data with NaNs, then times
single calls on distinct rows (each call timed on its own with ``perf_counter_ns``; median and p99):
``inplace_predict`` on a 1-row array (the baseline; xgboost's default threads, and nthread=1), ``predict`` on a
prebuilt 1-row DMatrix, ``FallbackModel.predict_row`` and ``predict_dict``; then 100-row batches. Ratios are
against the baseline measured in the same run. ``--sweep`` also times the batch paths at several sizes (the
crossovers behind ``SMALL_BATCH`` and ``WALK_MAX_ROWS`` in ``online/fallback.py``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import xgboost as xgb

from online import fallback
from online.fallback import FallbackModel

FEATURES = [f"f{i}" for i in range(8)]


def train(seed: int = 0) -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20_000, 8)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) + rng.normal(scale=0.7, size=len(x)) > 0).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 4, "eta": 0.3}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=30)
    rows = rng.normal(size=(5000, 8))
    rows[rng.random(rows.shape) < 0.1] = np.nan
    return booster, rows


def per_call(fn: Callable[[Any], object], inputs: list[Any], calls: int) -> dict[str, float]:
    """Time ``calls`` single calls cycling over distinct inputs; µs per call (timer overhead included, ~0.1 µs)."""
    for item in inputs[:50]:
        fn(item)
    samples = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    gc.disable()
    try:
        n = len(inputs)
        for i in range(calls):
            item = inputs[i % n]
            t0 = clock()
            fn(item)
            samples[i] = clock() - t0
    finally:
        gc.enable()
    us = samples / 1000.0
    return {"median_us": float(np.median(us)), "p99_us": float(np.percentile(us, 99)), "calls": calls}


def table(rows: list[tuple[str, dict[str, float]]], baseline: dict[str, float]) -> str:
    out = ["| path | median µs | p99 µs | speed-up (median) vs baseline |", "|---|---:|---:|---:|"]
    for name, r in rows:
        ratio = baseline["median_us"] / r["median_us"]
        out.append(f"| {name} | {r['median_us']:.1f} | {r['p99_us']:.1f} | {ratio:.1f}× |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls for the fast paths")
    parser.add_argument("--slow-calls", type=int, default=2_000, help="timed calls for the xgboost paths")
    parser.add_argument("--sweep", action="store_true", help="also time the batch paths at several sizes")
    args = parser.parse_args()

    booster, x = train()
    model = FallbackModel.from_booster(booster, FEATURES, "bench")
    model.warm()
    one_thread = booster.copy()
    one_thread.set_param({"nthread": 1})

    arrays = [x[i : i + 1] for i in range(1000)]  # float64, as a request's JSON numbers would be
    lists = x.tolist()
    dicts = [dict(zip(FEATURES, row, strict=True)) for row in lists]
    dmatrices = [xgb.DMatrix(a) for a in arrays]

    # the parity the tests assert, re-checked on the benchmark's rows
    expected = booster.inplace_predict(x)
    ours = np.array([model.predict_row(r) for r in lists])
    max_err = float(np.max(np.abs(ours - expected)))

    single = [
        ("xgboost inplace_predict, 1-row array (baseline)", per_call(booster.inplace_predict, arrays, args.slow_calls)),
        ("xgboost inplace_predict, nthread=1", per_call(one_thread.inplace_predict, arrays, args.slow_calls)),
        ("xgboost predict, prebuilt DMatrix", per_call(booster.predict, dmatrices, args.slow_calls)),
        ("FallbackModel.predict_row (list)", per_call(model.predict_row, lists, args.calls)),
        ("FallbackModel.predict_dict", per_call(model.predict_dict, dicts, args.calls)),
    ]
    baseline = single[0][1]

    batches = [x[i : i + 100] for i in range(0, 4000, 100)]
    batch = [
        ("xgboost inplace_predict, 100 rows (baseline)", per_call(booster.inplace_predict, batches, 400)),
        ("xgboost inplace_predict nthread=1, 100 rows", per_call(one_thread.inplace_predict, batches, 400)),
        ("FallbackModel.predict_many, 100 rows", per_call(model.predict_many, batches, 400)),
        ("predict_row loop, 100 rows", per_call(lambda b: [model.predict_row(r) for r in b.tolist()], batches, 400)),
    ]

    sweep: dict[str, dict[str, float]] = {}
    if args.sweep:
        walk = model._walk
        assert walk is not None
        paths: dict[str, Callable[[np.ndarray], object]] = {
            "row_loop": lambda b: [model.predict_row(r) for r in b.tolist()],
            "numpy_walk": lambda b: walk(np.ascontiguousarray(b, dtype=np.float32)),
            "inplace_nthread1": one_thread.inplace_predict,
        }
        for size in (1, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
            sized = [x[i : i + size] for i in range(0, len(x) - size, max(size, 50))][:40]
            calls = max(20, min(400, 20_000 // size))
            sweep[str(size)] = {name: per_call(fn, sized, calls)["median_us"] for name, fn in paths.items()}

    print(
        f"xgboost {xgb.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"max |ours - inplace_predict| = {max_err:.2e}"
    )
    print("\nSingle row (30 trees, depth 4, 8 features):\n")
    print(table(single, baseline))
    print("\nBatch of 100 rows:\n")
    print(table(batch, batch[0][1]))
    if sweep:
        print(f"\nBatch paths, median µs per batch (SMALL_BATCH={fallback.SMALL_BATCH}, "
              f"WALK_MAX_ROWS={fallback.WALK_MAX_ROWS}):\n")  # fmt: skip
        print("| rows | " + " | ".join(next(iter(sweep.values()))) + " |")
        print("|---:|" + "---:|" * len(next(iter(sweep.values()))))
        for rows_in_batch, r in sweep.items():
            print(f"| {rows_in_batch} | " + " | ".join(f"{v:.1f}" for v in r.values()) + " |")

    if args.json:
        result = {
            "environment": {
                "xgboost": xgb.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average_1m": os.getloadavg()[0],
            },
            "max_abs_error": max_err,
            "single_row": dict(single),
            "batch_100": dict(batch),
            "sweep_median_us": sweep,
        }
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
