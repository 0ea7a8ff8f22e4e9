"""Retention (``jobs.retention.apply_retention``, ``prescore retention``): each bound it enforces, against the real
test Redis, real catalogs (SQLite; PostgreSQL too where the catalog rows are the point), real Parquet, registry
and log files.

Every ``now`` is the real clock moved ahead by some hours or days, and the fixture warehouse is dated from the
session's clock (``tests.support.clock``): nothing here depends on the date the suite runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import sqlalchemy as sa
import xgboost as xgb
from typer.testing import CliRunner

from jobs import logfiles
from jobs.airflow_services import log_file, services_home
from jobs.cli import app
from jobs.local_airflow import fresh_demo_logs
from jobs.prediction_drain import LOG_DIR, part_name, watermark
from jobs.publish import load_run, publish_run, rollback_model
from jobs.retention import (
    LEFTOVERS,
    PREDICTION_LOGS,
    PUBLICATIONS,
    REDIS_RUNS,
    REGISTRY,
    RUN_ROWS,
    SCORES,
    VERSION_ROWS,
    Kept,
    RetentionReport,
    apply_retention,
    model_version_verdicts,
    prediction_log_day_verdicts,
    publication_verdicts,
    score_run_verdicts,
)
from jobs.runtime import Runtime
from jobs.score import score_partition
from jobs.serve import api_log
from tests.jobs.conftest import END
from warehouse.catalog import ABANDONED, COMMITTED, EXPIRED, FAILED, RunRecord
from warehouse.datasets.score_files import read_run, remove_run
from warehouse.errors import CatalogError, RegistryError
from warehouse.settings import DEFAULT_MODELS_FILE, Settings
from warehouse.store import ScoreReader, ScoreStore
from warehouse.store.local_server import ensure_local_redis, free_port, stop_local_redis

MODEL = "churn"
runner = CliRunner()


def clock(**ahead: float) -> dt.datetime:
    """The real clock, moved ahead by ``ahead`` (``timedelta`` keywords)."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(**ahead)


def day(offset: int) -> dt.date:
    return END + dt.timedelta(days=offset)


def configure(rt: Runtime, **settings: Any) -> Runtime:
    """Retention settings for this test (the rest of the runtime unchanged); the quality gate off, so that runs of
    different days can be published one after another."""
    rt.settings = rt.settings.model_copy(update=settings)
    spec = rt.config.models[MODEL].model_copy(update={"max_psi": 10.0})
    rt.config = rt.config.model_copy(update={"models": {MODEL: spec}})
    return rt


def removed(report: RetentionReport, store: str) -> list[str]:
    return sorted(r.item for r in report.removed if r.store == store)


def kept(report: RetentionReport, store: str) -> dict[str, str]:
    return {k.item: k.reason for k in report.kept if k.store == store}


def old_mtime(path: Path, hours: float) -> None:
    """Date ``path`` back by ``hours`` (a writer that crashed that long ago)."""
    stamp = time.time() - hours * 3600
    os.utime(path, (stamp, stamp))


# ---- pure rules --------------------------------------------------------------------------------------------------
def _record(run_id: str, partition: dt.date, finished: dt.datetime) -> RunRecord:
    return RunRecord(
        run_id=run_id, model=MODEL, model_version="v1", partition_date=partition, status=COMMITTED, device="cpu",
        rows_in=1, rows_out=1, input_fingerprint=None, output_path=f"/x/{run_id}", timings={}, report={},
        error=None, started_at=finished, finished_at=finished,
    )  # fmt: skip


def test_score_rule_keeps_held_runs_and_the_newest_committed_run() -> None:
    """Past the window every run goes except one Redis holds and the model's newest committed run (here never
    published: scoring stopped); inside the window nothing is even listed."""
    today = dt.date(2030, 6, 30)  # a pure function of its inputs: any date will do
    at = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)
    runs = [_record(run_id, today - dt.timedelta(days=age), at) for run_id, age in (("a", 40), ("b", 35), ("c", 33),
                                                                                  ("d", 3))]  # fmt: skip
    verdicts = {r.run_id: (remove, why) for r, remove, why in score_run_verdicts(runs, {"b": "live"}, today, 30)}
    assert set(verdicts) == {"a", "b", "c"}
    assert verdicts["a"][0] and "40 days old" in verdicts["a"][1]
    assert verdicts["b"] == (False, "live") and verdicts["c"][0]
    older = {r.run_id: remove for r, remove, _ in score_run_verdicts(runs[:3], {}, today, 30)}
    assert older == {"a": True, "b": True, "c": False}  # c: the newest committed run of the model


def test_registry_rule_keeps_production_recent_and_in_use_versions() -> None:
    versions = ["v1", "v2", "v3", "v4", "v5", "v6"]
    verdicts = {v: (remove, why) for v, remove, why in model_version_verdicts(versions, "v2", 2, {"v3": "in use"})}
    assert verdicts == {
        "v2": (False, "production version"),
        "v1": (True, verdicts["v1"][1]),
        "v3": (False, "in use"),
        "v4": (True, verdicts["v4"][1]),
    }
    assert model_version_verdicts(["v1", "v2"], "v1", 2, {}) == []


def test_publication_rule_keeps_the_newest_pointer_record() -> None:
    now = dt.datetime(2030, 6, 30, tzinfo=dt.UTC)
    rows = [
        {"action": "blocked", "at": now - dt.timedelta(days=40)},
        {"action": "publish", "at": now - dt.timedelta(days=400)},
        {"action": "rollback", "at": now - dt.timedelta(days=500)},
        {"action": "blocked", "at": now - dt.timedelta(days=10)},
    ]
    verdicts = [
        (row["action"], remove) for row, remove, _ in publication_verdicts(rows, now, 30, 365, ("publish", "rollback"))
    ]
    assert verdicts == [("blocked", True), ("publish", False), ("rollback", True)]


def test_prediction_log_rule_keeps_the_newest_day() -> None:
    today = dt.date(2030, 6, 30)
    days = [today - dt.timedelta(days=n) for n in (90, 60, 45)]
    assert [(d, remove) for d, remove, _ in prediction_log_day_verdicts(days, today, 30)] == [
        (days[0], True), (days[1], True), (days[2], False)]  # fmt: skip


# ---- score-run Parquet ---------------------------------------------------------------------------------------------
def test_score_parquet_beyond_retention_goes_but_the_live_run_and_rollback_target_stay(rt: Runtime) -> None:
    """Four committed partitions; D-2 then D0 published (D0 live, D-2 its rollback target). Ten days later with a
    7-day window every partition is past it: D-3 and D-1 lose their Parquet and catalog rows, D0 and D-2 keep
    theirs, Redis still serves D0, and rolling back to D-2 still works."""
    configure(rt, retention_score_days=7)
    runs = {n: score_partition(rt, MODEL, day(n), device="cpu") for n in (-3, -2, -1, 0)}
    publish_run(rt, MODEL, runs[-2].run_id)
    publish_run(rt, MODEL, runs[0].run_id)

    inside = apply_retention(rt, now=clock())  # every partition is inside the window today
    assert removed(inside, SCORES) == []

    report = apply_retention(rt, now=clock(days=10))
    assert removed(report, SCORES) == sorted([str(runs[-3].output_path), str(runs[-1].output_path)])
    assert kept(report, SCORES) == {
        str(runs[0].output_path): "live run (current in Redis)",
        str(runs[-2].output_path): "rollback target (retained in Redis)",
    }
    for n in (-3, -1):
        assert not Path(str(runs[n].output_path)).exists()
        assert not Path(str(runs[n].output_path)).parent.exists()  # the emptied partition directory too
        with pytest.raises(CatalogError):
            rt.catalog.get_run(runs[n].run_id)
    for n in (0, -2):
        assert read_run(str(runs[n].output_path)).num_rows == runs[n].rows_out
        assert rt.catalog.get_run(runs[n].run_id).status == COMMITTED
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        entity = read_run(str(runs[0].output_path), columns=["entity_id"]).column(0)[0].as_py()
        hit = reader.get(MODEL, entity)
        assert hit is not None and hit.run_id == runs[0].run_id
    finally:
        reader.close()
    assert rollback_model(rt, MODEL)["run_id"] == runs[-2].run_id


def test_an_interrupted_removal_is_finished_and_never_leaves_a_dangling_reference(rt: Runtime) -> None:
    """A pass that crashed after the tombstone (files still there) and one that crashed after the files (row still
    there): no query for committed runs returns either meanwhile, and the next pass, even inside the window,
    finishes both."""
    configure(rt)
    first, second, live = (score_partition(rt, MODEL, day(n), device="cpu") for n in (-2, -1, 0))
    publish_run(rt, MODEL, live.run_id)
    assert rt.catalog.expire_run(first.run_id) and rt.catalog.expire_run(second.run_id)
    remove_run(str(second.output_path))
    committed = {r.run_id for r in rt.catalog.runs(MODEL, status=COMMITTED, limit=None)}
    assert committed == {live.run_id}
    assert rt.catalog.latest_committed(MODEL, before=day(-1)) is None

    report = apply_retention(rt, now=clock())
    assert removed(report, SCORES) == sorted([str(first.output_path), str(second.output_path)])
    assert not Path(str(first.output_path)).exists()
    assert rt.catalog.runs(MODEL, status=EXPIRED, limit=None) == []
    assert read_run(str(live.output_path)).num_rows == live.rows_out


# ---- leftovers of crashed writers -----------------------------------------------------------------------------------
def test_leftovers_of_crashed_writers_go_after_their_age_but_not_while_their_run_runs(rt: Runtime) -> None:
    """Score staging of an unknown and of a failed run, a registry staging and removal directory and a drain temp
    file stay while younger than retention_leftover_hours and go after; the staging of a run the catalog shows
    running stays until the run is judged abandoned (no heartbeat for 6 h), then goes too."""
    configure(rt, retention_leftover_hours=1)
    part_dir = rt.settings.scores_dir / MODEL / f"dt={END}"
    failed = rt.catalog.start_run(model=MODEL, model_version="v", partition_date=day(-1))
    rt.catalog.finish_run(failed, status=FAILED, error="killed")
    running = rt.catalog.start_run(model=MODEL, model_version="v", partition_date=END)
    staged = {name: part_dir / f".staging-{name}" for name in ("crashed-unknown", failed, running)}
    kind_dir = Path(rt.registry.kind_dir(MODEL, "primary"))
    registry_left = [kind_dir / ".staging-abc", kind_dir / ".removing-20200101T000000000000-deadbeef"]
    drain_tmp = Path(rt.home) / LOG_DIR / f"dt={dt.datetime.now(dt.UTC).date()}" / ".part-1-0-2-0.parquet.x.tmp"
    for path in [*staged.values(), *registry_left]:
        path.mkdir(parents=True)
        (path / "part-00000.parquet").write_bytes(b"x" * 100)
    drain_tmp.parent.mkdir(parents=True)
    drain_tmp.write_bytes(b"x")
    for path in [*staged.values(), *registry_left, drain_tmp]:
        old_mtime(path, 0)  # written now by the test's clock (under a shifted clock, the kernel's stamps are real)

    assert apply_retention(rt, now=clock(minutes=30)).removed == []  # all younger than an hour

    report = apply_retention(rt, now=clock(hours=2))
    expected = sorted([str(staged["crashed-unknown"]), str(staged[failed]), *map(str, registry_left), str(drain_tmp)])
    assert removed(report, LEFTOVERS) == expected
    assert staged[running].exists() and not any(p.exists() for p in registry_left) and not drain_tmp.exists()

    later = apply_retention(rt, now=clock(hours=7))
    assert rt.catalog.get_run(running).error == ABANDONED
    assert removed(later, LEFTOVERS) == [str(staged[running])]
    assert not part_dir.exists() or not any(part_dir.iterdir())


# ---- catalog rows (SQLite and PostgreSQL) ---------------------------------------------------------------------------
@pytest.fixture
def catalog_rt(catalog_url: str, redis_url: str, tmp_path: Path) -> Any:
    settings = Settings(home=tmp_path / "home", catalog_url=catalog_url, redis_url=redis_url,
                        models_file=DEFAULT_MODELS_FILE)  # fmt: skip
    rt = Runtime.from_settings(settings)
    yield rt
    rt.close()


def test_catalog_rows_of_failures_and_old_publications_are_pruned(catalog_rt: Runtime) -> None:
    """Failed runs and blocked publications go after retention_failed_days, publish records after
    retention_publication_days except the model's newest pointer record; a run without a heartbeat for 6 h is
    closed as failed first and ages from then."""
    rt, cat = catalog_rt, catalog_rt.catalog
    failed = cat.start_run(model=MODEL, model_version="v1", partition_date=day(-2))
    cat.finish_run(failed, status=FAILED, error="boom")
    done = cat.start_run(model=MODEL, model_version="v1", partition_date=day(-1))
    cat.finish_run(done, status=COMMITTED)
    stuck = cat.start_run(model=MODEL, model_version="v1", partition_date=END)
    for action, run_id in (("publish", "r1"), ("blocked", "r2"), ("publish", "r3")):
        cat.record_publication(model=MODEL, action=action, run_id=run_id, previous_run_id=None)

    soon = apply_retention(rt, now=clock(days=10))
    assert removed(soon, RUN_ROWS) == [] and removed(soon, PUBLICATIONS) == []
    assert cat.get_run(stuck).status == FAILED and cat.get_run(stuck).error == ABANDONED  # finished "now"

    month = apply_retention(rt, now=clock(days=31))
    assert removed(month, RUN_ROWS) == [f"{MODEL}/{failed}"]
    assert [p["run_id"] for p in month_publications(rt)] == ["r3", "r1"]  # the blocked one went
    with pytest.raises(CatalogError):
        cat.get_run(failed)
    assert cat.get_run(stuck).status == FAILED  # abandoned 21 days before: younger than 30

    year = apply_retention(rt, now=clock(days=400))
    assert removed(year, RUN_ROWS) == [f"{MODEL}/{stuck}"]
    assert [p["run_id"] for p in month_publications(rt)] == ["r3"]  # the newest pointer record stays
    assert any("newest pointer record" in why for why in kept(year, PUBLICATIONS).values())
    assert cat.get_run(done).status == COMMITTED  # the newest committed run of the model
    assert apply_retention(rt, now=clock(days=400)).removed == []


def month_publications(rt: Runtime) -> list[dict[str, Any]]:
    return rt.catalog.publications(MODEL, limit=100)


# ---- registry versions ---------------------------------------------------------------------------------------------
def _register(rt: Runtime, kind: str, features: list[str]) -> str:
    rng = np.random.default_rng(len(rt.registry.versions(MODEL, kind)))
    x = rng.random((64, len(features)), dtype=np.float32)
    booster = xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(x, label=rng.integers(0, 2, 64)), 2)
    manifest = rt.registry.register(MODEL, kind, booster, features, {"auc": 0.5}, {})
    rt.catalog.record_model_version(
        model=MODEL, kind=kind, version=manifest.version, sha256=manifest.sha256, artifact_path="-",
        features=features, metrics={}, training_window={}, created_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    return manifest.version


def test_registry_keeps_production_and_the_newest_versions(rt: Runtime) -> None:
    """Four more versions per kind after training's production one, two kept besides production: the two oldest
    extra versions go with their catalog records (the primary one a running score run uses stays); production
    still loads, a removed version no longer does."""
    configure(rt, retention_model_versions=2)
    features = {"primary": rt.config.model_features(MODEL), "fallback": list(rt.config.model(MODEL).fallback_features)}
    production = {kind: rt.registry.require_production(MODEL, kind) for kind in features}
    extra = {kind: [_register(rt, kind, features[kind]) for _ in range(4)] for kind in features}
    rt.catalog.start_run(model=MODEL, model_version=extra["primary"][0], partition_date=END)  # uses the oldest

    report = apply_retention(rt, now=clock())
    assert removed(report, REGISTRY) == sorted([f"{MODEL}/primary/{extra['primary'][1]}",
                                                *(f"{MODEL}/fallback/{v}" for v in extra["fallback"][:2])])  # fmt: skip
    assert kept(report, REGISTRY)[f"{MODEL}/primary/{extra['primary'][0]}"].startswith("used by running score run")
    assert kept(report, REGISTRY)[f"{MODEL}/fallback/{production['fallback']}"] == "production version"
    assert removed(report, VERSION_ROWS) == removed(report, REGISTRY)
    assert rt.registry.versions(MODEL, "primary") == sorted([production["primary"], extra["primary"][0],
                                                             *extra["primary"][2:]])  # fmt: skip
    assert rt.registry.versions(MODEL, "fallback") == sorted([production["fallback"], *extra["fallback"][2:]])
    assert {(r.kind, r.version) for r in rt.catalog.model_versions(MODEL)} >= {("fallback", extra["fallback"][3])}
    assert ("fallback", extra["fallback"][0]) not in {(r.kind, r.version) for r in rt.catalog.model_versions(MODEL)}
    for kind in features:
        assert rt.registry.load(MODEL, kind, features[kind]).manifest.version == production[kind]
        assert rt.registry.leftovers(MODEL, kind) == []
    with pytest.raises(RegistryError, match="no fallback model"):
        rt.registry.load(MODEL, "fallback", features["fallback"], version=extra["fallback"][0])
    with pytest.raises(RegistryError, match="production version"):
        rt.registry.remove_version(MODEL, "primary", production["primary"])


# ---- prediction-log Parquet ----------------------------------------------------------------------------------------
def _log_day(root: Path, when: dt.date) -> Path:
    """One drained file of ``when``, named as the drain names it (retention reads names, never contents)."""
    ms = int(dt.datetime.combine(when, dt.time(12), dt.UTC).timestamp() * 1000)
    path = root / f"dt={when}" / part_name(f"{ms}-0", f"{ms + 5}-0")
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"entry_id": [f"{ms}-0"]}), path)
    return path


def test_prediction_log_days_beyond_retention_go_and_the_newest_day_stays(rt: Runtime) -> None:
    """Days 40 and 31 days old go with a 30-day window, 5 days old and today stay; a year on only the newest day
    stays, so the drain's watermark never moves back."""
    configure(rt, retention_prediction_log_days=30)
    root = Path(rt.home) / LOG_DIR
    today = dt.datetime.now(dt.UTC).date()
    files = {n: _log_day(root, today - dt.timedelta(days=n)) for n in (40, 31, 5, 0)}
    mark = watermark(root)

    report = apply_retention(rt, now=clock())
    assert removed(report, PREDICTION_LOGS) == sorted(str(files[n].parent) for n in (40, 31))
    assert sorted(p.name for p in root.iterdir()) == sorted(files[n].parent.name for n in (5, 0))

    year = apply_retention(rt, now=clock(days=365))
    assert removed(year, PREDICTION_LOGS) == [str(files[5].parent)]
    assert kept(year, PREDICTION_LOGS) == {str(files[0].parent): "the newest day (holds the drain's watermark)"}
    assert [p.name for p in root.iterdir()] == [files[0].parent.name]
    assert watermark(root) == mark


# ---- log files -----------------------------------------------------------------------------------------------------
def test_rotate_keeps_a_bounded_number_of_backups(tmp_path: Path) -> None:
    """Ten rounds of 5,000 bytes into a file rotated past 1,000 bytes with 3 backups: the file is emptied each
    time, .1 is the newest round, .3 the oldest kept, nothing beyond."""
    path = tmp_path / "api.log"
    for n in range(10):
        with path.open("ab") as fh:
            fh.write(bytes([65 + n]) * 5000)
        assert logfiles.rotate(path, 1000, 3) == 5000
    assert logfiles.rotate(path, 1000, 3) is None  # empty now: nothing to do
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.log", "api.log.1", "api.log.2", "api.log.3"]
    assert path.stat().st_size == 0
    assert [logfiles.backup(path, i).read_bytes()[:1] for i in (1, 2, 3)] == [b"J", b"I", b"H"]


WRITER = """
import sys, time
line = b"x" * 199 + b"\\n"
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()
    time.sleep(0.0005)
"""


@pytest.mark.real_clock
def test_a_log_another_process_keeps_writing_stays_bounded(tmp_path: Path) -> None:
    """The detached API's situation: a process appends to api.log through a file opened "ab" (as start_detached
    opens it) while a Rotator checks every 50 ms with a 20 kB bound and 2 backups. The files stay few and small,
    the live file has no hole (its writer continues at the start of the emptied file), and output keeps landing.
    The test waits on what it observes (rotations, output), never on a fixed time."""
    path = tmp_path / "api.log"
    with path.open("ab") as out:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, "120"], stdout=out)
    rotator = logfiles.Rotator(path, 20_000, 2, interval_s=0.05).start()
    try:
        deadline = time.monotonic() + 60
        while rotator.rotations < 3 and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        rotator.stop()
    try:
        size = path.stat().st_size
        deadline = time.monotonic() + 30  # the writer goes on: its output must land in the emptied file
        while path.stat().st_size <= size and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        writer.terminate()
        writer.wait(timeout=30)
    assert rotator.rotations >= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.log", "api.log.1", "api.log.2"]
    for backup in (logfiles.backup(path, 1), logfiles.backup(path, 2)):
        assert 20_000 < backup.stat().st_size < 100_000  # one interval of output past the bound, at most
    data = path.read_bytes()
    assert data and b"\0" not in data  # no sparse hole: the writer continued at the start of the emptied file


def test_retention_rotates_the_output_of_the_local_airflow_services(rt: Runtime) -> None:
    """The scheduler's output file of `prescore airflow up` (appended by the running scheduler) over log_max_mb is
    rotated like api.log; a small one is left as it is."""
    configure(rt, log_max_mb=1, log_backups=1)
    home = services_home(rt.local_dir)
    scheduler_log, api_server_log = log_file(home, "scheduler"), log_file(home, "api-server")
    scheduler_log.parent.mkdir(parents=True)
    scheduler_log.write_bytes(b"scheduler heartbeat\n" * 70_000)  # 1.4 MB
    api_server_log.write_bytes(b"small\n")
    report = apply_retention(rt, now=clock())
    assert removed(report, "logs") == [str(scheduler_log)]
    assert scheduler_log.stat().st_size == 0 and logfiles.backup(scheduler_log, 1).stat().st_size > 1 << 20
    assert api_server_log.read_bytes() == b"small\n"


def test_retention_rotates_api_log_and_the_embedded_redis_log(rt: Runtime) -> None:
    """api.log over log_max_mb is rotated; so is the embedded Redis's redis.log, and Redis goes on logging into
    the emptied file (it opens the file for every line)."""
    configure(rt, log_max_mb=1, log_backups=2)
    log_file = api_log(rt.local_dir)
    log_file.parent.mkdir(parents=True)
    log_file.write_bytes(b"old api output\n" * 100_000)  # 1.5 MB
    server = ensure_local_redis(rt.settings.home_dir)
    try:
        redis_log = Path(server.workdir) / "redis.log"
        with redis_log.open("ab") as fh:
            fh.write(b"old redis output\n" * 70_000)  # 1.2 MB
        dry = apply_retention(rt, now=clock(), dry_run=True)
        assert removed(dry, "logs") == sorted([str(log_file), str(redis_log)])
        assert log_file.stat().st_size > 1 << 20  # a dry run rotates nothing

        report = apply_retention(rt, now=clock())
        assert removed(report, "logs") == sorted([str(log_file), str(redis_log)])
        assert log_file.stat().st_size == 0 and logfiles.backup(log_file, 1).stat().st_size > 1 << 20
        client = redis.Redis(port=server.port)
        try:
            client.bgsave()
            deadline = time.monotonic() + 10
            while b"Background saving" not in redis_log.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            client.close()
        assert b"Background saving" in redis_log.read_bytes()
        assert b"old redis output" not in redis_log.read_bytes()
    finally:
        stop_local_redis(rt.settings.home_dir)


def test_the_demo_replaces_its_airflow_logs_on_every_run(tmp_path: Path) -> None:
    """Before each demo DAG run the previous run's task logs are deleted; the metadata DB stays."""
    af = tmp_path / "airflow"
    task_log = af / "logs" / "dag_id=prescore_score__churn" / "run_id=x" / "task_id=score" / "attempt=1.log"
    task_log.parent.mkdir(parents=True)
    task_log.write_text("previous run")
    (af / "airflow.db").write_bytes(b"db")
    assert fresh_demo_logs(tmp_path) == af / "demo-dag-test.log"
    assert not (af / "logs").exists() and (af / "airflow.db").exists()


# ---- dry run, idempotence, the command ----------------------------------------------------------------------------
def _snapshot(rt: Runtime) -> dict[str, Any]:
    """Every file (size, mtime) under the home but the SQLite file, every catalog row, every Redis key."""
    home = Path(rt.home)
    files = sorted((str(p.relative_to(home)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in home.rglob("*") if p.name != "catalog.db")  # fmt: skip
    with rt.catalog.engine.connect() as conn:
        rows = {t: sorted(map(str, conn.execute(sa.text(f"SELECT * FROM {t}"))))
                for t in ("score_runs", "publications", "model_versions")}  # fmt: skip
    client = redis.Redis.from_url(rt.redis_url)
    try:
        keys = sorted((k, client.type(k)) for k in client.keys("*"))
    finally:
        client.close()
    return {"files": files, "rows": rows, "keys": keys}


def test_dry_run_changes_nothing_and_a_second_pass_is_a_no_op(rt: Runtime) -> None:
    """A home with something to remove in every store: a dry run lists it and changes nothing (files, catalog rows,
    Redis keys); the real pass removes exactly what the dry run listed; a second pass removes nothing."""
    configure(rt, retention_score_days=7, retention_model_versions=1, retention_leftover_hours=1, log_max_mb=1)
    runs = {n: score_partition(rt, MODEL, day(n), device="cpu") for n in (-2, -1, 0)}
    publish_run(rt, MODEL, runs[0].run_id)
    rt.catalog.record_publication(model=MODEL, action="blocked", run_id=runs[-2].run_id, previous_run_id=None)
    with ScoreStore.from_url(rt.redis_url) as store:  # loaded for a publish that never came
        load_run(rt, store, rt.catalog.get_run(runs[-1].run_id))
    failed = rt.catalog.start_run(model=MODEL, model_version="v", partition_date=day(-3))
    rt.catalog.finish_run(failed, status=FAILED, error="boom")
    for kind, feats in (("primary", rt.config.model_features(MODEL)),
                        ("fallback", list(rt.config.model(MODEL).fallback_features))):  # fmt: skip
        _register(rt, kind, feats)
        _register(rt, kind, feats)
    leftover = rt.settings.scores_dir / MODEL / f"dt={END}" / ".staging-crashed"
    leftover.mkdir()
    old_mtime(leftover, 3)
    _log_day(Path(rt.home) / LOG_DIR, dt.datetime.now(dt.UTC).date() - dt.timedelta(days=60))
    _log_day(Path(rt.home) / LOG_DIR, dt.datetime.now(dt.UTC).date())
    log_file = api_log(rt.local_dir)
    log_file.parent.mkdir(parents=True)
    log_file.write_bytes(b"y" * (3 << 19))
    now = clock(days=40)

    before = _snapshot(rt)
    dry = apply_retention(rt, now=now, dry_run=True)
    assert _snapshot(rt) == before
    assert set(dry.counts()) == {REDIS_RUNS, SCORES, LEFTOVERS, RUN_ROWS, PUBLICATIONS, VERSION_ROWS, REGISTRY,
                                 PREDICTION_LOGS, "logs"}  # fmt: skip
    assert dry.dry_run and dry.notes

    real = apply_retention(rt, now=now)
    assert sorted((r.store, r.item) for r in real.removed) == sorted((r.store, r.item) for r in dry.removed)
    assert removed(real, SCORES) == sorted(str(runs[n].output_path) for n in (-2, -1))
    assert Kept(SCORES, str(runs[0].output_path), "live run (current in Redis)") in real.kept

    after = _snapshot(rt)
    again = apply_retention(rt, now=now)
    assert again.removed == [] and _snapshot(rt) == after


def test_the_command_dry_runs_reports_and_changes_nothing_while_redis_is_down(rt: Runtime) -> None:
    """`prescore retention --dry-run --json` lists a 60-day-old prediction-log day and keeps it; with Redis down
    the command exits 3 in one line and has removed nothing; then a real pass removes the day."""
    env = {
        "PRESCORE_HOME": str(rt.home),
        "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
        "PRESCORE_REDIS_URL": rt.redis_url,
        "PRESCORE_CATALOG_URL": "",
    }
    root = Path(rt.home) / LOG_DIR
    old = _log_day(root, dt.datetime.now(dt.UTC).date() - dt.timedelta(days=60)).parent
    _log_day(root, dt.datetime.now(dt.UTC).date())
    result = runner.invoke(app, ["retention", "--dry-run", "--json"], env=env)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["dry_run"] is True and payload["counts"] == {PREDICTION_LOGS: 1}
    assert [r["item"] for r in payload["removed"]] == [str(old)] and old.exists()

    down = runner.invoke(app, ["retention"], env={**env, "PRESCORE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.exit_code == 3, down.output
    assert "Traceback" not in down.output and len(down.output.strip().splitlines()) == 1
    assert old.exists()

    human = runner.invoke(app, ["retention"], env=env)
    assert human.exit_code == 0, human.output
    assert f"removed 1 from {PREDICTION_LOGS}" in human.output and not old.exists()


def test_comparisons_older_than_the_publication_window_go(rt: Runtime) -> None:
    """The champion/challenger comparisons are bounded by age: rows of partitions older than
    ``retention_publication_days`` go (a dry run only lists them); younger ones stay."""
    import dataclasses

    from warehouse.catalog import COMPARED, ComparisonRecord

    now = dt.datetime.now(dt.UTC)
    base = ComparisonRecord(
        model=MODEL, challenger_version="v2", partition_date=now.date(), status=COMPARED, compared_at=now,
        champion_version="v1", champion_run_id="a", challenger_run_id="b", n_champion=1, n_challenger=1, n_joined=1,
        psi=0.0, rank_correlation=1.0, decision_change=0.0, objective="binary:logistic",
    )  # fmt: skip
    days = rt.settings.retention_publication_days
    for age in (0, days - 1, days + 1, days + 30):
        rt.catalog.upsert_comparison(dataclasses.replace(base, partition_date=now.date() - dt.timedelta(days=age)))
    dry = apply_retention(rt, now=now, dry_run=True)
    assert sum(r.store == "catalog.comparisons" for r in dry.removed) == 2
    assert len(rt.catalog.comparisons(MODEL)) == 4
    apply_retention(rt, now=now)
    kept = sorted((now.date() - c.partition_date).days for c in rt.catalog.comparisons(MODEL))
    assert kept == [0, days - 1]
    again = apply_retention(rt, now=now)
    assert not [r for r in again.removed if r.store == "catalog.comparisons"]


def test_monitor_reports_older_than_the_publication_window_go(rt: Runtime) -> None:
    from warehouse.catalog import MonitorRecord

    now = dt.datetime.now(dt.UTC)
    days = rt.settings.retention_publication_days
    for age in (0, days - 1, days + 1):
        rt.catalog.upsert_monitor(MonitorRecord(model=MODEL, partition_date=now.date() - dt.timedelta(days=age),
                                                monitored_at=now, drift_status="unavailable",
                                                quality_status="no labels yet", serving_status="no log"))  # fmt: skip
    dry = apply_retention(rt, now=now, dry_run=True)
    assert sum(r.store == "catalog.monitor_reports" for r in dry.removed) == 1
    assert len(rt.catalog.monitor_reports(MODEL)) == 3
    apply_retention(rt, now=now)
    assert sorted((now.date() - r.partition_date).days for r in rt.catalog.monitor_reports(MODEL)) == [0, days - 1]
