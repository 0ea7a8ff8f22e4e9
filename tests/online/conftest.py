"""Fixtures of the online reader tests: a warehouse home with a real (tiny) promoted fallback model, published
score runs in the real test Redis, and the app served in-process with its lifespan run."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xgboost as xgb
from fastapi import FastAPI

from online.app import create_app
from online.fallback import load_fallback
from online.settings import OnlineSettings
from warehouse.registry import Registry
from warehouse.store import ScoreStore

MODEL = "churn"
FEATURES = [f"f0{i}" for i in range(8)]
HOUR = timedelta(hours=1)
FEATS = {f: float(i * 10 - 35) for i, f in enumerate(FEATURES)}
SCORES = {"a": 0.8, "b": 0.45, "c": 0.1}


def train_fallback(seed: int = 0) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=50.0, size=(2000, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + rng.normal(scale=20.0, size=2000) > 0).astype(np.float32)
    params = {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "tree_method": "hist", "seed": seed}
    return xgb.train(params, xgb.DMatrix(x, label=y, feature_names=FEATURES), num_boost_round=30)


@pytest.fixture(scope="session")
def fallback_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PRESCORE_HOME whose registry holds a promoted fallback model for ``churn`` (built once per session)."""
    home = tmp_path_factory.mktemp("online-home") / "home"
    registry = Registry(home / "models")
    manifest = registry.register(MODEL, "fallback", train_fallback(), FEATURES, {"auc": 0.9}, {"days": 1})
    registry.promote(MODEL, "fallback", manifest.version)
    return home


@pytest.fixture
def home(fallback_template: Path, tmp_path: Path) -> Path:
    """A private copy of the template home (tests may corrupt or remove the artifact)."""
    target = tmp_path / "home"
    shutil.copytree(fallback_template, target)
    return target


@pytest.fixture
def make_settings(home: Path, redis_url: str) -> Callable[..., OnlineSettings]:
    def make(**overrides: Any) -> OnlineSettings:
        values: dict[str, Any] = {"home": home, "redis_url": redis_url, "breaker_reset_s": 0.2, **overrides}
        return OnlineSettings(**values)

    return make


@pytest.fixture
def publish(redis_url: str) -> Callable[..., str]:
    """``publish(scores: {id: score}, as_of, run_id=None, url=None)``: load, verify and publish one run."""
    counter = iter(range(1, 1_000_000))

    def load(scores: dict[str, float], as_of: datetime, run_id: str | None = None, url: str | None = None) -> str:
        run_id = run_id or f"run-{next(counter)}"
        with ScoreStore.from_url(url or redis_url) as store:
            store.create_run(MODEL, run_id, "primary-v1", as_of, len(scores))
            store.writer(MODEL, run_id).write_batch(list(scores), np.array(list(scores.values()), dtype=np.float32))
            store.finalize_run(MODEL, run_id)
            store.publish(MODEL, run_id, force=True)
        return run_id

    return load


@asynccontextmanager
async def serve(
    settings: OnlineSettings, clock: Callable[[], float] | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan run, and an in-process client (no sockets); ``clock`` replaces its time."""
    app = create_app(settings) if clock is None else create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reader") as client:
            yield app, client


def now_utc() -> datetime:
    return datetime.now(UTC)


def fallback_score(home: Path, features: dict[str, float]) -> float:
    return load_fallback(home / "models", MODEL, FEATURES).predict_dict(features)


async def post(client: httpx.AsyncClient, entity_id: str, features: Any = None, **kw: Any) -> httpx.Response:
    return await client.post(f"/v1/scores/{MODEL}", json={"entity_id": entity_id, "features": features}, **kw)


async def look_up_until(
    client: httpx.AsyncClient, ids: list[str], seed: int, deadline: float, answers: list[tuple[float, float, Any]]
) -> None:
    """Lookups of ids drawn from ``ids`` until ``deadline`` (``time.monotonic()``): GETs of one id for an odd
    ``seed``, batches of 5 for an even one. Each answer goes to ``answers`` with its lookup's window: ``(sent,
    received, answer)``."""
    rng = np.random.default_rng(seed)
    while time.monotonic() < deadline:
        picked = [ids[i] for i in rng.integers(0, len(ids), 5)]
        t0 = time.monotonic()
        if seed % 2:
            results = [(await client.get(f"/v1/scores/{MODEL}/{picked[0]}")).json()]
        else:
            r = await client.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": picked})
            assert r.status_code == 200, r.text
            results = r.json()["results"]
        answers.extend((t0, time.monotonic(), a) for a in results)
