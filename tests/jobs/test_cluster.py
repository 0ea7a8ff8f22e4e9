"""Which local Dask cluster a job gets: threads by default, processes on request, never inside Airflow; what it
listens on (loopback only, unless PRESCORE_DASK_HOST says otherwise) and what it logs."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import jobs.publish
import jobs.score
from jobs.cluster import ClusterInfo, open_cluster
from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.conftest import END
from tests.support.listeners import ListenerWatch, is_loopback, listening
from warehouse.settings import Settings
from warehouse.store.local_server import stop_local_redis


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


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_scoring_job_and_its_publish_listen_on_loopback_only(
    kind: str, trained_template: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Score and publish a partition on a local cluster of each kind, with the embedded Redis of the home (no
    PRESCORE_REDIS_URL): every socket this process and its children listen on meanwhile (scheduler, workers,
    nannies, their dashboards and HTTP servers, Redis) is on loopback. Besides the watch sampling in the
    background, the listeners are read once inside each cluster the job opens (score, then publish), while it is
    up: a cluster too short-lived for the sampler is still seen."""
    home, models_file = trained_template
    shutil.copytree(home, tmp_path / "home")
    settings = Settings(home=tmp_path / "home", models_file=models_file, redis_url=None, catalog_url=None,
                        dask_local=kind, dask_workers=2, load_rows=5_000)  # type: ignore[arg-type]  # fmt: skip
    clusters: list[ClusterInfo] = []

    def seen_while_open(real: Callable[..., Any]) -> Callable[..., Any]:
        @contextmanager
        def opened(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with real(*args, **kwargs) as (client, info):
                watch.seen |= listening(os.getpid())
                clusters.append(info)
                yield client, info

        return opened

    monkeypatch.setattr(jobs.score, "open_cluster", seen_while_open(jobs.score.open_cluster))
    monkeypatch.setattr(jobs.publish, "open_cluster", seen_while_open(jobs.publish.open_cluster))
    rt = Runtime.from_settings(settings)
    try:
        with ListenerWatch(os.getpid()) as watch:
            report = score_partition(rt, "churn", END, device="cpu", task_rows=5_000)  # tasks: no inline run
            published = publish_run(rt, "churn", report.run_id)
    finally:
        rt.close()
        stop_local_redis(settings.embedded_redis_dir)
    assert published.run_id == report.run_id and report.cluster == f"local-{kind}"
    assert watch.exposed() == []
    assert [info.kind for info in clusters] == [f"local-{kind}"] * 2  # the score job's cluster, then publish's
    for info in clusters:
        assert info.dashboard is not None and urlsplit(info.dashboard).port in watch.ports()
    assert urlsplit(rt.redis_url).port in watch.ports()
    if kind == "processes":  # worker processes: their own listeners were seen too
        assert {item.pid for item in watch.seen} - {os.getpid()}


def test_the_listen_address_is_a_setting(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """PRESCORE_DASK_HOST moves every listener of the local cluster (here to 127.0.0.2, another loopback address):
    the dashboard link names it and nothing of the cluster listens elsewhere; a loopback address logs no warning."""
    settings = _settings(tmp_path, dask_host="127.0.0.2")
    with caplog.at_level(logging.WARNING, logger="jobs.cluster"), open_cluster(settings) as (client, info):
        assert client.submit(lambda x: x + 1, 1).result() == 2
        seen = listening(os.getpid())
    assert info.dashboard is not None and info.dashboard.startswith("http://127.0.0.2:")
    cluster = {item for item in seen if item.address == "127.0.0.2"}
    assert urlsplit(info.dashboard).port in {item.port for item in cluster}
    assert len(cluster) >= 2  # the scheduler's dashboard and the worker's HTTP server
    assert [str(item) for item in seen if not is_loopback(item.address)] == []
    assert "reachable from the network" not in caplog.text


def test_dask_start_up_chatter_stays_out_of_the_logs_unless_asked_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """By default (PRESCORE_DASK_LOG_LEVEL=WARNING) opening and closing a local cluster logs no INFO line from
    distributed; with INFO its banner ("Scheduler at", "Start worker at") is back. The level is restored after."""
    logger = logging.getLogger("distributed")
    before = logger.level

    def dask_info(**kw: object) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO), open_cluster(_settings(tmp_path, **kw)) as (client, _info):
            client.submit(lambda x: x + 1, 1).result()
        return [r.getMessage() for r in caplog.records if r.name.startswith("distributed") and r.levelno < 30]

    assert dask_info() == []
    assert any(r.name == "jobs.cluster" for r in caplog.records)  # prescore's own one-line summary stays
    chatter = dask_info(dask_log_level="info")
    assert any("Scheduler at" in line for line in chatter), chatter
    assert any("Start worker at" in line for line in chatter), chatter
    assert logger.level == before
