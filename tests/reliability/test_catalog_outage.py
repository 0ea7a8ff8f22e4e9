"""The catalog database becoming unavailable around a publish (PostgreSQL, the production catalog).

Two real outages: the database disappears (renamed away: every connection fails), and it turns read-only (as after
a failover to a standby: reads work, writes fail) between the pointer flip in Redis and its catalog record. The
requirement: no pointer change stays without its catalog record (``jobs.publish.reconcile_pointer``).
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.publish import publish_run, rollback_model
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.conftest import END, POSTGRES_ADMIN_URL
from warehouse.errors import CatalogError
from warehouse.settings import Settings
from warehouse.store import ScoreStore

pytestmark = pytest.mark.postgres
MODEL = "churn"


def _admin(sql: str, **params: str) -> None:
    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql), params)
    finally:
        engine.dispose()


def _disconnect(name: str) -> None:
    """End every session of database ``name`` (pooled connections reconnect on their next use)."""
    _admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()",
           n=name)  # fmt: skip


@pytest.fixture
def pg_catalog(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A throw-away PostgreSQL database for this test's catalog: ``(name, url)``; dropped at the end."""
    name = f"prescore_rel_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield name, POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}_away" WITH (FORCE)')
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_rt(
    trained_template: tuple[Path, Path], tmp_path: Path, redis_url: str, pg_catalog: tuple[str, str]
) -> Iterator[Callable[[], Runtime]]:
    """Runtimes (each a fresh process's view) on one private copy of the trained warehouse, the test Redis and the
    PostgreSQL catalog, with the drift gate off (the two runs score different days)."""
    home, models_file = trained_template
    shutil.copytree(home, tmp_path / "home")
    opened: list[Runtime] = []

    def make() -> Runtime:
        settings = Settings(home=tmp_path / "home", models_file=models_file, redis_url=redis_url,
                            catalog_url=pg_catalog[1], dask_local="threads")  # fmt: skip
        rt = Runtime.from_settings(settings)
        spec = rt.config.models[MODEL].model_copy(update={"max_psi": 10.0})
        rt.config = rt.config.model_copy(update={"models": {MODEL: spec}})
        opened.append(rt)
        return rt

    yield make
    for rt in opened:
        rt.close()


def _current(redis_url: str) -> str | None:
    with ScoreStore.from_url(redis_url) as store:
        run = store.current_run(MODEL)
    return run.run_id if run else None


def _pointer_records(rt: Runtime) -> list[tuple[str, str]]:
    return [(p["action"], p["run_id"]) for p in rt.catalog.publications(MODEL) if p["action"] != "blocked"]


def test_catalog_outage_at_publish_never_leaves_an_unrecorded_pointer(
    make_rt: Callable[[], Runtime], pg_catalog: tuple[str, str], redis_url: str, observe: Callable[..., None]
) -> None:
    """(1) Database gone: publish fails with CatalogError before touching Redis. (2) Database read-only: the
    pointer flips, the record fails, CatalogError says the run is live and will be recorded; while the catalog
    stays read-only no further pointer change happens (a rollback is refused before it flips). (3) Catalog back:
    the next publish records the missed change first (``reconcile``), and the history is complete."""
    name, _ = pg_catalog
    rt = make_rt()
    first = score_partition(rt, MODEL, END - dt.timedelta(days=1), device="cpu")
    second = score_partition(rt, MODEL, END, device="cpu")
    publish_run(rt, MODEL, first.run_id)
    assert _pointer_records(rt) == [("publish", first.run_id)]

    # (1) the database disappears: a new command cannot open the catalog and changes nothing
    _disconnect(name)
    _admin(f'ALTER DATABASE "{name}" RENAME TO "{name}_away"')
    try:
        with pytest.raises(CatalogError, match="cannot reach the catalog") as gone:
            publish_run(make_rt(), MODEL, second.run_id)
    finally:
        _admin(f'ALTER DATABASE "{name}_away" RENAME TO "{name}"')
    assert _current(redis_url) == first.run_id

    # (2) the database turns read-only between the flip and its record
    _admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    _disconnect(name)  # sessions open from now on are read-only
    try:
        with pytest.raises(CatalogError, match="live in Redis") as unrecorded:
            publish_run(rt, MODEL, second.run_id)
        assert "read-only" in str(unrecorded.value)
        assert _current(redis_url) == second.run_id  # the flip happened; its record did not
        assert _pointer_records(rt) == [("publish", first.run_id)]
        with pytest.raises(CatalogError, match="could not record the reconcile"):
            rollback_model(rt, MODEL)  # would flip again: refused first, as the missed change cannot be recorded
        assert _current(redis_url) == second.run_id
    finally:
        _admin(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        _disconnect(name)

    # (3) the catalog is back: the next publish records what it missed before anything else
    again = publish_run(rt, MODEL, second.run_id)
    assert again.already_current
    records = _pointer_records(rt)
    assert records == [("reconcile", second.run_id), ("publish", first.run_id)]
    reconcile = rt.catalog.publications(MODEL)[0]
    assert reconcile["previous_run_id"] == first.run_id and "catalog was unavailable" in reconcile["detail"]["reason"]
    assert records[0][1] == _current(redis_url)
    observe(
        "catalog_outage",
        catalog="PostgreSQL",
        outage_database_gone=str(gone.value).rsplit(": ", 1)[-1].split(".")[0].strip(),  # the server's reason
        outage_read_only=str(unrecorded.value).split(";")[0],
        pointer_changes=2,
        pointer_changes_recorded=sum(1 for action, _ in records if action in ("publish", "reconcile")),
        unrecorded_after_reconcile=0 if records[0][1] == _current(redis_url) else 1,
        history=[f"{a} {r}" for a, r in records],
    )
