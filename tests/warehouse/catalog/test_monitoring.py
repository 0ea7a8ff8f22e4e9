"""Monitoring reports in the catalog (``Catalog.upsert_monitor``), against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.support.clock import day
from warehouse.catalog import Catalog, MonitorFeatureRecord, MonitorRecord
from warehouse.catalog.migrations import alembic_config

NOW = dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    cat = Catalog.open(catalog_url)
    yield cat
    cat.close()


def _report(offset: int = 0, features: int = 3, **kw: object) -> MonitorRecord:
    rows = tuple(MonitorFeatureRecord(feature=f"f{i:02d}", kind="numeric", psi=0.01 * i, null_rate=0.0,
                                      baseline_null_rate=0.0, null_rate_change=0.0, drifted=i == 2)
                 for i in range(features))  # fmt: skip
    base = MonitorRecord(
        model="churn", partition_date=day(offset), monitored_at=NOW, drift_status="measured",
        quality_status="measured", serving_status="no log", model_version="v1", run_id=f"run-{offset}",
        n_drifted=sum(r.drifted for r in rows), score_psi_previous=0.02, objective="binary:logistic", n_labels=10,
        n_labels_unscored=1, published_quality={"rows": 9, "auc": 0.8}, notes=["feature f02 drifted"], features=rows,
    )  # fmt: skip
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def _count(cat: Catalog, table: str) -> int:
    with cat.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_upsert_replaces_the_report_of_a_date_and_its_features(catalog: Catalog) -> None:
    """One report per (model, date): a rerun replaces it and its feature rows (fewer features here), other dates
    keep theirs; what is read back equals what was written."""
    first = catalog.upsert_monitor(_report())
    assert first == _report()
    catalog.upsert_monitor(_report(offset=-1))
    again = catalog.upsert_monitor(_report(features=2, quality_status="no labels yet", published_quality=None,
                                           notes=[]))  # fmt: skip
    assert (_count(catalog, "monitor_reports"), _count(catalog, "monitor_features")) == (2, 5)
    [stored] = catalog.monitor_reports("churn", partition_date=day(0))
    assert stored == again
    assert (stored.quality_status, stored.published_quality, [f.feature for f in stored.features]) == (
        "no labels yet", None, ["f00", "f01"])  # fmt: skip
    assert [r.partition_date for r in catalog.monitor_reports("churn")] == [day(0), day(-1)]
    assert stored.to_dict()["partition_date"] == day(0).isoformat()


def test_migration_0003_upgrades_a_0002_catalog(catalog_url: str) -> None:
    """A catalog at revision 0002 (with a row) is upgraded by ``Catalog.open``: the monitoring tables appear and the
    old rows stay."""
    from alembic import command

    engine = sa.create_engine(catalog_url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO publications (model, action, run_id, forced, detail, at) "
                             "VALUES ('churn', 'publish', 'r1', false, '{}', :at)"), {"at": NOW})  # fmt: skip
        assert "monitor_reports" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    cat = Catalog.open(catalog_url)
    try:
        assert {"monitor_reports", "monitor_features"} <= set(sa.inspect(cat.engine).get_table_names())
        assert [p["run_id"] for p in cat.publications("churn")] == ["r1"]
        cat.upsert_monitor(_report())
        assert len(cat.monitor_reports("churn")) == 1
    finally:
        cat.close()
