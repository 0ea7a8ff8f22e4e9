"""Airflow test harness: a private AIRFLOW_HOME and SQLite metadata DB, never ``~/airflow``.

- ``airflow_home`` (session, autouse): points every ``AIRFLOW__*`` setting these tests rely on at a temporary
  directory *before* Airflow is first imported (Airflow reads its configuration once, at import), with the
  DAG folder at ``dags/`` of this repository and a fast feature sensor (1 s pokes, 4 s timeout).
- ``airflow_db_template`` (session): the metadata schema built once in Python (``airflow.utils.db.initdb``, the
  equivalent of ``airflow db migrate`` on an empty database) and kept as a file to copy.
- ``airflow_db`` (per test): a fresh copy of that file as the live metadata DB; the ORM is reconnected to it.
- ``prescore_env`` (per test): ``PRESCORE_*`` pointing at a private copy of the trained warehouse and the test
  Redis, as the task processes read it.
- ``load_dags``: parse ``dags/`` into a ``DagBag`` (after the environment is set: parsing reads the models file).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Without the `airflow` extra (uv sync --extra airflow) these tests are not collected.
collect_ignore_glob = [] if importlib.util.find_spec("airflow") else ["test_*.py"]

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
# Airflow's standard provider (sensors/python.py) imports a name that Airflow itself deprecates; the DagBag
# re-emits that warning for every parse of a file using @task.sensor. Not ours to fix.
AIRFLOW_OWN_WARNING = "The `airflow.utils.operator_helpers.determine_kwargs`"


@pytest.fixture(scope="session", autouse=True)
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if "airflow" in sys.modules:
        pytest.fail("airflow was imported before tests/dags set AIRFLOW_HOME; import it inside tests only")
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_ENABLED": "False",  # the DB file is swapped between tests
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__PRESCORE__FEATURE_POKE_INTERVAL_S": "1",
        "AIRFLOW__PRESCORE__FEATURE_WAIT_TIMEOUT_S": "4",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield home


@pytest.fixture(scope="session")
def airflow_db_template(airflow_home: Path) -> Path:
    """The migrated, empty metadata DB (built once; its cost is printed with -s)."""
    from airflow.utils.db import initdb

    start = time.perf_counter()
    initdb()
    sys.stderr.write(f"\n[airflow metadata DB migrated in {time.perf_counter() - start:.1f}s]\n")
    template = airflow_home / "airflow-template.db"
    shutil.copyfile(airflow_home / "airflow.db", template)
    return template


@pytest.fixture
def airflow_db(airflow_home: Path, airflow_db_template: Path) -> Iterator[Path]:
    """A fresh metadata DB for this test; also restores the AIRFLOW_CTX_* variables tasks leave behind."""
    from airflow import settings

    live = airflow_home / "airflow.db"
    settings.dispose_orm(do_log=False)
    shutil.copyfile(airflow_db_template, live)
    settings.configure_orm()
    before = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CTX_")}
    yield live
    for key in [k for k in os.environ if k.startswith("AIRFLOW_CTX_")]:
        del os.environ[key]
    os.environ.update(before)


@pytest.fixture
def prescore_env(
    trained_template: tuple[Path, Path],
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """PRESCORE_* for the task processes: a private copy of the trained warehouse, the test Redis."""
    home, models_file = trained_template
    shutil.copytree(home, tmp_path / "home")
    local_models = tmp_path / "models.yaml"
    shutil.copyfile(models_file, local_models)
    set_prescore_env(monkeypatch, tmp_path / "home", local_models, redis_url)
    return {"home": tmp_path / "home", "models_file": local_models, "redis_url": redis_url}


def set_prescore_env(monkeypatch: pytest.MonkeyPatch, home: Path, models_file: Path, redis_url: str) -> dict[str, str]:
    """``PRESCORE_*`` as the task processes read it: this home and models file, the test Redis, the SQLite catalog
    in the home, a local Dask cluster of two workers and tasks of 5,000 rows (so scoring and loading run on Dask,
    not inline).
    Returns the variables set."""
    env = {
        "PRESCORE_HOME": str(home),
        "PRESCORE_MODELS_FILE": str(models_file),
        "PRESCORE_REDIS_URL": redis_url,
        "PRESCORE_CATALOG_URL": "",
        "PRESCORE_DASK_ADDRESS": "",
        "PRESCORE_DASK_WORKERS": "2",
        "PRESCORE_TASK_ROWS": "5000",
        "PRESCORE_LOAD_ROWS": "5000",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def load_dags() -> Callable[[], Any]:
    """Parse ``dags/`` now (with the current environment) and return the DagBag; no import errors allowed."""

    def load() -> Any:
        import warnings

        from airflow.dag_processing.dagbag import DagBag

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=AIRFLOW_OWN_WARNING)
            bag = DagBag(dag_folder=str(DAGS_DIR))
        assert bag.import_errors == {}, bag.import_errors
        return bag

    return load
