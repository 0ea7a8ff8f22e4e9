"""The online reader serves, fallback model included, in a process where xgboost, SciPy and scikit-learn cannot be
imported: the registry's UBJSON artifact is decoded without them (``warehouse.ubjson``), and the compiled fallback
gives xgboost's numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from online.fallback import FallbackModel
from tests.online.conftest import FEATURES, MODEL, train_fallback

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("xgboost", "sklearn", "scipy")
CHILD = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed in the online image")
sys.meta_path.insert(0, Block())
from online.app import create_app
from online.settings import OnlineSettings
from online.snapshot import load_snapshot
settings = OnlineSettings(home=sys.argv[1], redis_url="redis://127.0.0.1:1/0", prediction_log=False)
create_app(settings)
snapshot = load_snapshot(settings)
fallback = snapshot.models[{model!r}].fallback
rows = json.loads(sys.argv[2])
print(json.dumps({{"problems": snapshot.problems, "one": [fallback.predict_row(r) for r in rows],
                   "many": fallback.predict_many(rows * 20).tolist(),
                   "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r})}}))
"""


def test_the_online_reader_needs_no_xgboost_scipy_or_sklearn(home: Path) -> None:
    rows = np.random.default_rng(3).normal(scale=50.0, size=(40, len(FEATURES)))
    rows[::7, 2] = np.nan
    code = CHILD.format(blocked=BLOCKED, model=MODEL)
    done = subprocess.run([sys.executable, "-c", code, str(home), json.dumps(rows.tolist())],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert answer["problems"] == [] and answer["loaded"] == []
    booster = train_fallback()  # the fixture's model, trained the same way
    expected = booster.inplace_predict(rows.astype(np.float32)).astype(np.float64)
    np.testing.assert_allclose(answer["one"], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(answer["many"], np.tile(expected, 20), rtol=1e-6, atol=1e-7)
    assert FallbackModel.from_booster(booster, FEATURES, "same").predict_row(rows[0].tolist()) == answer["one"][0]
