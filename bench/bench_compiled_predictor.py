"""Batch prediction: a compiled predictor (treelite model → tl2cgen shared library) against ``inplace_predict``.

    python bench/bench_compiled_predictor.py --rows 1000000 --rounds 3 --json out.json [--model primary.ubj]

treelite and tl2cgen are not prescore dependencies: run this with an interpreter that has them, e.g.

    uv venv /tmp/tlbench/venv --python 3.11
    uv pip install --python /tmp/tlbench/venv/bin/python treelite tl2cgen xgboost==3.2.0 pyarrow numpy
    /tmp/tlbench/venv/bin/python bench/bench_compiled_predictor.py --rows 1000000 --rounds 3 --json out.json

Without them (or without gcc) it prints a ``skipped:`` line and exits 0.

In one process, on this machine:
1. the model: a ``binary:logistic`` booster of 200 trees, depth 8, 32 float32 features (hist, eta 0.1, subsample
   0.8, min_child_weight 5: the shape of prescore's primary model) trained on synthetic data with 5 % NaN (numpy,
   fixed seed), or the booster given with ``--model``; saved as UBJSON, whose sha256 would key a compiled-library
   cache;
2. compile, once per variant, timed apart from prediction (a one-off per model version): treelite model from the
   saved UBJSON (``treelite.frontend.load_xgboost_model``), then ``tl2cgen.export_lib(toolchain="gcc",
   params={"parallel_comp": cores})`` — ``default``, as documented — and ``tuned``: the same plus branch
   annotation (``tl2cgen.annotate_branch`` on a separate synthetic sample), ``quantize=1`` and ``-march=native``
   (the best tl2cgen offers; a ``-march=native`` library only runs on CPUs like the one that built it);
3. parity on the ``--rows`` matrix: max |p_compiled − p_xgboost| (target ≤ 1e-6), the same for margins, and
   whether each side's probability is the logistic sigmoid of its own margin (the transform applied alike);
4. timing, ``--rounds`` interleaved rounds (the order rotated each round, so drift hits every path alike), at
   ``--rows`` and ``--small-rows`` rows, all cores: a chunk as ``jobs.score`` handles it once its float32 matrix
   is built — baseline ``booster.inplace_predict(x)`` (nthread = os.cpu_count()) → float32 Arrow score column;
   compiled ``tl2cgen.DMatrix(x)`` → ``Predictor(nthread=cores).predict`` → the same column. Figures: rows/s
   (median over rounds) and the median over rounds of the per-round ratio baseline time ÷ compiled time;
5. end to end over one nightly run of ``--nightly-rows`` rows in ``--rows`` chunks: baseline = booster load +
   chunks × chunk time; compiled = (treelite load + annotate + export) + library load + chunks × chunk time, i.e.
   the compile amortized over that one run (a cold cache: the model version is new that night); also reported
   with a warm cache (compile not counted). Per-worker loads count once (one worker holding every core).

Verdict: adopt only if the amortized end-to-end ratio is ≥ 1.3 and parity ≤ 1e-6.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb

ADOPT_RATIO = 1.3
PARITY = 1e-6
VARIANTS = ("default", "tuned")


def _compiler() -> tuple[Any, Any] | str:
    """(treelite, tl2cgen), or why the compiled path cannot be measured here."""
    try:
        import tl2cgen
        import treelite
    except ImportError:
        return "skipped: treelite/tl2cgen not installed (see this file's docstring for a separate environment)"
    if shutil.which("gcc") is None:
        return "skipped: no gcc on PATH (tl2cgen compiles the model with it)"
    return treelite, tl2cgen


def features(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    return x


def train(rows: int, cols: int, trees: int, depth: int, threads: int, seed: int) -> tuple[xgb.Booster, float]:
    rng = np.random.default_rng(seed)
    x = features(rng, rows, cols)
    clean = np.nan_to_num(x)
    y = clean[:, :5].sum(axis=1) + np.sin(3 * clean[:, 5]) + clean[:, 6] * clean[:, 7] + rng.normal(size=rows)
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": depth, "eta": 0.1,
              "subsample": 0.8, "min_child_weight": 5, "seed": seed, "nthread": threads}  # fmt: skip
    start = time.perf_counter()
    booster = xgb.train(params, xgb.DMatrix(x, label=(y > 0).astype(np.float32)), num_boost_round=trees)
    return booster, time.perf_counter() - start


def compile_variant(
    treelite: Any, tl2cgen: Any, name: str, model_path: Path, sample: np.ndarray, workdir: Path, threads: int
) -> dict[str, Any]:
    libpath = workdir / f"{name}.so"
    timings: dict[str, Any] = {}
    start = time.perf_counter()
    model = treelite.frontend.load_xgboost_model(model_path)
    timings["treelite_load_s"] = time.perf_counter() - start
    params: dict[str, Any] = {"parallel_comp": threads}
    options: list[str] | None = None
    timings["annotate_s"] = 0.0
    if name == "tuned":
        start = time.perf_counter()
        annotation = workdir / f"{name}-annotation.json"
        tl2cgen.annotate_branch(model, tl2cgen.DMatrix(sample), annotation, nthread=threads)
        timings["annotate_s"] = time.perf_counter() - start
        params |= {"annotate_in": str(annotation), "quantize": 1}
        options = ["-march=native"]
    start = time.perf_counter()
    tl2cgen.export_lib(model, toolchain="gcc", libpath=libpath, params=params, nthread=threads, options=options)
    timings["export_s"] = time.perf_counter() - start
    timings["compile_total_s"] = timings["treelite_load_s"] + timings["annotate_s"] + timings["export_s"]
    start = time.perf_counter()
    predictor = tl2cgen.Predictor(libpath, nthread=threads)
    timings["library_load_s"] = time.perf_counter() - start
    timings["library_bytes"] = libpath.stat().st_size
    timings["params"] = params
    timings["options"] = options or []
    return {"predictor": predictor, **timings}


def chunk_xgboost(booster: xgb.Booster, x: np.ndarray) -> tuple[pa.Array, dict[str, float]]:
    start = time.perf_counter()
    column = pa.array(booster.inplace_predict(x), type=pa.float32())
    return column, {"total_s": time.perf_counter() - start}


def chunk_compiled(tl2cgen: Any, predictor: Any, x: np.ndarray) -> tuple[pa.Array, dict[str, float]]:
    start = time.perf_counter()
    dmat = tl2cgen.DMatrix(x)
    built = time.perf_counter()
    out = predictor.predict(dmat)  # (rows, 1, 1) float32 for binary:logistic
    predicted = time.perf_counter()
    column = pa.array(out.reshape(-1), type=pa.float32())
    end = time.perf_counter()
    return column, {"dmatrix_s": built - start, "predict_s": predicted - built, "total_s": end - start}


def sigmoid(m: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-m.astype(np.float64)))


def parity(tl2cgen: Any, booster: xgb.Booster, predictor: Any, x: np.ndarray) -> dict[str, Any]:
    p_xgb = booster.inplace_predict(x)
    m_xgb = booster.inplace_predict(x, predict_type="margin")
    dmat = tl2cgen.DMatrix(x)
    p_tl = predictor.predict(dmat).reshape(-1)
    m_tl = predictor.predict(dmat, pred_margin=True).reshape(-1)
    prob = float(np.max(np.abs(p_tl.astype(np.float64) - p_xgb)))
    return {
        "rows": len(x),
        "max_abs_diff_probability": prob,
        "max_abs_diff_margin": float(np.max(np.abs(m_tl.astype(np.float64) - m_xgb))),
        "max_abs_sigmoid_of_margin_minus_probability_xgboost": float(np.max(np.abs(sigmoid(m_xgb) - p_xgb))),
        "max_abs_sigmoid_of_margin_minus_probability_compiled": float(np.max(np.abs(sigmoid(m_tl) - p_tl))),
        "dtype_compiled": str(p_tl.dtype),
        "dtype_xgboost": str(p_xgb.dtype),
        "ok": bool(prob <= PARITY),
    }


def gcc_version() -> str:
    out = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def skip(reason: str, json_path: Path | None) -> None:
    print(reason)
    if json_path:
        json_path.write_text(json.dumps({"skipped": reason, "python": sys.executable}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the chunk (and of the parity check)")
    parser.add_argument("--small-rows", type=int, default=100_000, help="a smaller chunk also timed; 0: none")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nightly-rows", type=int, default=10_000_000, help="rows one nightly run scores")
    parser.add_argument("--model", type=Path, help="an XGBoost model (.ubj/.json) instead of the trained one")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--train-rows", type=int, default=150_000)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    found = _compiler()
    if isinstance(found, str):
        skip(found, args.json)
        return
    treelite, tl2cgen = found
    threads = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="bench-compiled-") as tmp:
        workdir = Path(tmp)
        if args.model:
            booster = xgb.Booster()
            booster.load_model(args.model)
            train_s = 0.0
            source = str(args.model)
        else:
            booster, train_s = train(args.train_rows, args.features, args.trees, args.depth, threads, args.seed)
            source = f"trained: {args.train_rows:,} synthetic rows, seed {args.seed}"
        model_path = workdir / "model.ubj"
        booster.save_model(model_path)
        sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
        cols = booster.num_features()
        start = time.perf_counter()
        booster = xgb.Booster()
        booster.load_model(model_path)
        booster.set_param({"nthread": threads})
        booster_load_s = time.perf_counter() - start
        trees = booster.num_boosted_rounds()

        rng = np.random.default_rng(args.seed + 1)
        sample = features(rng, 100_000, cols)  # branch annotation: same distribution, not the timed rows
        x_big = features(rng, args.rows, cols)
        sizes = {args.rows: x_big}
        if args.small_rows:
            sizes[args.small_rows] = np.ascontiguousarray(x_big[: args.small_rows])

        compiled = {}
        for name in args.variants:
            compiled[name] = compile_variant(treelite, tl2cgen, name, model_path, sample, workdir, threads)
            print(f"compiled {name}: {compiled[name]['compile_total_s']:.1f} s", flush=True)
        checks = {name: parity(tl2cgen, booster, c["predictor"], x_big) for name, c in compiled.items()}

        paths = {"xgboost": lambda x: chunk_xgboost(booster, x)}
        for name, c in compiled.items():
            paths[name] = lambda x, p=c["predictor"]: chunk_compiled(tl2cgen, p, x)
        for fn in paths.values():  # warm-up: thread pools, page faults, first-call setup
            fn(sizes[min(sizes)])
        samples: dict[int, dict[str, list[dict[str, float]]]] = {n: {k: [] for k in paths} for n in sizes}
        names = list(paths)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for n, x in sizes.items():
                for name in order:
                    _, t = paths[name](x)
                    samples[n][name].append(t)
            print(f"round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.2f})", flush=True)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    timing: dict[str, Any] = {}
    for n in sizes:
        base = [t["total_s"] for t in samples[n]["xgboost"]]
        row: dict[str, Any] = {"xgboost": {"median_s": med(base), "rows_per_s": n / med(base), "samples_s": base}}
        for name in compiled:
            tot = [t["total_s"] for t in samples[n][name]]
            row[name] = {
                "median_s": med(tot),
                "rows_per_s": n / med(tot),
                "dmatrix_median_s": med([t["dmatrix_s"] for t in samples[n][name]]),
                "predict_median_s": med([t["predict_s"] for t in samples[n][name]]),
                "samples_s": tot,
                "ratio_vs_xgboost": med([b / c for b, c in zip(base, tot, strict=True)]),
            }
        timing[str(n)] = row

    chunks = args.nightly_rows / args.rows
    big = timing[str(args.rows)]
    baseline_night = booster_load_s + chunks * big["xgboost"]["median_s"]
    end_to_end: dict[str, Any] = {}
    for name, c in compiled.items():
        per_chunk = big[name]["median_s"]
        cold = c["compile_total_s"] + c["library_load_s"] + chunks * per_chunk
        warm = c["library_load_s"] + chunks * per_chunk
        amortized_chunk = per_chunk + (c["compile_total_s"] + c["library_load_s"]) / chunks
        end_to_end[name] = {
            "chunk_ratio_predict_only": big[name]["ratio_vs_xgboost"],
            "chunk_s_with_compile_amortized": amortized_chunk,
            "nightly_baseline_s": baseline_night,
            "nightly_compiled_cold_cache_s": cold,
            "nightly_compiled_warm_cache_s": warm,
            "ratio_end_to_end_amortized": baseline_night / cold,
            "ratio_end_to_end_cached": baseline_night / warm,
        }
        end_to_end[name]["adopt"] = bool(
            end_to_end[name]["ratio_end_to_end_amortized"] >= ADOPT_RATIO and checks[name]["ok"]
        )
    adopt = [name for name, e in end_to_end.items() if e["adopt"]]
    verdict = (
        f"adopt ({', '.join(adopt)}): ≥ {ADOPT_RATIO}× end to end with parity ≤ {PARITY:g}"
        if adopt
        else f"keep inplace_predict: no compiled variant reaches {ADOPT_RATIO}× end to end with parity ≤ {PARITY:g}"
    )

    env = {
        "xgboost": xgb.__version__,
        "treelite": treelite.__version__,
        "tl2cgen": tl2cgen.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "gcc": gcc_version(),
        "python": platform.python_version(),
        "machine": f"{platform.node()} {platform.machine()}",
        "cpus": threads,
        "load_average_1m_end": os.getloadavg()[0],
    }
    print(
        f"\nxgboost {env['xgboost']}, treelite {env['treelite']}, tl2cgen {env['tl2cgen']}, {env['gcc']}, "
        f"Python {env['python']}, {threads} CPUs, load average {env['load_average_1m_end']:.2f}"
    )
    depth = "as given" if args.model else args.depth
    print(f"model: {trees} trees, depth {depth}, {cols} features ({source}); sha256 {sha[:16]}…")
    print(f"xgboost booster load {booster_load_s:.3f} s; train {train_s:.1f} s\n")
    print("| variant | treelite load s | annotate s | export_lib s | library load s | library MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, c in compiled.items():
        print(f"| {name} | {c['treelite_load_s']:.2f} | {c['annotate_s']:.2f} | {c['export_s']:.1f} | "
              f"{c['library_load_s']:.3f} | {c['library_bytes'] / 2**20:.1f} |")  # fmt: skip
    print(f"\nParity over {args.rows:,} rows (target max |Δp| ≤ {PARITY:g}):\n")
    print("| variant | max abs Δ probability | max abs Δ margin | sigmoid(margin)−p xgboost | compiled |")
    print("|---|---:|---:|---:|---:|")
    for name, p in checks.items():
        print(f"| {name} | {p['max_abs_diff_probability']:.2e} | {p['max_abs_diff_margin']:.2e} | "
              f"{p['max_abs_sigmoid_of_margin_minus_probability_xgboost']:.2e} | "
              f"{p['max_abs_sigmoid_of_margin_minus_probability_compiled']:.2e} |")  # fmt: skip
    print(f"\nChunk (matrix built → Arrow score column), {args.rounds} interleaved rounds, medians:\n")
    print("| rows | path | rows/s | s | DMatrix s | predict s | xgboost ÷ path (per-round median) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n, row in timing.items():
        for name, t in row.items():
            extra = (f"{t['dmatrix_median_s']:.3f} | {t['predict_median_s']:.3f} | {t['ratio_vs_xgboost']:.3f}×"
                     if name != "xgboost" else "– | – | 1 (baseline)")  # fmt: skip
            print(f"| {int(n):,} | {name} | {t['rows_per_s']:,.0f} | {t['median_s']:.3f} | {extra} |")
    print(f"\nOne nightly run of {args.nightly_rows:,} rows in {args.rows:,}-row chunks ({chunks:g} chunks), "
          f"baseline {baseline_night:.1f} s:\n")  # fmt: skip
    print("| variant | compiled s, cold cache (compile once) | ratio | compiled s, cached | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, e in end_to_end.items():
        print(f"| {name} | {e['nightly_compiled_cold_cache_s']:.1f} | {e['ratio_end_to_end_amortized']:.3f}× | "
              f"{e['nightly_compiled_warm_cache_s']:.1f} | {e['ratio_end_to_end_cached']:.3f}× |")  # fmt: skip
    print(f"\nverdict: {verdict}")

    if args.json:
        for c in compiled.values():
            c.pop("predictor")
        result = {
            "command": "python bench/bench_compiled_predictor.py " + " ".join(sys.argv[1:]),
            "environment": env,
            "model": {
                "source": source,
                "trees": trees,
                "depth": None if args.model else args.depth,
                "features": cols,
                "sha256": sha,
                "train_s": train_s,
                "xgboost_booster_load_s": booster_load_s,
            },
            "compile": compiled,
            "parity": checks,
            "timing": timing,
            "nightly_rows": args.nightly_rows,
            "end_to_end": end_to_end,
            "verdict": verdict,
        }
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
