"""A small synthetic warehouse with trained, promoted models, built once per session and copied per test."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from jobs.runtime import Runtime
from jobs.synth import synth
from jobs.train import train_model
from warehouse.settings import DEFAULT_MODELS_FILE, Settings

END = dt.date(2026, 11, 20)
ENTITIES = 20_000
DAYS = 4


def small_models_file(path: Path) -> Path:
    """The embedded models file with a smaller training shape, so the suite stays fast."""
    raw = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
    raw["models"]["churn"]["training"].update(max_train_rows=30_000, primary_trees=40, primary_depth=6)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("template")
    models_file = small_models_file(base / "models.yaml")
    settings = Settings(home=base / "home", models_file=models_file, redis_url="redis://127.0.0.1:1/0")
    rt = Runtime.from_settings(settings)
    fs = rt.config.model("churn").feature_set
    synth(
        rt.home,
        feature_set=fs,
        spec=rt.config.feature_set(fs),
        entities=ENTITIES,
        days=DAYS,
        end_date=END,
        seed=7,
        chunk_rows=5_000,
    )
    train_model(rt, "churn")
    rt.close()
    return base / "home", models_file


@pytest.fixture
def rt(trained_template: tuple[Path, Path], tmp_path: Path, redis_url: str) -> Iterator[Runtime]:
    """A Runtime on a private copy of the trained warehouse, the test Redis, and a threads Dask cluster."""
    home, models_file = trained_template
    shutil.copytree(home, tmp_path / "home")
    settings = Settings(home=tmp_path / "home", models_file=models_file, redis_url=redis_url, dask_local="threads")
    runtime = Runtime.from_settings(settings)
    yield runtime
    runtime.close()
