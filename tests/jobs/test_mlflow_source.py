"""``prescore register --from-mlflow`` against a real MLflow tracking server (SQLite backend, local artifact root,
127.0.0.1), started for this module and stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
import yaml

from jobs.register import register_model
from jobs.runtime import Runtime
from tests.jobs.test_register import _training_data
from warehouse.errors import RegistryError
from warehouse.store import free_port

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
MODEL = "churn"
# MLflow's own warnings (type hints, pydantic, its deprecations) are not this suite's to fix.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # fmt: skip


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
         "--artifacts-destination", str(base / "artifacts")],
        stdout=(base / "server.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(base / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        mlflow.set_tracking_uri(url)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _booster(rt: Runtime, params: dict[str, Any] | None = None) -> xgb.Booster:
    cols = rt.config.model_features(MODEL)
    x, y = _training_data(rt, cols, rows=2000)
    return xgb.train({"objective": "binary:logistic", **(params or {})}, xgb.DMatrix(x, y, feature_names=cols), 4)


@pytest.fixture(scope="module")
def logged(tracking: str, trained_template: tuple[Path, Path]) -> dict[str, Any]:
    """One booster logged in a run and registered as version 1 of ``prescore-ext``."""
    import mlflow.xgboost

    from warehouse.settings import Settings

    home, models_file = trained_template
    rt = Runtime.from_settings(Settings(home=home, models_file=models_file, redis_url="redis://127.0.0.1:1/0"))
    try:
        booster = _booster(rt)
    finally:
        rt.close()
    with mlflow.start_run() as run:
        mlflow.xgboost.log_model(
            booster, name="model", registered_model_name="prescore-ext", pip_requirements=["xgboost"]
        )  # no requirement inference from the project
    return {"run_id": run.info.run_id, "booster": booster}


def test_a_registered_mlflow_model_version_is_registered_with_its_lineage(rt: Runtime, logged: dict[str, Any]) -> None:
    before = rt.registry.production_version(MODEL, "primary")
    report = register_model(rt, MODEL, "primary", from_mlflow="models:/prescore-ext/1", promote=True)
    assert report.promoted and report.previous_production == before
    assert report.lineage["source"] == "models:/prescore-ext/1"
    assert report.lineage["mlflow_run_id"] == logged["run_id"] and report.lineage["mlflow_tracking_uri"]
    loaded = rt.registry.load(MODEL, "primary", rt.config.model_features(MODEL)).booster
    x, _ = _training_data(rt, rt.config.model_features(MODEL), rows=100)
    np.testing.assert_array_equal(loaded.inplace_predict(x), logged["booster"].inplace_predict(x))


def test_a_local_mlflow_model_directory_needs_no_server(rt: Runtime, tmp_path: Path) -> None:
    import mlflow.xgboost

    mlflow.xgboost.save_model(_booster(rt), str(tmp_path / "exported"), pip_requirements=["xgboost"])
    report = register_model(rt, MODEL, "primary", from_mlflow=str(tmp_path / "exported"))
    assert report.lineage["source"] == str(tmp_path / "exported") and not report.promoted


def test_a_model_without_an_xgboost_flavor_is_refused(rt: Runtime, tmp_path: Path) -> None:
    model_dir = tmp_path / "pyfunc-only"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": {"loader_module": "x"}}}))
    with pytest.raises(RegistryError, match=r"has no xgboost flavor \(flavors: \['python_function'\]\)"):
        register_model(rt, MODEL, "primary", from_mlflow=str(model_dir))


def test_an_mlflow_uri_that_does_not_exist_is_refused(rt: Runtime, tracking: str) -> None:
    before = rt.registry.versions(MODEL, "primary")
    with pytest.raises(RegistryError, match="MLflow cannot resolve models:/no-such-model/3"):
        register_model(rt, MODEL, "primary", from_mlflow="models:/no-such-model/3")
    assert rt.registry.versions(MODEL, "primary") == before


def test_a_tracking_server_that_is_down_is_one_clear_error(rt: Runtime, tracking: str) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    mlflow.set_tracking_uri(down)
    try:
        started = time.monotonic()
        with pytest.raises(RegistryError, match=f"tracking server at {down} does not answer"):
            register_model(rt, MODEL, "primary", from_mlflow="models:/prescore-ext/1")
        assert time.monotonic() - started < 120  # a few quick retries, not minutes of backoff
    finally:
        mlflow.set_tracking_uri(tracking)


def test_an_alias_and_a_runs_uri_resolve_to_the_same_booster(rt: Runtime, logged: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias("prescore-ext", "champion", "1")
    x, _ = _training_data(rt, rt.config.model_features(MODEL), rows=50)
    for uri in ("models:/prescore-ext@champion", f"runs:/{logged['run_id']}/model"):
        report = register_model(rt, MODEL, "primary", from_mlflow=uri)
        loaded = rt.registry.load(MODEL, "primary", rt.config.model_features(MODEL), version=report.version)
        np.testing.assert_array_equal(loaded.booster.inplace_predict(x), logged["booster"].inplace_predict(x))
        assert report.lineage["source"] == uri
