"""``rt``: a Runtime on a private copy of the trained warehouse (``trained_template`` in tests/conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.runtime import Runtime
from tests.conftest import END, small_models_file  # noqa: F401  (re-exported for the job tests)
from warehouse.settings import Settings


def runtime_on_copy(template: tuple[Path, Path], tmp_path: Path, redis_url: str) -> Iterator[Runtime]:
    """A Runtime on a private copy of ``template`` (home, models file), the test Redis and a threads Dask cluster;
    closed when the generator finishes (``yield from`` it in a fixture)."""
    home, models_file = template
    shutil.copytree(home, tmp_path / "home")
    settings = Settings(home=tmp_path / "home", models_file=models_file, redis_url=redis_url, dask_local="threads")
    runtime = Runtime.from_settings(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def rt(trained_template: tuple[Path, Path], tmp_path: Path, redis_url: str) -> Iterator[Runtime]:
    """A Runtime on a private copy of the trained warehouse, the test Redis, and a threads Dask cluster."""
    yield from runtime_on_copy(trained_template, tmp_path, redis_url)
