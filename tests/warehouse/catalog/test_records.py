"""Catalog row copies and naming helpers: ``RunRecord.of`` on a real SQLite row, ``redact``, ``new_run_id``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.support.clock import day
from warehouse.catalog import COMMITTED, Catalog, ScoreRun
from warehouse.catalog.records import RunRecord, new_run_id, redact
from warehouse.store.keys import validate_name


@pytest.fixture
def catalog(tmp_path: Path):  # type: ignore[no-untyped-def]
    cat = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield cat
    cat.close()


def test_run_record_copies_every_field_and_outlives_its_session(catalog: Catalog) -> None:
    """``RunRecord.of`` copies each dataclass field from the row; the copy is usable (and frozen) after the session."""
    run_id = catalog.start_run(model="churn", model_version="v1", partition_date=day(0))
    catalog.finish_run(run_id, status=COMMITTED, rows_in=10, rows_out=9, report={"psi": 0.02}, output_path="/x")
    with catalog.session() as s:
        row = s.get(ScoreRun, run_id)
        assert row is not None
        record = RunRecord.of(row)
        expected = {f.name: getattr(row, f.name) for f in dataclasses.fields(RunRecord)}
    assert dataclasses.asdict(record) == expected
    assert (record.run_id, record.partition_date, record.rows_out, record.report) == (run_id, day(0), 9, {"psi": 0.02})
    assert record.started_at.tzinfo is not None and record.finished_at is not None
    assert not hasattr(record, "heartbeat_at")  # a row column that is not part of the record
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "failed"  # type: ignore[misc]
    assert catalog.get_run(run_id) == record


def test_redact_hides_the_password_only() -> None:
    """The password becomes ``***``; user, host, port and database stay; a URL without one is unchanged."""
    shown = redact("postgresql+psycopg://scorer:s3cret-pw@db.internal:5433/prescore")
    assert "s3cret-pw" not in shown
    assert shown == "postgresql+psycopg://scorer:***@db.internal:5433/prescore"
    assert redact("sqlite:////var/lib/prescore/catalog.db") == "sqlite:////var/lib/prescore/catalog.db"


def test_redact_of_an_unparseable_url_shows_nothing_of_it() -> None:
    """A URL SQLAlchemy cannot parse is never echoed (it may hold a password)."""
    assert redact("not a url with secret-pw") == "<unparseable URL>"


def test_new_run_ids_start_with_the_partition_and_are_unique() -> None:
    """A run id names its partition date first, is a valid store name, and two ids of one partition differ."""
    first, second = new_run_id("churn", day(-3)), new_run_id("churn", day(-3))
    assert first != second
    assert first.startswith(f"{day(-3):%Y%m%d}-") and second.startswith(f"{day(-3):%Y%m%d}-")
    assert validate_name("run id", first) == first


def test_the_head_revision_read_without_alembic_is_alembics(catalog_url: str) -> None:
    """``Catalog.open`` skips Alembic when the database is at the head it reads from the revision files: that head
    must be Alembic's own, and a fresh database is migrated to it."""
    from alembic.script import ScriptDirectory

    from warehouse.catalog import Catalog
    from warehouse.catalog.migrations import alembic_config, current_revision, head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
    catalog = Catalog.open(catalog_url)
    try:
        assert current_revision(catalog.engine) == head_revision()
    finally:
        catalog.close()
