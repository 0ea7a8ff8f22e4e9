"""The compose stack's Airflow settings against a real PostgreSQL metadata database: ``airflow-init`` runs its own
command (``airflow db migrate`` and the pool) with the environment compose gives it, only the database host and
credentials pointed at the test server. SQLite runs never open Airflow's async engine on PostgreSQL, which is how
a missing async driver (asyncpg) once kept the whole stack from starting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.postgres
_VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
DATABASE_KEYS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC")


def expand(value: str) -> str:
    """Compose's interpolation with an empty environment: ``${X:-default}`` → default, ``${X:?why}`` (required) →
    a test secret."""
    return _VARIABLE.sub(lambda m: m.group(3) if m.group(2) == "-" else "test-secret-0123456789abcdef", value)


def test_expand_follows_compose_interpolation() -> None:
    assert expand("a:${P:-airflow}@h/${Q:?set Q}") == "a:airflow@h/test-secret-0123456789abcdef"


def test_airflow_init_migrates_a_postgresql_metadata_db_with_the_compose_settings(
    compose: dict[str, Any], postgres_url: str, tmp_path: Path
) -> None:
    service = compose["services"]["airflow-init"]
    env = {k: expand(str(v)) for k, v in service["environment"].items() if k.startswith("AIRFLOW__")}
    assert set(DATABASE_KEYS) <= set(env), "compose must name both the sync and the async metadata DB URL"
    admin = sa.make_url(postgres_url)
    name = f"airflow_{os.getpid()}"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        for key in DATABASE_KEYS:
            url = sa.make_url(env[key])
            assert url.host == "postgres", f"{key} should name the compose service"
            env[key] = url.set(host=admin.host, port=admin.port, username=admin.username, password=admin.password,
                               database=name).render_as_string(hide_password=False)  # fmt: skip
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(tmp_path / "passwords.json")
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(tmp_path / "dags")
        assert service["command"][:2] == ["bash", "-c"]
        path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        env.update(PATH=path, HOME=str(tmp_path), AIRFLOW_HOME=str(tmp_path / "airflow"))
        done = subprocess.run(
            service["command"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        migrated = sa.create_engine(env[DATABASE_KEYS[0]])
        with migrated.connect() as conn:
            pools = conn.execute(sa.text("SELECT pool FROM slot_pool")).scalars().all()
        migrated.dispose()
        assert "prescore_dask" in pools
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
