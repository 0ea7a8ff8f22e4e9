"""Bring your own model, end to end on real public data: the Palmer penguins as daily partitions of a lake outside
``PRESCORE_HOME`` (two categorical features), models trained with plain xgboost, registered with ``prescore
register``, scored and published by the nightly DAG through ``dag.test()``, then served by the online API:
precomputed, the fallback model with categorical request features, and the default."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.runtime import Runtime
from online.app import create_app
from online.settings import OnlineSettings
from tests.dags.conftest import set_prescore_env
from tests.support import penguins
from tests.support.clock import END
from warehouse.store import ScoreReader

pytestmark = [pytest.mark.filterwarnings("ignore::starlette.exceptions.StarletteDeprecationWarning")]

MODEL = penguins.MODEL
LOGICAL = dt.datetime.combine(END + dt.timedelta(days=1), dt.time(2, 0), tzinfo=dt.UTC)  # scores partition END


@pytest.fixture
def env(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    lake = penguins.write_lake(tmp_path / "lake")
    models_file = penguins.models_file(tmp_path / "models.yaml", lake)
    return set_prescore_env(monkeypatch, tmp_path / "home", models_file, redis_url)


def _register(env: dict[str, str], path: Path, role: str) -> dict[str, Any]:
    import json

    done = CliRunner().invoke(app, ["register", str(path), "--model", MODEL, "--role", role, "--promote", "--json"],
                              env=env)  # fmt: skip
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


async def _serve(settings: OnlineSettings, calls: list[tuple[str, str, Any]]) -> list[httpx.Response]:
    web = create_app(settings)
    async with web.router.lifespan_context(web):
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://reader") as client:
            return [await client.request(method, url, json=body) for method, url, body in calls]


def test_penguins_from_a_lake_scored_by_the_nightly_dag_and_served(
    airflow_db: Path, env: dict[str, str], load_dags: Any, tmp_path: Path
) -> None:
    primary = penguins.train(penguins.FEATURES)
    primary.save_model(tmp_path / "primary.json")
    fallback = penguins.train(penguins.FALLBACK, rounds=20)
    fallback.save_model(tmp_path / "fallback.ubj")
    assert _register(env, tmp_path / "primary.json", "primary")["promoted"]
    fallback_version = _register(env, tmp_path / "fallback.ubj", "fallback")["version"]

    dag = load_dags().dags[f"prescore_score__{MODEL}"]
    assert f"prescore_train__{MODEL}" not in load_dags().dags  # training: external
    dr = dag.test(logical_date=LOGICAL)
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert dr.state == "success", states

    expected = penguins.expected_scores(primary, 2009, penguins.FEATURES)
    rt = Runtime.from_settings()
    try:
        run = rt.catalog.runs(MODEL, partition_date=END)[0]
        assert not (rt.home / "features").exists()  # read in place: nothing copied under PRESCORE_HOME
    finally:
        rt.close()
    reader = ScoreReader.from_url(env["PRESCORE_REDIS_URL"])
    try:
        assert reader.current_run(MODEL).run_id == run.run_id
        stored = reader.get_many(MODEL, list(expected.index))
    finally:
        reader.close()
    np.testing.assert_allclose([s.score for s in stored], expected.to_numpy(), rtol=1e-6)

    # Online: a bird of the run (precomputed), a newcomer with features (fallback), one without (default).
    known = str(expected.index[5])
    bird = {"species": "Gentoo", "island": "Biscoe", "flipper_length_mm": 221.0}
    calls = [
        ("GET", f"/v1/scores/{MODEL}/{known}", None),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "newcomer", "features": bird}),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "newcomer", "features": {**bird, "island": "Anvers"}}),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "newcomer", "features": {**bird, "species": "Emperor"}}),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "newcomer", "features": {**bird, "species": 2}}),
        ("GET", f"/v1/scores/{MODEL}/newcomer", None),
    ]
    settings = OnlineSettings(home=env["PRESCORE_HOME"], models_file=env["PRESCORE_MODELS_FILE"],
                              redis_url=env["PRESCORE_REDIS_URL"], prediction_log=False)  # fmt: skip
    hit, by_fallback, unknown_island, unknown_species, not_text, default = asyncio.run(_serve(settings, calls))

    assert hit.status_code == 200 and hit.json()["source"] == "precomputed"
    assert hit.json()["score"] == pytest.approx(float(expected[known]), rel=1e-6)
    assert by_fallback.status_code == 200, by_fallback.text
    body = by_fallback.json()
    assert (body["source"], body["model_version"]) == ("fallback", fallback_version)
    want = float(fallback.inplace_predict(penguins.design(_one(bird), penguins.FALLBACK))[0])
    assert body["score"] == pytest.approx(want, rel=1e-6)
    # island allows unknown values as missing: xgboost's own answer for a missing island
    assert unknown_island.status_code == 200, unknown_island.text
    missing = {**bird, "island": None}
    want_missing = float(fallback.inplace_predict(penguins.design(_one(missing), penguins.FALLBACK))[0])
    assert unknown_island.json()["score"] == pytest.approx(want_missing, rel=1e-6)
    # species rejects unknown values: 422 naming the feature and the allowed values
    assert unknown_species.status_code == 422
    assert "features.species" in unknown_species.text and "Adelie" in unknown_species.text
    assert not_text.status_code == 422 and "must be a string (a category)" in not_text.text
    assert default.json()["source"] == "default" and default.json()["score"] == 0.5


def _one(features: dict[str, Any]) -> Any:
    import pandas as pd

    frame = pd.DataFrame([features])
    for name, categories in penguins.CATEGORICAL.items():
        if name in frame:
            frame[name] = pd.Categorical(frame[name], categories=categories)
    return frame
