"""The online reader serves, fallback model included, in a process where xgboost, SciPy and scikit-learn cannot be
imported: the registry's UBJSON artifact is decoded without them (``warehouse.ubjson``), and the compiled fallback
gives xgboost's numbers. Nor does it need pyarrow (the online image carries none): lookups, overlays and
invalidations through the API in a process where it cannot be imported."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from online.fallback import FallbackModel
from tests.online.conftest import FEATURES, HOUR, MODEL, SCORES, now_utc, train_fallback

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("xgboost", "sklearn", "scipy")
# The child's first lines: the packages named in ``blocked`` cannot be imported, as in the online image.
BLOCK = """
import asyncio, importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed in the online image")
sys.meta_path.insert(0, Block())
"""
CHILD = (
    BLOCK
    + """
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
)


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


SERVE = (
    BLOCK
    + """
import httpx
from online.app import create_app
from online.settings import OnlineSettings

async def main():
    settings = OnlineSettings(home=sys.argv[1], redis_url=sys.argv[2], prediction_log=True,
                              admin_key_hashes=sys.argv[3])
    app = create_app(settings)
    out = {{}}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reader") as client:
            out["hit"] = (await client.get("/v1/scores/{model}/a")).json()
            r = await client.post("/v1/admin/invalidate/{model}", headers={{"X-API-Key": "admin-key"}},
                                  json={{"entity_ids": ["b"], "reason": "closed"}})
            out["invalidate"] = r.json()
            for _ in range(60):  # a pointer read within refresh_s sees the new generation
                out["invalid"] = (await client.get("/v1/scores/{model}/b")).json()
                if "reason" in out["invalid"]:
                    break
                await asyncio.sleep(0.05)
            batch = await client.post("/v1/scores/{model}/batch", json={{"entity_ids": ["a", "b", "c"]}})
            out["batch"] = batch.json()
    out["loaded"] = sorted({{m.split(".")[0] for m in sys.modules if m.split(".")[0] in {blocked!r}}})
    print(json.dumps(out))

asyncio.run(main())
"""
)


def test_the_online_reader_serves_overlays_and_invalidations_without_pyarrow(
    home: Path, publish: Callable[..., str], redis_url: str
) -> None:
    """Published scores, an invalidation through the admin route and a batch answered in a process where pyarrow
    (and xgboost, SciPy, scikit-learn) cannot be imported."""
    run = publish(SCORES, now_utc() - HOUR)
    code = SERVE.format(blocked=(*BLOCKED, "pyarrow"), model=MODEL)
    admin = hashlib.sha256(b"admin-key").hexdigest()
    done = subprocess.run([sys.executable, "-c", code, str(home), redis_url, admin],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert (out["hit"]["source"], out["hit"]["run_id"]) == ("precomputed", run)
    assert (out["invalidate"]["invalidated"], out["invalidate"]["unknown"]) == (1, 0)
    assert (out["invalid"]["source"], out["invalid"]["reason"]) == ("default", "invalidated: closed")
    assert [a["source"] for a in out["batch"]["results"]] == ["precomputed", "default", "precomputed"]
    assert out["loaded"] == []
