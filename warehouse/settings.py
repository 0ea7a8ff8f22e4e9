"""Settings for every prescore process: the ``PRESCORE_*`` environment variables, each with an embedded default.

This is the only module that reads the environment. Settings are built once (``Settings()``) at start-up and
passed along; nothing opens a connection at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from warehouse.datasets.storage import ObjectPath, StoragePath, is_url
from warehouse.errors import ConfigError

DEFAULT_MODELS_FILE = Path(__file__).parent / "defaults" / "models.yaml"


class Settings(BaseSettings):
    """Process-wide settings.

    - ``home``: warehouse root (features, scores, models, SQLite catalog, embedded Redis). A local path, or an
      fsspec URL (``s3://bucket/prefix``, see ``warehouse.datasets.storage``): then features, labels, scores, models and
      prediction logs live on object storage, and what needs a local disk or a server cannot: ``catalog_url``
      and ``redis_url`` are required (``check_remote_home``), and machine-local state (the API's pid file, the
      demo's Airflow home) goes to ``state_dir``.
    - ``state_dir``: machine-local state when ``home`` is a URL (default ``.prescore`` in the working
      directory); with a local ``home`` it is ``home`` itself and this setting is ignored.
    - ``redis_url``: unset → prescore runs its own Redis under ``home`` (see ``warehouse.store.local_server``).
    - ``catalog_url``: unset → ``sqlite:///<home>/catalog.db``.
    - ``dask_address``: unset → a local cluster; ``auto`` → dask-cuda when a GPU is visible; else a scheduler.
    - ``models_file``: unset → the embedded demo models file (model ``churn`` on ``customer_daily``).
    - ``dask_local``: kind of local cluster: ``auto``/``threads`` (one worker, a thread per core) or
      ``processes`` (a worker process per core; never inside an Airflow task); ``dask_workers``: its
      thread or process count (default: one per core). ``task_rows``: rows per scoring task (whole row groups);
      a job of one task on a local CPU cluster runs inline, without starting Dask (``jobs.cluster``). ``load_rows``:
      rows per task loading a run into Redis (each owns a range of buckets: ``jobs.publish``).
    - ``dask_host``: the address every listener of a local cluster binds (scheduler, workers, nannies, their
      dashboards); loopback by default. An external cluster (``dask_address``) binds what its operator chose.
    - ``dask_log_level``: level of Dask's own loggers (``distributed.*``) while a job runs; ``WARNING`` keeps the
      start-up banner and per-connection chatter out of command output and task logs, ``INFO`` brings it back.
    - ``prediction_log_url``: the Redis of the online prediction log (unset: the score store's, ``redis_url``).
      Give the log its own Redis when lookups are many between drains or the store's memory is tight: the log
      then never competes with the score runs for memory or for the server's time.
    - ``airflow_url`` / ``airflow_username`` / ``airflow_password``: the Airflow 3 API that
      ``prescore backfill --via-airflow`` talks to.
    - ``retention_*`` / ``log_*``: how long, or how large, each store may grow (see the block below).
    """

    model_config = SettingsConfigDict(env_prefix="PRESCORE_", extra="ignore")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_settings_problem(type(self), exc)) from None

    home: Path | str = Field(default=Path(".prescore"))  # str only for a URL (see _home)
    state_dir: Path | None = None
    redis_url: str | None = None
    catalog_url: str | None = None
    prediction_log_url: str | None = None
    dask_address: str | None = None
    models_file: Path = DEFAULT_MODELS_FILE
    seed: int = 7
    dask_local: Literal["auto", "threads", "processes"] = "auto"
    dask_workers: int | None = Field(default=None, ge=1)
    task_rows: int = Field(default=1_000_000, ge=1)  # rows per scoring task; a partition of one task runs inline
    load_rows: int = Field(default=4_000_000, ge=1)  # rows per Redis loader task (a range of buckets, written whole)
    # ---- between nightly runs (``warehouse.store.overlays``): the bounds of a live run's overlay layer ----
    overlay_max_entities: int = Field(default=1_000_000, ge=1)  # rescored + invalidated entities over one base run
    overlay_max_deltas: int = Field(default=200, ge=1)  # delta runs published over one base run
    invalidate_max_ids: int = Field(default=10_000, ge=1)  # ids of one prescore invalidate / admin call
    dask_host: str = Field(default="127.0.0.1", min_length=1)
    dask_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    # Set by Airflow in every task process; a local Dask cluster then uses threads (spawned worker
    # processes re-import Airflow and crash on its blocked DB access).
    airflow_url: str = "http://127.0.0.1:8080"
    airflow_username: str = "admin"
    airflow_password: str | None = None
    airflow_task: str | None = Field(default=None, validation_alias=AliasChoices("AIRFLOW_CTX_DAG_ID"))

    # ---- retention: the bound of every store prescore grows (enforced by ``jobs.retention.apply_retention``,
    # ``prescore retention`` and the daily ``prescore_retention`` DAG; the table is in README.md) ----------------
    # Score-run Parquet of partitions older than this many days is removed; never the live run, a run Redis still
    # holds (rollback targets, runs loaded for a publish) or the model's newest committed run.
    retention_score_days: int = Field(default=30, ge=1)
    # Catalog rows of failed runs and of blocked publications (failure records), kept this many days.
    retention_failed_days: int = Field(default=30, ge=1)
    # Publish, rollback and reconcile records, kept this many days (the newest pointer record of a model always).
    retention_publication_days: int = Field(default=365, ge=1)
    # Prediction-log Parquet days (``prediction_logs/dt=…``), kept this many days (the newest day always).
    retention_prediction_log_days: int = Field(default=30, ge=1)
    # Registry versions kept per model and kind besides the production one (the newest N; older ones go).
    retention_model_versions: int = Field(default=5, ge=1)
    # Leftovers of crashed writers (score staging, registry staging, drain temp files) are removed at this age.
    retention_leftover_hours: float = Field(default=24.0, gt=0)
    # A run loaded into Redis and verified but never published (e.g. blocked by the quality gate) is unloaded at
    # this age; publishing it later loads it again from its Parquet.
    retention_unpublished_run_hours: float = Field(default=24.0, gt=0)
    # Log files prescore writes (the detached API's api.log, the embedded Redis's redis.log) are rotated past this
    # size, keeping this many backups (``api.log.1`` newest).
    log_max_mb: int = Field(default=50, ge=1)
    log_backups: int = Field(default=3, ge=0, le=100)

    @property
    def log_max_bytes(self) -> int:
        """``log_max_mb`` in bytes."""
        return self.log_max_mb << 20

    @field_validator("dask_log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("redis_url", "catalog_url", "dask_address", "prediction_log_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("home", mode="before")
    @classmethod
    def _home(cls, value: object) -> object:
        """A URL stays text (``Path`` would fold its ``//``); ``file://`` is a local path; else a ``Path``."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("file://"):
                return Path(text.removeprefix("file://"))
            return text.rstrip("/") if is_url(text) else Path(text)
        return value

    @property
    def home_is_remote(self) -> bool:
        return isinstance(self.home, str)

    @property
    def home_dir(self) -> Path:
        """The local warehouse root; ``ConfigError`` when ``PRESCORE_HOME`` is a URL (use ``root``)."""
        if isinstance(self.home, str):
            raise ConfigError(f"PRESCORE_HOME is {self.home}, not a local directory")
        return self.home.expanduser().resolve()

    @property
    def root(self) -> StoragePath:
        """The warehouse root: ``home_dir``, or an ``ObjectPath`` when ``PRESCORE_HOME`` is a URL."""
        return ObjectPath(self.home) if isinstance(self.home, str) else self.home_dir

    @property
    def local_dir(self) -> Path:
        """Machine-local state (pid files, the demo's Airflow home): ``home_dir``, or ``state_dir`` for a URL home."""
        if isinstance(self.home, str):
            return (self.state_dir or Path(".prescore")).expanduser().resolve()
        return self.home_dir

    def check_remote_home(self) -> None:
        """``ConfigError`` naming each missing setting when ``PRESCORE_HOME`` is a URL (a no-op for a local home)."""
        if not isinstance(self.home, str):
            return
        missing = [
            f"{name} ({what})"
            for name, value, what in (
                ("PRESCORE_CATALOG_URL", self.catalog_url, "e.g. postgresql+psycopg://user:pw@host/db"),
                ("PRESCORE_REDIS_URL", self.redis_url, "e.g. redis://host:6379/0"),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"PRESCORE_HOME is {self.home} (object storage), where the default SQLite catalog and the embedded "
                f"Redis cannot live; set {' and '.join(missing)}"
            )

    @property
    def embedded_redis_dir(self) -> Path:
        """Where the embedded Redis keeps its files; ``ConfigError`` when ``PRESCORE_HOME`` is a URL."""
        if isinstance(self.home, str):
            raise ConfigError(
                f"PRESCORE_HOME is {self.home} (object storage): the embedded Redis needs a local directory; set "
                "PRESCORE_REDIS_URL to a Redis server, e.g. redis://host:6379/0"
            )
        return self.home_dir

    @property
    def resolved_catalog_url(self) -> str:
        if self.catalog_url:
            return self.catalog_url
        if isinstance(self.home, str):
            raise ConfigError(
                f"PRESCORE_HOME is {self.home} (object storage): the default SQLite catalog needs a local directory; "
                "set PRESCORE_CATALOG_URL, e.g. postgresql+psycopg://user:pw@host/db"
            )
        return f"sqlite:///{self.home_dir / 'catalog.db'}"

    @property
    def features_dir(self) -> StoragePath:
        return self.root / "features"

    @property
    def scores_dir(self) -> StoragePath:
        return self.root / "scores"

    @property
    def models_dir(self) -> StoragePath:
        return self.root / "models"


def _settings_problem(cls: type[BaseSettings], exc: ValidationError) -> str:
    """One line per bad setting, naming its environment variable, the value given and what is accepted."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        alias = cls.model_fields[name].validation_alias if name in cls.model_fields else None
        choices = [str(c) for c in getattr(alias, "choices", ())] if alias is not None else []
        variable = choices[0] if choices else f"{prefix}{name}".upper()
        given = f"={err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"{variable}{given}: {err['msg'].removeprefix('Value error, ')}")
    return "invalid setting: " + "; ".join(lines) + " (fix or unset the variable)"
