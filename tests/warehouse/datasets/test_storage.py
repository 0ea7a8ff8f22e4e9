"""PRESCORE_HOME on object storage: synth → train → score → commit → publish against a real S3-compatible server.

The server is moto's (``python -m moto.server``), started on a free 127.0.0.1 port for this module and stopped by
PID at the end; everything talks to it over HTTP through s3fs/botocore, configured by the standard AWS variables
(``AWS_ENDPOINT_URL`` points at it). Nothing is mocked in process. The catalog is SQLite in a temporary directory
and Redis the test server: both are required settings with a remote home.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from jobs import score as score_mod
from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition, scores_partition_dir
from tests.conftest import small_models_file
from tests.support.clock import END
from warehouse.catalog import COMMITTED, FAILED
from warehouse.datasets import features as fstore
from warehouse.datasets import score_files
from warehouse.datasets.score_files import read_run
from warehouse.datasets.storage import ObjectPath
from warehouse.errors import PartitionNotFoundError
from warehouse.settings import Settings
from warehouse.store.local_server import free_port
from warehouse.store.readers import ScoreReader

BUCKET = "prescore-test"
ENTITIES = 5_000
DAYS = 4
TASK_ROWS = 1_000  # several Dask tasks (and part files) per partition
NO_REDIS = "redis://127.0.0.1:1/0"  # training and synth never touch Redis
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _clear_s3_instances() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # cached filesystems would keep another module's endpoint


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for this module, with the AWS variables pointing at it and one bucket."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer on {url}: {log_path.read_text(errors='replace')}")
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": url}.items():
                mp.setenv(name, value)
            _clear_s3_instances()
            ObjectPath(f"s3://{BUCKET}").fs.mkdir(BUCKET)
            yield url
            _clear_s3_instances()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def aws_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    return s3_endpoint


def _settings(home: str | Path, models_file: Path, catalog: Path, redis_url: str) -> Settings:
    return Settings(
        home=home,
        models_file=models_file,
        catalog_url=f"sqlite:///{catalog}",
        redis_url=redis_url,
        dask_local="threads",
        dask_workers=2,
    )


@pytest.fixture(scope="module")
def s3_template(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """Synthesise (5,000 entities x 4 days) and train churn with PRESCORE_HOME on S3, once for the module."""
    from jobs.synth import synth
    from jobs.train import train_model

    base = tmp_path_factory.mktemp("s3-template")
    models_file = small_models_file(base / "models.yaml")
    home = f"s3://{BUCKET}/template-{uuid.uuid4().hex[:8]}"
    rt = Runtime.from_settings(_settings(home, models_file, base / "catalog.db", NO_REDIS))
    try:
        fs = rt.config.model("churn").feature_set
        synth(rt.home, feature_set=fs, spec=rt.config.feature_set(fs), entities=ENTITIES, days=DAYS, end_date=END,
              seed=7, chunk_rows=1_000)  # fmt: skip
        train_model(rt, "churn")
    finally:
        rt.close()
    return home, models_file, base / "catalog.db"


@pytest.fixture
def s3_rt(s3_template: tuple[str, Path, Path], aws_env: str, tmp_path: Path, redis_url: str) -> Iterator[Runtime]:
    """A Runtime on a private S3 copy of the trained warehouse, its own SQLite catalog and the test Redis."""
    template, models_file, catalog = s3_template
    home = f"s3://{BUCKET}/home-{uuid.uuid4().hex[:8]}"
    fs = ObjectPath(home).fs
    for part in ("features", "labels", "models"):
        fs.copy(f"{ObjectPath(template).key}/{part}", f"{ObjectPath(home).key}/{part}", recursive=True)
    (tmp_path / "catalog.db").write_bytes(catalog.read_bytes())
    rt = Runtime.from_settings(_settings(home, models_file, tmp_path / "catalog.db", redis_url))
    yield rt
    rt.close()


def _committed_runs(rt: Runtime, day: dt.date) -> list[str]:
    part_dir = scores_partition_dir(rt, "churn", day)
    return [p.name for p in part_dir.iterdir() if score_files.is_committed(p)]


def test_warehouse_lives_on_s3(s3_rt: Runtime) -> None:
    """synth and train wrote complete partitions and a registered, promoted model under the s3:// home."""
    assert isinstance(s3_rt.home, ObjectPath) and str(s3_rt.home).startswith(f"s3://{BUCKET}/home-")
    assert fstore.available_dates(s3_rt.home, "customer_daily") == [END - dt.timedelta(days=i) for i in (3, 2, 1, 0)]
    assert fstore.read_partition(s3_rt.home, "customer_daily", END).num_rows == ENTITIES
    version = s3_rt.registry.production_version("churn", "primary")
    assert version is not None and s3_rt.registry.versions("churn", "primary") == [version]
    loaded = s3_rt.registry.load("churn", "primary", s3_rt.config.model_features("churn"))
    assert isinstance(loaded.path, ObjectPath) and loaded.booster.num_features() == len(loaded.manifest.features)


def test_scores_on_s3_equal_a_local_run(s3_rt: Runtime, tmp_path: Path, redis_url: str) -> None:
    """Scored on a threads Dask cluster with the home on S3, the committed parts read back through read_run
    and equal, row for row, a local run on a local copy of the same warehouse."""
    report = score_partition(s3_rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    assert report.output_path is not None and report.output_path.startswith(f"{s3_rt.home}/scores/churn/dt=")
    run_dir = ObjectPath(report.output_path)
    parts = score_files.committed_parts(run_dir)
    assert parts is not None and len(parts) == ENTITIES // TASK_ROWS
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([*(p.name for p in parts), "_SUCCESS"])
    remote = read_run(report.output_path).sort_by("entity_id")
    assert remote.num_rows == report.rows_out == ENTITIES

    local_home = tmp_path / "local-home"
    key = s3_rt.home.key  # type: ignore[union-attr]
    for part in ("features", "labels", "models"):
        s3_rt.home.fs.get(f"{key}/{part}", str(local_home / part), recursive=True)  # type: ignore[union-attr]
    local_rt = Runtime.from_settings(
        _settings(local_home, s3_rt.settings.models_file, tmp_path / "local-catalog.db", redis_url)
    )
    try:
        local_report = score_partition(local_rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
        local = read_run(local_report.output_path).sort_by("entity_id")
    finally:
        local_rt.close()
    assert local_report.model_version == report.model_version
    assert remote.column("entity_id").equals(local.column("entity_id"))
    assert remote.column("score").equals(local.column("score"))
    assert remote.column("as_of").equals(local.column("as_of"))
    assert s3_rt.catalog.get_run(report.run_id).status == COMMITTED


def test_crash_mid_job_commits_nothing_and_rerun_commits_once(s3_rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task fails after others wrote their parts to S3: no committed run is visible; the rerun commits exactly
    one run, removes the crashed run's parts, and a further rerun reuses it."""
    real = score_mod.score_chunk

    def failing(chunk, *args, **kwargs):
        if chunk.index >= 2:  # chunks 0 and 1 write their parts, every later one fails
            raise OSError("disk went away")
        return real(chunk, *args, **kwargs)

    monkeypatch.setattr(score_mod, "score_chunk", failing)
    with pytest.raises(OSError, match="disk went away"):
        score_partition(s3_rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    (crashed,) = s3_rt.catalog.runs("churn", partition_date=END)
    assert crashed.status == FAILED and "disk went away" in (crashed.error or "")
    assert _committed_runs(s3_rt, END) == []

    monkeypatch.setattr(score_mod, "score_chunk", real)
    first = score_partition(s3_rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    again = score_partition(s3_rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    assert again.reused and again.run_id == first.run_id
    assert _committed_runs(s3_rt, END) == [f"run={first.run_id}"]
    part_dir = scores_partition_dir(s3_rt, "churn", END)
    assert [p.name for p in part_dir.iterdir()] == [f"run={first.run_id}"]  # the crashed run's parts are gone
    assert read_run(first.output_path).num_rows == ENTITIES


def test_only_a_manifest_listing_exactly_the_parts_commits(s3_rt: Runtime) -> None:
    """What a writer that died at each step leaves on S3 is never read as committed."""
    report = score_partition(s3_rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    good = ObjectPath(str(report.output_path))
    fs = good.fs
    part_dir = scores_partition_dir(s3_rt, "churn", END)

    no_manifest = part_dir / "run=died-before-manifest"  # parts written, the manifest never
    fs.copy(f"{good.key}/part-00000.parquet", f"{no_manifest.key}/part-00000.parquet")
    assert not score_files.is_committed(no_manifest)
    with pytest.raises(PartitionNotFoundError, match="no committed scores"):
        read_run(str(no_manifest))

    extra_part = part_dir / "run=stray-part"  # a part the manifest does not list
    fs.copy(good.key, extra_part.key, recursive=True)
    assert score_files.is_committed(extra_part)
    fs.copy(f"{good.key}/part-00000.parquet", f"{extra_part.key}/part-00099.parquet")
    assert not score_files.is_committed(extra_part)

    missing_part = part_dir / "run=missing-part"  # a listed part that is not there
    fs.copy(good.key, missing_part.key, recursive=True)
    fs.rm_file(f"{missing_part.key}/part-00001.parquet")
    assert not score_files.is_committed(missing_part)
    assert _committed_runs(s3_rt, END) == [f"run={report.run_id}"]


def test_publish_from_s3_loads_redis_from_the_workers(s3_rt: Runtime, redis_url: str) -> None:
    """Publishing an S3 run: Dask workers read its committed parts from S3 into Redis; lookups equal Parquet."""
    report = score_partition(s3_rt, "churn", END, device="cpu", task_rows=TASK_ROWS)
    pub = publish_run(s3_rt, "churn", report.run_id)
    assert pub.loaded and pub.rows == ENTITIES
    table = read_run(report.output_path)
    idx = np.random.default_rng(0).choice(table.num_rows, size=200, replace=False)
    ids = table.column("entity_id").take(idx).to_pylist()
    expected = table.column("score").take(idx).to_numpy()
    reader = ScoreReader.from_url(redis_url)
    try:
        assert reader.current_run("churn").run_id == report.run_id  # type: ignore[union-attr]
        served = reader.get_many("churn", ids)
    finally:
        reader.close()
    assert all(hit is not None and hit.run_id == report.run_id for hit in served)
    assert [np.float32(hit.score) for hit in served] == [np.float32(v) for v in expected]  # type: ignore[union-attr]


def test_prediction_log_drains_to_s3_exactly_once(aws_env: str, redis_url: str) -> None:
    """The prediction-log drain writes its part files to an s3:// home; a crash after a write (before the
    stream entries are deleted) duplicates nothing: the next drain finds them through the S3 watermark."""
    import redis

    from jobs.prediction_drain import LOG_DIR, drain_predictions
    from tests.jobs.test_prediction_drain import DAY_MS, T0, add
    from warehouse.prediction_stream import STREAM_KEY

    home = ObjectPath(f"s3://{BUCKET}/drain-{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(redis_url)
    try:
        sent = add(client, 3, 4, first_ms=T0) + add(client, 2, 5, first_ms=T0 + DAY_MS)

        def crash(path: object) -> None:
            raise KeyboardInterrupt("killed after the first file")

        with pytest.raises(KeyboardInterrupt):
            drain_predictions(redis_url, home, batch_entries=2, after_write=crash)
        report = drain_predictions(redis_url, str(home), batch_entries=2)
        assert client.xlen(STREAM_KEY) == 0
    finally:
        client.close()
    files = (home / LOG_DIR).glob("dt=*/part-*.parquet")
    assert sorted({p.parent.name for p in files}) == ["dt=2026-09-21", "dt=2026-09-22"]
    rows = [row for p in files for row in fstore.read_parquet(p).to_pylist()]
    assert sorted(r["request_id"] for r in rows) == sorted(rec[0] for rec in sent)
    assert report.already_drained == 2
