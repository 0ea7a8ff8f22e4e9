"""Settings for every prescore process: the ``PRESCORE_*`` environment variables, each with an embedded default.

This is the only module that reads the environment. Settings are built once (``Settings()``) at start-up and
passed along; nothing opens a connection at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODELS_FILE = Path(__file__).parent / "defaults" / "models.yaml"


class Settings(BaseSettings):
    """Process-wide settings.

    - ``home``: warehouse root (features, scores, models, SQLite catalog, embedded Redis).
    - ``redis_url``: unset → prescore runs its own Redis under ``home`` (see ``warehouse.local_redis``).
    - ``catalog_url``: unset → ``sqlite:///<home>/catalog.db``.
    - ``dask_address``: unset → a local cluster; ``auto`` → dask-cuda when a GPU is visible; else a scheduler.
    - ``models_file``: unset → the embedded demo models file (model ``churn`` on ``customer_daily``).
    - ``dask_local``: kind of local cluster: ``auto``/``threads`` (one worker, a thread per core) or
      ``processes`` (a worker process per core; never inside an Airflow task); ``dask_workers``: its
      thread or process count (default: one per core).
    - ``airflow_url`` / ``airflow_username`` / ``airflow_password``: the Airflow 3 API that
      ``prescore backfill --via-airflow`` talks to.
    """

    model_config = SettingsConfigDict(env_prefix="PRESCORE_", extra="ignore")

    home: Path = Field(default=Path(".prescore"))
    redis_url: str | None = None
    catalog_url: str | None = None
    dask_address: str | None = None
    models_file: Path = DEFAULT_MODELS_FILE
    seed: int = 7
    dask_local: Literal["auto", "threads", "processes"] = "auto"
    dask_workers: int | None = Field(default=None, ge=1)
    # Set by Airflow in every task process; a local Dask cluster then uses threads (spawned worker
    # processes re-import Airflow and crash on its blocked DB access).
    airflow_url: str = "http://127.0.0.1:8080"
    airflow_username: str = "admin"
    airflow_password: str | None = None
    airflow_task: str | None = Field(default=None, validation_alias=AliasChoices("AIRFLOW_CTX_DAG_ID"))

    @field_validator("redis_url", "catalog_url", "dask_address", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_catalog_url(self) -> str:
        if self.catalog_url:
            return self.catalog_url
        return f"sqlite:///{self.home_dir / 'catalog.db'}"

    @property
    def features_dir(self) -> Path:
        return self.home_dir / "features"

    @property
    def scores_dir(self) -> Path:
        return self.home_dir / "scores"

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"
