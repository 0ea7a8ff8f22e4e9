"""The batch figures on /metrics (``online.batch_metrics``) from a real SQLite catalog: monitor drift and quality,
failed runs and publishes, the model's freshness promise; read again only after the TTL (an injected clock), bounded
per model, and a catalog that breaks or never existed leaves /metrics working (the last figures, or none, with
``prescore_batch_figures_available`` 0). Then through the app's own /metrics against the real test Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from online.batch_metrics import MAX_FEATURES, BatchFigures
from tests.online.conftest import MODEL, serve
from warehouse.catalog import FAILED, Catalog, MonitorFeatureRecord, MonitorRecord
from warehouse.model_config import load_config
from warehouse.settings import DEFAULT_MODELS_FILE

AT = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)  # a publish of yesterday
DAY = AT.date() - dt.timedelta(days=1)
SPEC = load_config(DEFAULT_MODELS_FILE).models[MODEL]


def _report(day: dt.date, drifted: str | None, auc: float, n_features: int = 3) -> MonitorRecord:
    features = tuple(MonitorFeatureRecord(feature=f"f{i:02d}", kind="numeric", psi=0.9 if f"f{i:02d}" == drifted
                                          else 0.01 * i, drifted=f"f{i:02d}" == drifted)
                     for i in range(n_features))  # fmt: skip
    return MonitorRecord(model=MODEL, partition_date=day, monitored_at=AT, drift_status="measured",
                         quality_status="measured", serving_status="no log", n_drifted=int(drifted is not None),
                         score_psi_previous=0.3, published_quality={"rows": 100, "auc": auc, "logloss": 0.6},
                         features=features)  # fmt: skip


def _catalog(tmp_path: Path) -> tuple[str, Catalog]:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    return url, Catalog.open(url)


def _scrape(collector: BatchFigures) -> str:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return generate_latest(registry).decode()


def _value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` of an exposition (None: absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _figures(url: str, clock: Clock, ttl_s: float = 30.0) -> BatchFigures:
    return BatchFigures(url, lambda: {MODEL: SPEC}, ttl_s, clock=clock, spawn=lambda fn: fn())


def test_monitor_runs_and_publications_become_series(tmp_path: Path) -> None:
    """The newest report's drift per feature and its flag, the realized quality, the newest failed run (after the
    last publish) and the models file's max_age_s and schedule interval."""
    url, catalog = _catalog(tmp_path)
    catalog.upsert_monitor(_report(DAY - dt.timedelta(days=1), None, 0.83))
    catalog.upsert_monitor(_report(DAY, "f02", 0.55))
    catalog.record_publication(model=MODEL, action="publish", run_id="r1", previous_run_id=None, at=AT)
    run_id = catalog.start_run(model=MODEL, model_version="v1", partition_date=DAY)
    catalog.finish_run(run_id, status=FAILED, error="boom")
    failed_at = catalog.get_run(run_id).finished_at
    catalog.close()
    figures = _figures(url, Clock(AT.timestamp()))
    text = _scrape(figures)
    assert "prescore_batch_figures_available 1.0" in text
    assert 'prescore_monitor_feature_drifted{feature="f02",model="churn"} 1.0' in text
    assert 'prescore_monitor_feature_drifted{feature="f01",model="churn"} 0.0' in text
    assert 'prescore_monitor_feature_psi{feature="f02",model="churn"} 0.9' in text
    assert 'prescore_monitor_drifted_features{model="churn"} 1.0' in text
    assert 'prescore_monitor_score_psi{against="previous",model="churn"} 0.3' in text
    assert 'prescore_monitor_quality{metric="auc",model="churn"} 0.55' in text
    assert 'metric="rows"' not in text
    midnight = dt.datetime.combine(DAY, dt.time(), dt.UTC).timestamp()
    assert _value(text, "prescore_monitor_partition_timestamp_seconds", model=MODEL) == midnight
    assert failed_at is not None and failed_at > AT
    failure = _value(text, "prescore_batch_last_failure_timestamp_seconds", model=MODEL)
    assert failure == pytest.approx(failed_at.timestamp(), abs=1e-3)
    assert _value(text, "prescore_batch_last_publish_timestamp_seconds", model=MODEL) == AT.timestamp()
    assert _value(text, "prescore_model_max_age_seconds", model=MODEL) == SPEC.staleness.max_age_s
    assert 'prescore_model_schedule_interval_seconds{model="churn"} 86400.0' in text  # "0 2 * * *": daily
    figures.close()


def test_the_catalog_is_read_again_only_after_the_ttl(tmp_path: Path) -> None:
    """Scrapes within 30 s serve the cached figures; the first one after reads the catalog again."""
    url, catalog = _catalog(tmp_path)
    catalog.upsert_monitor(_report(DAY, "f02", 0.8))
    clock = Clock(1000.0)
    figures = _figures(url, clock)
    assert 'feature="f02",model="churn"} 1.0' in _scrape(figures) and figures.reads == 1
    catalog.upsert_monitor(_report(DAY + dt.timedelta(days=1), None, 0.8))
    clock.now += 29
    text = _scrape(figures)
    assert 'feature="f02",model="churn"} 1.0' in text and figures.reads == 1
    assert "prescore_batch_figures_age_seconds 29.0" in text
    clock.now += 2
    assert 'prescore_monitor_feature_drifted{feature="f02",model="churn"} 0.0' in _scrape(figures)
    assert figures.reads == 2
    catalog.close()
    figures.close()


def test_the_figures_per_model_are_bounded_and_keep_the_flagged_features(tmp_path: Path) -> None:
    url, catalog = _catalog(tmp_path)
    report = _report(DAY, None, 0.8, n_features=MAX_FEATURES + 50)
    flagged = MonitorFeatureRecord(feature="zz_nulls", kind="numeric", psi=0.0, null_rate_change=0.5, drifted=True)
    catalog.upsert_monitor(MonitorRecord(**{**report.__dict__, "features": (*report.features, flagged)}))
    catalog.close()
    figures = _figures(url, Clock(0.0))
    text = _scrape(figures)
    assert text.count("prescore_monitor_feature_drifted{") == MAX_FEATURES
    assert 'prescore_monitor_feature_drifted{feature="zz_nulls",model="churn"} 1.0' in text
    assert f'feature="f{MAX_FEATURES + 49:02d}"' in text and 'feature="f00"' not in text  # the highest PSIs kept
    figures.close()


def test_a_catalog_that_breaks_keeps_the_last_figures_and_says_so(tmp_path: Path) -> None:
    url, catalog = _catalog(tmp_path)
    catalog.upsert_monitor(_report(DAY, "f02", 0.8))
    clock = Clock(0.0)
    figures = _figures(url, clock)
    assert "prescore_batch_figures_available 1.0" in _scrape(figures)
    with catalog.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE monitor_features"))
    clock.now += 60
    text = _scrape(figures)  # the read fails: the cached figures stay
    assert "prescore_batch_figures_available 0.0" in text and figures.reads == 2
    assert 'prescore_monitor_feature_drifted{feature="f02",model="churn"} 1.0' in text
    assert "prescore_batch_figures_age_seconds 60.0" in text
    catalog.close()
    figures.close()


def test_a_catalog_that_never_existed_gives_no_figures_and_a_working_scrape(tmp_path: Path) -> None:
    figures = _figures(f"sqlite:///{tmp_path / 'none.db'}", Clock(0.0))
    text = _scrape(figures)
    assert "prescore_batch_figures_available 0.0" in text and "prescore_monitor_feature_psi{" not in text
    assert 'prescore_model_max_age_seconds{model="churn"}' in text  # from the models file, not the catalog
    assert not (tmp_path / "none.db").exists()
    assert "prescore_monitor" not in _scrape(_figures("sqlite://", Clock(0.0), ttl_s=0))  # off


async def _metrics_until(client, needle: str, timeout_s: float = 10.0) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        text = (await client.get("/metrics")).text
        if needle in text or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_the_apps_metrics_serve_the_catalogs_figures(make_settings, tmp_path: Path) -> None:
    """The app reads the catalog off the scrape (a worker thread): a scrape soon after shows the drifted feature."""
    url, catalog = _catalog(tmp_path)
    catalog.upsert_monitor(_report(DAY, "f02", 0.55))
    catalog.close()
    async with serve(make_settings(catalog_url=url)) as (_, client):
        text = await _metrics_until(client, 'prescore_monitor_feature_drifted{feature="f02"')
        lookup = await client.get(f"/v1/scores/{MODEL}/a")
    assert 'prescore_monitor_feature_drifted{feature="f02",model="churn"} 1.0' in text
    assert 'prescore_monitor_quality{metric="auc",model="churn"} 0.55' in text
    assert 'prescore_model_max_age_seconds{model="churn"}' in text and lookup.status_code == 200


@pytest.mark.asyncio
async def test_an_unreachable_catalog_does_not_break_the_apps_metrics(make_settings) -> None:
    settings = make_settings(catalog_url="postgresql+psycopg://prescore:x@127.0.0.1:1/prescore")
    async with serve(settings) as (_, client):
        first = await client.get("/metrics")
        text = await _metrics_until(client, "prescore_batch_figures_available 0.0")
    assert first.status_code == 200 and "prescore_request_seconds" in first.text
    assert "prescore_batch_figures_available 0.0" in text and "prescore_monitor_feature_psi{" not in text
