"""Whole-process cost of the online reader's start: interpreter, imports and loading the models with their
fallback, against ``python -c pass`` and against the same start with xgboost imported (what the reader paid
before it ran its fallback from the registry's UBJSON without xgboost).

``python bench/bench_online_start.py [--runs 7] [--json out.json]``: builds a home with a promoted 30-tree fallback
model, then times each variant ``--runs`` times in fresh processes, interleaved; reports medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xgboost as xgb

ROOT = Path(__file__).resolve().parents[1]
START = (
    "import sys; from online.app import create_app; from online.settings import OnlineSettings; "
    "from online.snapshot import load_snapshot; s = OnlineSettings(home=sys.argv[1], prediction_log=False, "
    "redis_url='redis://127.0.0.1:1/0'); create_app(s); assert load_snapshot(s).models['churn'].fallback"
)
VARIANTS = {
    "python -c pass (baseline)": "pass",
    "reader start: imports + models + fallback": START,
    "the same with xgboost imported (before)": "import xgboost; " + START,
}


def _home(base: Path) -> Path:
    from warehouse.model_config import load_config
    from warehouse.registry import Registry
    from warehouse.settings import DEFAULT_MODELS_FILE

    features = load_config(DEFAULT_MODELS_FILE).model("churn").fallback_features
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, len(features))).astype(np.float32)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4}, xgb.DMatrix(x, x[:, 0] > 0), 30)
    registry = Registry(base / "models")
    manifest = registry.register("churn", "fallback", booster, list(features), {}, {})
    registry.promote("churn", "fallback", manifest.version)
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = _home(Path(tmp))
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.runs):
            for name, code in VARIANTS.items():
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", code, str(home)], cwd=ROOT, check=True)
                times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(values) for name, values in times.items()}
    before = medians["the same with xgboost imported (before)"]
    print(f"{'variant':48} {'median s':>9} {'÷ before':>9}")
    for name, value in medians.items():
        print(f"{name:48} {value:9.3f} {value / before:9.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "median_s": medians, "times_s": times}, indent=2))


if __name__ == "__main__":
    main()
