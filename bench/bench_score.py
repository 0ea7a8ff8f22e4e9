"""Bulk scoring throughput: the Dask job end to end versus a bare single-process baseline, same run.

    python bench/bench_score.py --sizes 1000000 5000000 10000000 --json out.json

For each size N, in one temporary PRESCORE_HOME:
1. ``synth`` one daily partition of N entities (the primary model is trained once, on a small warehouse, and
   its registry copied in);
2. baseline: one process, per file ``pq.read_table`` → float32 matrix → ``inplace_predict`` (all cores) →
   ``pq.write_table`` of entity_id + score;
3. the job: ``score_partition`` (validate contract, local Dask cluster of worker processes, load the model once
   per worker, score every row group, write parts, atomic commit, catalog record), timed end to end and
   without the cluster start.

The headline is the ratio job rows/s ÷ baseline rows/s (target ≥ 0.85 on 2 cores). Peak RSS of this
process and of its children (Dask workers) is reported from getrusage.

``--devices cpu cuda``: the job also runs on the GPU (dask-cuda ``LocalCUDACluster``, ``device="cuda"``) on the same
partition, and the report adds GPU rows/s ÷ CPU job rows/s, end to end. Without a visible CUDA device (or without
the ``gpu`` extra) the cuda runs are skipped, saying so, and the CPU figures are still measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from jobs.feature_matrix import to_matrix
from jobs.runtime import Runtime
from jobs.score import score_partition
from jobs.synth import synth
from jobs.train import train_model
from warehouse.datasets import features as fstore
from warehouse.settings import DEFAULT_MODELS_FILE, Settings

DAY = dt.date(2026, 11, 20)


LOCAL = "threads"


def _settings(home: Path, models_file: Path) -> Settings:
    return Settings(home=home, models_file=models_file, redis_url="redis://127.0.0.1:1/0", dask_local=LOCAL)


def _train(base: Path, models_file: Path) -> Path:
    rt = Runtime.from_settings(_settings(base / "train-home", models_file))
    spec = rt.config.feature_set("customer_daily")
    synth(rt.home, feature_set="customer_daily", spec=spec, entities=50_000, days=4, end_date=DAY, seed=11)
    train_model(rt, "churn")
    rt.close()
    return rt.home / "models"


def _baseline(rt: Runtime, out: Path) -> float:
    features = rt.config.model_features("churn")
    booster = rt.registry.load("churn", "primary", features).booster
    booster.set_param({"nthread": os.cpu_count() or 1})
    out.mkdir(parents=True)
    start = time.perf_counter()
    for i, path in enumerate(fstore.partition_files(rt.home, "customer_daily", DAY)):
        table = pq.read_table(path, columns=["entity_id", *features])
        scores = booster.inplace_predict(to_matrix(table, features))
        pq.write_table(
            pa.table({"entity_id": table.column("entity_id"), "score": pa.array(scores, type=pa.float32())}),
            out / f"part-{i:05d}.parquet",
        )
    return time.perf_counter() - start


def run_size(base: Path, models_dir: Path, models_file: Path, n: int, devices: tuple[str, ...] = ("cpu",)
             ) -> dict[str, float]:  # fmt: skip
    home = base / f"home-{n}"
    shutil.copytree(models_dir, home / "models")
    rt = Runtime.from_settings(_settings(home, models_file))
    synth(rt.home, feature_set="customer_daily", spec=rt.config.feature_set("customer_daily"),
          entities=n, days=1, end_date=DAY, seed=5)  # fmt: skip
    base_s = _baseline(rt, base / f"baseline-{n}")
    start = time.perf_counter()
    report = score_partition(rt, "churn", DAY, device="cpu", force=True)
    job_s = time.perf_counter() - start
    gpu: dict[str, float] = {}
    if "cuda" in devices:
        start = time.perf_counter()
        on_gpu = score_partition(rt, "churn", DAY, device="cuda", force=True)
        gpu_s = time.perf_counter() - start
        assert on_gpu.rows_out == n and on_gpu.device == "cuda", on_gpu
        gpu = {"gpu_job_s": round(gpu_s, 2), "gpu_job_rows_per_s": round(n / gpu_s),
               "gpu_vs_cpu_job": round(job_s / gpu_s, 3), "gpu_cluster": on_gpu.cluster}  # fmt: skip
    rt.close()
    assert report.rows_out == n, (report.rows_out, n)
    no_start_s = job_s - report.timings["cluster_s"]
    shutil.rmtree(home)
    shutil.rmtree(base / f"baseline-{n}")
    return {
        "rows": n,
        "baseline_s": round(base_s, 2),
        "baseline_rows_per_s": round(n / base_s),
        "job_s": round(job_s, 2),
        "job_rows_per_s": round(n / job_s),
        "job_without_cluster_start_s": round(no_start_s, 2),
        "ratio_end_to_end": round(base_s / job_s, 3),
        "ratio_without_cluster_start": round(base_s / no_start_s, 3),
        "predict_s_sum": report.timings["predict_s"],
        "read_s_sum": report.timings["read_s"],
        "write_s_sum": report.timings["write_s"],
        **gpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--local", choices=["threads", "processes"], default="threads", help="local cluster kind")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=["cpu"])
    args = parser.parse_args()
    devices = tuple(args.devices)
    if "cuda" in devices:
        from jobs.cluster import gpu_visible

        if not gpu_visible():
            print("cuda: skipped (no CUDA device visible, or cupy / the gpu extra not installed); CPU only")
            devices = tuple(d for d in devices if d != "cuda")
    global LOCAL
    LOCAL = args.local
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        base = Path(tmp)
        raw = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
        models_file = base / "models.yaml"
        models_file.write_text(yaml.safe_dump(raw))
        models_dir = _train(base, models_file)
        rows = [run_size(base, models_dir, models_file, n, devices) for n in args.sizes]
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "command": f"python bench/bench_score.py --local {args.local} --devices {' '.join(args.devices)} --sizes "
        + " ".join(map(str, args.sizes)),
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "peak_rss_mib_driver": round(peak_self),
        "peak_rss_mib_largest_child": round(peak_children),
        "sizes": rows,
    }
    print("| rows | baseline rows/s | job rows/s | job/baseline (end to end) | job/baseline (w/o cluster start) |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rows']:,} | {r['baseline_rows_per_s']:,} | {r['job_rows_per_s']:,} | "
              f"{r['ratio_end_to_end']:.3f} | {r['ratio_without_cluster_start']:.3f} |")  # fmt: skip
    print(f"peak RSS: driver {peak_self:.0f} MiB, largest child {peak_children:.0f} MiB")
    for r in rows:
        if "gpu_job_rows_per_s" in r:
            print(f"GPU {r['rows']:,} rows: {r['gpu_job_rows_per_s']:,} rows/s, {r['gpu_vs_cpu_job']:.2f}x the CPU job")
    result["devices"] = list(devices)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
