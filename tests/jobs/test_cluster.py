"""Which local Dask cluster a job gets: threads by default, processes on request, never inside Airflow."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jobs.cluster import open_cluster
from warehouse.settings import Settings


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0", dask_workers=2, **kw)  # type: ignore[arg-type]


def _kind(settings: Settings) -> tuple[str, int]:
    with open_cluster(settings) as (client, info):
        assert client.submit(lambda x: x + 1, 1).result() == 2  # the cluster really runs work
        assert info.dashboard and info.dashboard.startswith("http://127.0.0.1:")
        return info.kind, info.workers


def test_default_local_cluster_uses_threads(tmp_path: Path) -> None:
    assert _kind(_settings(tmp_path)) == ("local-threads", 1)


def test_processes_on_request(tmp_path: Path) -> None:
    assert _kind(_settings(tmp_path, dask_local="processes")) == ("local-processes", 2)


def test_processes_refused_inside_airflow_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "prescore_score__churn")
    settings = _settings(tmp_path, dask_local="processes")
    assert settings.airflow_task == "prescore_score__churn"
    with caplog.at_level(logging.WARNING, logger="jobs.cluster"):
        assert _kind(settings) == ("local-threads", 1)
    assert "ignored inside an Airflow task" in caplog.text
