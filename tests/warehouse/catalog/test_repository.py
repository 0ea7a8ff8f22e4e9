"""The run catalog against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from warehouse.catalog import COMMITTED, FAILED, Base, Catalog
from warehouse.errors import CatalogError, RunConflictError
from warehouse.store.local_server import free_port

DAY = dt.date(2026, 11, 20)


@pytest.fixture
def catalog(catalog_url: str):
    cat = Catalog.open(catalog_url)
    yield cat
    cat.close()


def test_migrations_match_the_models(catalog: Catalog) -> None:
    """The Alembic head creates exactly the tables the ORM declares (no drift), and re-running is a no-op."""
    catalog.migrate()
    with catalog.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_run_lifecycle_and_report(catalog: Catalog) -> None:
    """A run goes running → committed with its report; later queries return it with UTC times."""
    run_id = catalog.start_run(model="churn", model_version="v1", partition_date=DAY)
    assert catalog.get_run(run_id).status == "running"
    done = catalog.finish_run(run_id, status=COMMITTED, rows_in=10, rows_out=10, report={"psi": 0.01})
    assert done.status == COMMITTED and done.rows_out == 10 and done.report == {"psi": 0.01}
    again = catalog.get_run(run_id)
    assert again.finished_at is not None and again.finished_at.tzinfo is not None
    assert catalog.latest_committed("churn").run_id == run_id
    assert catalog.latest_committed("churn", exclude=run_id) is None


def test_two_running_runs_of_one_partition_are_refused(catalog: Catalog) -> None:
    """The database, not the caller, refuses a second running run for the same (model, partition)."""
    first = catalog.start_run(model="churn", model_version="v1", partition_date=DAY)
    with pytest.raises(RunConflictError, match=first):
        catalog.start_run(model="churn", model_version="v1", partition_date=DAY)
    # another partition or model is fine
    catalog.start_run(model="churn", model_version="v1", partition_date=DAY + dt.timedelta(days=1))
    catalog.start_run(model="other", model_version="v1", partition_date=DAY)
    catalog.finish_run(first, status=FAILED, error="boom")
    catalog.start_run(model="churn", model_version="v1", partition_date=DAY)


def test_concurrent_starts_one_wins(catalog_url: str) -> None:
    """Eight threads with their own connections race to start the same partition: exactly one wins."""
    Catalog.open(catalog_url).close()  # migrate once
    results: list[str] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        cat = Catalog.open(catalog_url, migrate=False)
        barrier.wait()
        try:
            cat.start_run(model="churn", model_version="v1", partition_date=DAY)
            results.append("won")
        except RunConflictError:
            results.append("refused")
        finally:
            cat.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["refused"] * 7 + ["won"]


def test_abandoned_run_does_not_block_forever(catalog: Catalog) -> None:
    """A running row without heartbeat (its process died) is failed when a new run starts."""
    dead = catalog.start_run(model="churn", model_version="v1", partition_date=DAY)
    fresh = catalog.start_run(model="churn", model_version="v1", partition_date=DAY, abandon_after_s=-1)
    assert catalog.get_run(dead).status == FAILED
    assert "abandoned" in (catalog.get_run(dead).error or "")
    assert catalog.get_run(fresh).status == "running"


def test_publications_are_recorded_newest_first(catalog: Catalog) -> None:
    catalog.record_publication(model="churn", action="publish", run_id="a", previous_run_id=None)
    catalog.record_publication(model="churn", action="rollback", run_id="b", previous_run_id="a")
    pubs = catalog.publications("churn")
    assert [p["action"] for p in pubs] == ["rollback", "publish"]


def test_model_versions_and_promotion(catalog: Catalog) -> None:
    now = dt.datetime.now(dt.UTC)
    catalog.record_model_version(
        model="churn", kind="primary", version="v1", sha256="0" * 64, artifact_path="/x",
        features=["f00"], metrics={"auc": 0.8}, training_window={}, created_at=now,
    )  # fmt: skip
    catalog.mark_promoted("churn", "primary", "v1")
    (row,) = catalog.model_versions("churn")
    assert row.promoted_at is not None and row.metrics == {"auc": 0.8}


def test_naive_datetimes_are_refused(catalog: Catalog) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        catalog.record_model_version(
            model="m", kind="primary", version="v", sha256="0", artifact_path="/", features=[],
            metrics={}, training_window={}, created_at=dt.datetime(2026, 1, 1),
        )  # fmt: skip


def test_unreachable_catalog_is_a_clear_error() -> None:
    """A PostgreSQL URL nobody listens on: CatalogError naming the URL (password hidden), no traceback text."""
    url = f"postgresql+psycopg://user:secret@127.0.0.1:{free_port()}/nope"
    with pytest.raises(CatalogError) as info:
        Catalog.open(url)
    message = str(info.value)
    assert "cannot reach the catalog database" in message
    assert "secret" not in message and "***" in message
    assert "PRESCORE_CATALOG_URL" in message


def test_malformed_catalog_url() -> None:
    with pytest.raises(CatalogError, match="not a database URL"):
        Catalog.open("not a url")


def test_pointer_records_name_the_live_run_in_flip_order(catalog: Catalog) -> None:
    """Pointer records (publish, rollback, reconcile, restore) come newest first by the time of the flip they record,
    whatever order they were written in; a blocked publish is not one; the first names the live run."""
    t0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)
    assert catalog.live_pointer("churn") is None
    catalog.record_publication(model="churn", action="publish", run_id="a", previous_run_id=None, at=t0)
    catalog.record_publication(model="churn", action="publish", run_id="c", previous_run_id="a",
                               at=t0 + dt.timedelta(minutes=2))  # fmt: skip
    catalog.record_publication(model="churn", action="restore", run_id="b", previous_run_id=None,
                               at=t0 + dt.timedelta(minutes=1))  # written last, flipped before "c"  # fmt: skip
    catalog.record_publication(model="churn", action="blocked", run_id="d", previous_run_id="c")
    records = catalog.pointer_records("churn")
    assert [(r.action, r.run_id) for r in records] == [("publish", "c"), ("restore", "b"), ("publish", "a")]
    live = catalog.live_pointer("churn")
    assert live is not None and (live.run_id, live.at) == ("c", t0 + dt.timedelta(minutes=2))
    assert catalog.live_pointer("fraud") is None


def test_a_reader_never_creates_a_sqlite_catalog(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nowhere" / "catalog.db"
    with pytest.raises(CatalogError, match="no catalog database"):
        Catalog.open(f"sqlite:///{missing}", migrate=False, create=False)
    assert not missing.exists() and not missing.parent.exists()
