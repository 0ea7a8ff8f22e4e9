"""Settings from the ``PRESCORE_*`` environment: each variable parsed into its field, bad values refused naming the
field, and the rules of a local versus an object-storage home."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.runtime import Runtime
from warehouse.datasets.storage import ObjectPath
from warehouse.errors import ConfigError
from warehouse.settings import DEFAULT_MODELS_FILE, Settings

BUCKET = "prescore-test"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PRESCORE_* (nor Airflow's task) variable of the machine running the suite leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("PRESCORE_") or name == "AIRFLOW_CTX_DAG_ID":
            monkeypatch.delenv(name)


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Embedded defaults; PRESCORE_* variables override them; blank values count as unset."""
    for var in ("PRESCORE_HOME", "PRESCORE_REDIS_URL", "PRESCORE_CATALOG_URL", "PRESCORE_DASK_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.redis_url is None and s.dask_address is None
    assert s.home == Path(".prescore")
    monkeypatch.setenv("PRESCORE_HOME", str(tmp_path))
    monkeypatch.setenv("PRESCORE_REDIS_URL", " ")
    s = Settings()
    assert s.redis_url is None
    assert s.resolved_catalog_url == f"sqlite:///{tmp_path / 'catalog.db'}"


def test_remote_home_requires_catalog_and_redis_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """An s3:// home has no place for the SQLite catalog or the embedded Redis: the error names what to set."""
    monkeypatch.setenv("PRESCORE_HOME", f"s3://{BUCKET}/nowhere/")
    monkeypatch.delenv("PRESCORE_CATALOG_URL", raising=False)
    monkeypatch.delenv("PRESCORE_REDIS_URL", raising=False)
    settings = Settings()
    assert settings.home == f"s3://{BUCKET}/nowhere" and settings.home_is_remote
    with pytest.raises(ConfigError, match=r"set PRESCORE_CATALOG_URL .* and PRESCORE_REDIS_URL"):
        Runtime.from_settings(settings)
    monkeypatch.setenv("PRESCORE_CATALOG_URL", "postgresql+psycopg://u:p@db/prescore")
    with pytest.raises(ConfigError, match=r"object storage.*set PRESCORE_REDIS_URL \(e\.g\.") as info:
        Runtime.from_settings(Settings())
    assert "PRESCORE_CATALOG_URL" not in str(info.value)
    with pytest.raises(ConfigError, match="embedded Redis needs a local directory; set PRESCORE_REDIS_URL"):
        _ = Settings().embedded_redis_dir
    monkeypatch.setenv("PRESCORE_REDIS_URL", "redis://127.0.0.1:1/0")
    rt = Runtime.from_settings(Settings())
    assert isinstance(rt.home, ObjectPath) and rt.local_dir == Path(".prescore").resolve()
    assert Settings(home="relative/dir").root == Path("relative/dir").resolve()  # a local path stays a Path


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("PRESCORE_STATE_DIR", "/var/lib/prescore", "state_dir", Path("/var/lib/prescore")),
        ("PRESCORE_REDIS_URL", "redis://r:6379/2", "redis_url", "redis://r:6379/2"),
        ("PRESCORE_CATALOG_URL", "postgresql+psycopg://u@db/c", "catalog_url", "postgresql+psycopg://u@db/c"),
        ("PRESCORE_PREDICTION_LOG_URL", "redis://log:6379/0", "prediction_log_url", "redis://log:6379/0"),
        ("PRESCORE_DASK_ADDRESS", "tcp://sched:8786", "dask_address", "tcp://sched:8786"),
        ("PRESCORE_MODELS_FILE", "/etc/prescore/models.yaml", "models_file", Path("/etc/prescore/models.yaml")),
        ("PRESCORE_SEED", "11", "seed", 11),
        ("PRESCORE_DASK_LOCAL", "processes", "dask_local", "processes"),
        ("PRESCORE_DASK_WORKERS", "3", "dask_workers", 3),
        ("PRESCORE_DASK_HOST", "0.0.0.0", "dask_host", "0.0.0.0"),
        ("PRESCORE_DASK_LOG_LEVEL", " info ", "dask_log_level", "INFO"),
        ("PRESCORE_AIRFLOW_URL", "http://airflow:8080", "airflow_url", "http://airflow:8080"),
        ("PRESCORE_AIRFLOW_USERNAME", "ops", "airflow_username", "ops"),
        ("PRESCORE_AIRFLOW_PASSWORD", "pw", "airflow_password", "pw"),
        ("AIRFLOW_CTX_DAG_ID", "prescore_score__churn", "airflow_task", "prescore_score__churn"),
        ("PRESCORE_RETENTION_SCORE_DAYS", "7", "retention_score_days", 7),
        ("PRESCORE_RETENTION_FAILED_DAYS", "8", "retention_failed_days", 8),
        ("PRESCORE_RETENTION_PUBLICATION_DAYS", "90", "retention_publication_days", 90),
        ("PRESCORE_RETENTION_PREDICTION_LOG_DAYS", "14", "retention_prediction_log_days", 14),
        ("PRESCORE_RETENTION_MODEL_VERSIONS", "2", "retention_model_versions", 2),
        ("PRESCORE_RETENTION_LEFTOVER_HOURS", "1.5", "retention_leftover_hours", 1.5),
        ("PRESCORE_RETENTION_UNPUBLISHED_RUN_HOURS", "0.25", "retention_unpublished_run_hours", 0.25),
        ("PRESCORE_LOG_MAX_MB", "2", "log_max_mb", 2),
        ("PRESCORE_LOG_BACKUPS", "0", "log_backups", 0),
    ],
)
def test_each_variable_sets_its_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, field: str, expected: object
) -> None:
    """One variable set: its field takes the parsed value, and differs from the default it replaced."""
    default = getattr(Settings(), field)
    monkeypatch.setenv(variable, raw)
    parsed = getattr(Settings(), field)
    assert parsed == expected and type(parsed) is type(expected)
    assert parsed != default


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("PRESCORE_SEED", "seven"),
        ("PRESCORE_DASK_LOCAL", "fork"),
        ("PRESCORE_DASK_WORKERS", "0"),
        ("PRESCORE_DASK_HOST", ""),
        ("PRESCORE_DASK_LOG_LEVEL", "loud"),
        ("PRESCORE_RETENTION_SCORE_DAYS", "0"),
        ("PRESCORE_RETENTION_FAILED_DAYS", "-1"),
        ("PRESCORE_RETENTION_PUBLICATION_DAYS", "a year"),
        ("PRESCORE_RETENTION_PREDICTION_LOG_DAYS", "0"),
        ("PRESCORE_RETENTION_MODEL_VERSIONS", "0"),
        ("PRESCORE_RETENTION_LEFTOVER_HOURS", "0"),
        ("PRESCORE_RETENTION_UNPUBLISHED_RUN_HOURS", "-2"),
        ("PRESCORE_LOG_MAX_MB", "0"),
        ("PRESCORE_LOG_BACKUPS", "101"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str, raw: str) -> None:
    """Validation at start-up: building the settings fails with one ``ConfigError`` line that names the environment
    variable, the value given and what is accepted (no pydantic traceback reaches the user)."""
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ConfigError) as info:
        Settings()
    message = str(info.value)
    assert message.startswith(f"invalid setting: {variable}="), message
    assert repr(raw).lower() in message.lower()  # the log level is upper-cased before it is checked
    assert message.count("PRESCORE_") == 1 and "\n" not in message


def test_every_bad_variable_is_named_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRESCORE_SEED", "seven")
    monkeypatch.setenv("PRESCORE_DASK_WORKERS", "0")
    with pytest.raises(ConfigError, match=r"PRESCORE_SEED='seven': .*; PRESCORE_DASK_WORKERS='0': .*fix or unset"):
        Settings()


@pytest.mark.parametrize(
    "variable", ["PRESCORE_REDIS_URL", "PRESCORE_CATALOG_URL", "PRESCORE_DASK_ADDRESS", "PRESCORE_PREDICTION_LOG_URL"]
)
def test_a_blank_url_counts_as_unset(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """A variable set to blanks (as an env file leaves it) means "unset", not a URL of spaces."""
    monkeypatch.setenv(variable, "redis://set:1/0")
    assert getattr(Settings(), variable.removeprefix("PRESCORE_").lower()) == "redis://set:1/0"
    monkeypatch.setenv(variable, "  ")
    assert getattr(Settings(), variable.removeprefix("PRESCORE_").lower()) is None


def test_defaults_are_the_embedded_ones() -> None:
    """With no variable set: a local ``.prescore`` home, the embedded models file, Redis and catalog unset."""
    s = Settings()
    assert s.models_file == DEFAULT_MODELS_FILE and DEFAULT_MODELS_FILE.is_file()
    assert s.redis_url is None and s.catalog_url is None and s.prediction_log_url is None and s.airflow_task is None
    assert s.dask_local == "auto" and s.dask_host == "127.0.0.1" and s.dask_log_level == "WARNING"
    assert s.log_max_bytes == s.log_max_mb * 1024 * 1024


def test_home_forms(tmp_path: Path) -> None:
    """``file://`` is a local path; a URL keeps its ``//`` and loses a trailing ``/``; a local home gives local dirs."""
    local = Settings(home=f"file://{tmp_path}/wh")
    assert local.home == tmp_path / "wh" and not local.home_is_remote
    assert local.root == local.home_dir == local.local_dir == (tmp_path / "wh").resolve()
    assert local.scores_dir == local.home_dir / "scores" and local.models_dir == local.home_dir / "models"
    assert local.features_dir == local.home_dir / "features"
    assert local.embedded_redis_dir == local.home_dir
    local.check_remote_home()  # a no-op for a local home

    remote = Settings(home=f"s3://{BUCKET}/wh/", state_dir=tmp_path / "state", redis_url="redis://r:1/0")
    assert remote.home == f"s3://{BUCKET}/wh" and remote.home_is_remote
    assert isinstance(remote.root, ObjectPath) and str(remote.scores_dir) == f"s3://{BUCKET}/wh/scores"
    assert remote.local_dir == (tmp_path / "state").resolve()
    with pytest.raises(ConfigError, match=f"PRESCORE_HOME is s3://{BUCKET}/wh, not a local directory"):
        _ = remote.home_dir
    with pytest.raises(ConfigError, match="default SQLite catalog needs a local directory; set PRESCORE_CATALOG_URL"):
        _ = remote.resolved_catalog_url
    with pytest.raises(ConfigError) as missing:
        remote.check_remote_home()
    assert "PRESCORE_CATALOG_URL" in str(missing.value) and "PRESCORE_REDIS_URL" not in str(missing.value)


def test_settings_are_read_when_built_not_at_import(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two ``Settings()`` around a change of the environment see different values: nothing is cached at import."""
    monkeypatch.setenv("PRESCORE_HOME", str(tmp_path / "a"))
    first = Settings()
    monkeypatch.setenv("PRESCORE_HOME", str(tmp_path / "b"))
    second = Settings()
    assert first.home == tmp_path / "a" and second.home == tmp_path / "b"
    assert first.resolved_catalog_url != second.resolved_catalog_url
