"""What a whole `prescore` command costs, against whole-process baselines measured in the same run.

    python bench/bench_commands.py --rows 4000000 --rounds 3 --json out.json

In one temporary PRESCORE_HOME (a primary model trained on a small warehouse, a partition of ``--rows`` entities and
a partition of one entity), each variant runs as a fresh process, the variants interleaved round by round so the
machine's drift hits all alike; medians are reported:

- ``python -c pass`` (interpreter start);
- bare script, whole process: interpreter + ``import pyarrow.parquet, xgboost`` + per file ``read_table`` →
  float32 matrix → ``inplace_predict`` (all cores) → ``write_table`` of entity_id + score — twice: with xgboost
  imported as a script does (``import xgboost``: it imports scikit-learn when that is installed) and with
  scikit-learn hidden from it, as prescore imports it (``warehouse.xgboost_loader``): the headline compares
  with the faster of the two;
- ``prescore score --force`` of the big partition (contract validation, catalog, model hash check, Dask, commit),
  then ``prescore publish`` of that run (load into Redis by RESTORE of whole buckets, verify, gate, flip): the
  whole-process publish of ``--rows`` entities;
- ``prescore score --force`` and ``prescore publish`` of the one-entity partition (fixed cost: target ≤ 1.5 s).

``--before DIR``: also time ``prescore score`` and ``publish`` from another checkout (``git worktree add DIR REV``),
same interpreter and environment, for a before/after of the fixed cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
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

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 11, 20)
TINY = DAY + dt.timedelta(days=1)
BARE = """
import sys, time
if {hide}:
    sys.modules["sklearn"] = None
import pyarrow as pa, pyarrow.parquet as pq, numpy as np, xgboost as xgb, glob, os
model, src, out = sys.argv[1:4]
features = [f"f{{i:02d}}" for i in range(32)]
booster = xgb.Booster(); booster.load_model(model); booster.set_param({{"nthread": os.cpu_count()}})
os.makedirs(out, exist_ok=True)
for i, path in enumerate(sorted(glob.glob(src + "/*.parquet"))):
    table = pq.read_table(path, columns=["entity_id", *features])
    x = np.column_stack([table.column(f).to_numpy().astype(np.float32, copy=False) for f in features])
    scores = booster.inplace_predict(x)
    pq.write_table(pa.table({{"entity_id": table.column("entity_id"), "score": pa.array(scores, pa.float32())}}),
                   f"{{out}}/part-{{i:05d}}.parquet")
"""


def _run(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return took


def _prepare(base: Path, rows: int, env: dict[str, str]) -> tuple[Path, str]:
    """Train on a small warehouse, then write the big and the one-entity partitions; returns (home, artifact)."""
    from jobs.runtime import Runtime
    from jobs.synth import synth
    from jobs.train import train_model
    from warehouse.settings import Settings

    settings = Settings(home=base / "home", models_file=Path(env["PRESCORE_MODELS_FILE"]),
                        redis_url=env["PRESCORE_REDIS_URL"], dask_local="threads")  # fmt: skip
    rt = Runtime.from_settings(settings)
    spec = rt.config.feature_set("customer_daily")
    synth(rt.home, feature_set="customer_daily", spec=spec, entities=50_000, days=4, end_date=DAY - dt.timedelta(1),
          seed=11)  # fmt: skip
    train_model(rt, "churn")
    synth(rt.home, feature_set="customer_daily", spec=spec, entities=rows, days=1, end_date=DAY, seed=5)
    src = next((rt.home / "features" / "customer_daily" / f"dt={DAY}").glob("*.parquet"))
    tiny = rt.home / "features" / "customer_daily" / f"dt={TINY}"
    tiny.mkdir()
    pq.write_table(pq.read_table(src).slice(0, 1), tiny / "part-00000.parquet")
    (tiny / "_SUCCESS").write_text("")
    version = rt.registry.require_production("churn", "primary")
    artifact = str(rt.registry.kind_dir("churn", "primary") / version / "model.ubj")
    rt.close()
    return rt.home, artifact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout to time prescore score/publish from")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from warehouse.store import start_redis

    with tempfile.TemporaryDirectory(prefix="bench-commands-") as tmp:
        base = Path(tmp)
        redis = start_redis(base / "redis")
        models_file = base / "models.yaml"
        models_file.write_text(yaml.safe_dump(yaml.safe_load((ROOT / "warehouse/defaults/models.yaml").read_text())))
        env = {**os.environ, "PRESCORE_MODELS_FILE": str(models_file), "PRESCORE_REDIS_URL": redis.url,
               "PRESCORE_HOME": str(base / "home"), "PRESCORE_DASK_LOCAL": "threads"}  # fmt: skip
        try:
            home, artifact = _prepare(base, args.rows, env)
            py, cli = sys.executable, str(Path(sys.executable).with_name("prescore"))
            src = str(home / "features" / "customer_daily" / f"dt={DAY}")

            def score(day: dt.date, where: Path = ROOT) -> list[str]:
                entry = [py, "-m", "jobs.cli"] if where != ROOT else [cli]
                return [*entry, "score", "--model", "churn", "--date", day.isoformat(), "--force"]

            def publish_tiny(where: Path = ROOT, environ: dict[str, str] = env) -> float:
                entry = [py, "-m", "jobs.cli"] if where != ROOT else [cli]
                cmd = [*entry, "score", "--model", "churn", "--date", TINY.isoformat(), "--force", "--json"]
                done = subprocess.run(cmd, cwd=where, env=environ, capture_output=True, text=True, check=True)
                run_id = json.loads(done.stdout)["run"]["run_id"]
                return _run([*entry, "publish", "--model", "churn", "--run", run_id, "--force"], environ, where)

            big: dict[str, str] = {}

            def score_big() -> float:
                start = time.perf_counter()
                done = subprocess.run([*score(DAY), "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
                took = time.perf_counter() - start
                if done.returncode != 0:
                    raise SystemExit(f"prescore score failed:\n{done.stderr[-3000:]}")
                big["run"] = json.loads(done.stdout)["run"]["run_id"]
                return took

            def publish_big() -> float:
                return _run([cli, "publish", "--model", "churn", "--run", big["run"], "--force"], env)

            def bare(hide: bool) -> float:
                return _run([py, "-c", BARE.format(hide=hide), artifact, src, str(base / f"bare-{hide}")], env)

            variants = {
                "python -c pass": lambda: _run([py, "-c", "pass"], env),
                "bare script (import xgboost)": lambda: bare(False),
                "bare script (xgboost without scikit-learn)": lambda: bare(True),
                f"prescore score, {args.rows:,} rows": lambda: score_big(),
                f"prescore publish, {args.rows:,} rows": lambda: publish_big(),
                "prescore score, 1 row": lambda: _run(score(TINY), env),
                "prescore publish, 1 row": lambda: publish_tiny(),
            }
            if args.before:  # its own copy of the home (without the catalog: the other checkout migrates its own)
                before = args.before.resolve()
                shutil.copytree(home, base / "home-before", ignore=shutil.ignore_patterns("catalog*", "scores"))
                for manifest in (base / "home-before" / "models").rglob("manifest.json"):  # keys it predates
                    raw = json.loads(manifest.read_text())
                    manifest.write_text(json.dumps({k: v for k, v in raw.items() if k != "baseline_sha256"}))
                old = {**env, "PRESCORE_HOME": str(base / "home-before")}
                variants["before: prescore score, 1 row"] = lambda: _run(score(TINY, before), old, before)
                variants["before: prescore publish, 1 row"] = lambda: publish_tiny(before, old)
                variants[f"before: prescore score, {args.rows:,} rows"] = lambda: _run(score(DAY, before), old,
                                                                                       before)  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, fn in variants.items():
                    times[name].append(fn())
        finally:
            redis.stop()
    med = {name: statistics.median(ts) for name, ts in times.items()}
    bare = min(med["bare script (import xgboost)"], med["bare script (xgboost without scikit-learn)"])
    big_s = med[f"prescore score, {args.rows:,} rows"]
    result = {
        "command": f"python bench/bench_commands.py --rows {args.rows} --rounds {args.rounds}"
        + (" --before DIR" if args.before else ""),
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "all_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "score_vs_bare": round(bare / big_s, 3),
        "publish_entities_per_s": round(args.rows / med[f"prescore publish, {args.rows:,} rows"]),
        "tiny_score_vs_python": round(med["prescore score, 1 row"] / med["python -c pass"], 1),
    }
    print(f"{'variant':52} {'median s':>9}")
    for name, value in med.items():
        print(f"{name:52} {value:9.3f}")
    print(f"prescore score ÷ bare (faster bare, {args.rows:,} rows, whole processes): {result['score_vs_bare']:.3f}")
    print(f"prescore publish, {args.rows:,} rows, whole process: {result['publish_entities_per_s']:,} entities/s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
