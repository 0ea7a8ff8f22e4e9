"""Shared fixtures: real services only.

- ``redis_server`` / ``redis_url``: a redis-server started for this test session on a free loopback port
  (never the machine's 6379); ``redis_url`` flushes it before each test.
- ``redis_factory``: start extra servers (to kill, restart, or configure with maxmemory).
- ``catalog_url``: parametrised over SQLite and PostgreSQL; PostgreSQL gets its own throw-away database.
- ``settings``: a ``Settings`` rooted in a temporary PRESCORE_HOME.
- ``trained_template`` (session): a small synthetic warehouse with trained, promoted ``churn`` models, built
  once and copied by the tests that need one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
import yaml

from tests.support.clock import END
from warehouse.settings import DEFAULT_MODELS_FILE, Settings
from warehouse.store.local_server import RedisProcess, start_redis

POSTGRES_ADMIN_URL = os.environ.get(
    "PRESCORE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisProcess]]:
    started: list[RedisProcess] = []

    def start(
        extra_args: list[str] | None = None, port: int | None = None, password: str | None = None
    ) -> RedisProcess:
        server = start_redis(tmp_path / f"redis-{len(started)}", port=port, extra_args=extra_args, password=password)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _postgres_available() -> bool:
    try:
        engine = sa.create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except sa.exc.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped at the end. Required in CI."""
    if not _postgres_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} (CI must provide it)")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}")
    name = f"prescore_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    # one schema-less reset per test: drop every table so tests never see each other's rows
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    yield base


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(home=tmp_path / "home", redis_url=redis_url, catalog_url=None)


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
    from jobs.runtime import Runtime
    from jobs.synth import synth
    from jobs.train import train_model

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
