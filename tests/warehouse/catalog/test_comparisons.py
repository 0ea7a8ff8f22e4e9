"""Champion/challenger comparisons in the catalog, against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.support.clock import day
from warehouse.catalog import COMPARED, FAILED, Catalog, ComparisonRecord
from warehouse.catalog.migrations import alembic_config

NOW = dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    cat = Catalog.open(catalog_url)
    yield cat
    cat.close()


def _compared(version: str = "v2", offset: int = 0, **kw: object) -> ComparisonRecord:
    base = ComparisonRecord(
        model="churn", challenger_version=version, partition_date=day(offset), status=COMPARED, compared_at=NOW,
        champion_version="v1", champion_run_id=f"champ-{offset}", challenger_run_id=f"chall-{offset}",
        n_champion=100, n_challenger=99, n_joined=99, psi=0.01, rank_correlation=0.93, decision_change=0.02,
        objective="binary:logistic",
    )  # fmt: skip
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_upsert_replaces_the_comparison_of_a_date(catalog: Catalog) -> None:
    """One row per (model, challenger version, date): a rerun replaces it, here filling in the quality once the
    labels arrived; other dates and versions keep their own rows."""
    first = catalog.upsert_comparison(_compared())
    assert first.champion_quality is None and first.partition_date == day(0) and first.compared_at == NOW
    catalog.upsert_comparison(_compared(offset=-1))
    catalog.upsert_comparison(_compared(version="v3", status=FAILED, reason="run failed: contract", psi=None))
    later = NOW + dt.timedelta(days=2)
    quality = {"auc": 0.81, "logloss": 0.42}
    labelled = _compared(n_labelled=99, champion_quality=quality, challenger_quality={"auc": 0.8, "logloss": 0.43},
                         compared_at=later)  # fmt: skip
    again = catalog.upsert_comparison(labelled)
    assert again.champion_quality == quality and again.compared_at == later and again.compared_at.tzinfo is not None
    rows = catalog.comparisons("churn")
    assert [(r.partition_date, r.challenger_version) for r in rows] == [(day(0), "v2"), (day(0), "v3"), (day(-1), "v2")]
    [stored] = catalog.comparisons("churn", challenger_version="v2", partition_date=day(0))
    assert stored == again
    [failed] = catalog.comparisons("churn", challenger_version="v3")
    assert (failed.status, failed.reason, failed.psi) == (FAILED, "run failed: contract", None)
    assert catalog.comparisons("fraud") == [] and len(catalog.comparisons("churn", limit=1)) == 1
    assert stored.to_dict()["partition_date"] == day(0).isoformat()


def test_concurrent_upserts_leave_one_row(catalog_url: str) -> None:
    """Six threads with their own connections write the same comparison at once: one row, no error."""
    Catalog.open(catalog_url).close()  # migrated once, before the race
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def write(i: int) -> None:
        cat = Catalog.open(catalog_url)
        try:
            barrier.wait()
            cat.upsert_comparison(_compared(psi=i / 100))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            cat.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cat = Catalog.open(catalog_url)
    try:
        assert len(cat.comparisons("churn")) == 1
    finally:
        cat.close()


def test_delete_comparisons_by_age_and_version(catalog: Catalog) -> None:
    """Retention's bound: comparisons before a date, or of versions that are neither challenger nor champion."""
    for offset in (-3, -2, -1, 0):
        catalog.upsert_comparison(_compared(offset=offset))
    catalog.upsert_comparison(_compared(version="gone"))
    assert catalog.delete_comparisons("churn", before=day(-1)) == 2
    assert catalog.delete_comparisons("churn", keep_versions={"v2"}) == 1
    assert [r.partition_date for r in catalog.comparisons("churn")] == [day(0), day(-1)]
    with pytest.raises(ValueError):
        catalog.delete_comparisons("churn")


def test_migration_0002_upgrades_a_0001_catalog(catalog_url: str) -> None:
    """A catalog made by revision 0001 (with rows) is upgraded by ``Catalog.open``: the comparisons table appears
    and the old rows stay."""
    from alembic import command

    engine = sa.create_engine(catalog_url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO publications (model, action, run_id, forced, detail, at) "
                             "VALUES ('churn', 'publish', 'r1', false, '{}', :at)"), {"at": NOW})  # fmt: skip
        assert "comparisons" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    cat = Catalog.open(catalog_url)
    try:
        assert "comparisons" in sa.inspect(cat.engine).get_table_names()
        assert [p["run_id"] for p in cat.publications("churn")] == ["r1"]
        cat.upsert_comparison(_compared())
        assert len(cat.comparisons("churn")) == 1
    finally:
        cat.close()
