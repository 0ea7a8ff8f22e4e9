"""Retention with ``PRESCORE_HOME`` on object storage (moto's S3 server, as in
tests/warehouse/datasets/test_storage.py): no renames there, so a score run leaves by its manifest first, a
registry version by its manifest first, and the age of a crashed writer's prefix is its newest object's time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from jobs.prediction_drain import LOG_DIR, part_name
from jobs.publish import publish_run
from jobs.retention import LEFTOVERS, PREDICTION_LOGS, REGISTRY, SCORES, apply_retention
from jobs.runtime import Runtime
from jobs.score import score_partition, scores_partition_dir
from tests.jobs.test_retention import MODEL, _register, clock, configure, day, removed
from tests.support.clock import TODAY
from tests.warehouse.datasets.test_storage import aws_env, s3_endpoint, s3_rt, s3_template  # noqa: F401
from warehouse.datasets import score_files
from warehouse.datasets.storage import ObjectPath


def test_retention_on_object_storage(s3_rt: Runtime, tmp_path: Path) -> None:  # noqa: F811
    """Ten days on, with a 7-day window: the unpublished older run's prefix goes (the live one stays), a crashed
    run's uncommitted prefix goes, the older extra fallback version goes, an old prediction-log day goes; a second
    pass removes nothing."""
    rt = configure(s3_rt, retention_score_days=7, retention_model_versions=1, retention_leftover_hours=1,
                   state_dir=tmp_path / "state")  # fmt: skip
    old, live = (score_partition(rt, MODEL, day(n), device="cpu", task_rows=1_000) for n in (-1, 0))
    publish_run(rt, MODEL, live.run_id)
    crashed = score_files.run_dir(scores_partition_dir(rt, MODEL, day(0)), "crashed-1")
    (crashed / "part-00000.parquet").write_bytes(b"x")
    extra = [_register(rt, "fallback", list(rt.config.model(MODEL).fallback_features)) for _ in range(2)]
    root = rt.home / LOG_DIR
    stale_day = root / f"dt={TODAY - dt.timedelta(days=365)}"
    (stale_day / part_name("1-0", "2-0")).write_bytes(b"x")
    (root / f"dt={TODAY}" / part_name("3-0", "4-0")).write_bytes(b"x")

    report = apply_retention(rt, now=clock(days=10))
    assert removed(report, SCORES) == [str(old.output_path)]
    assert not ObjectPath(str(old.output_path)).exists() and score_files.is_committed(live.output_path)
    assert removed(report, LEFTOVERS) == [str(crashed)] and not crashed.exists()
    assert removed(report, REGISTRY) == [f"{MODEL}/fallback/{extra[0]}"]
    assert extra[0] not in rt.registry.versions(MODEL, "fallback") and rt.registry.leftovers(MODEL, "fallback") == []
    assert removed(report, PREDICTION_LOGS) == [str(stale_day)] and not stale_day.exists()
    assert apply_retention(rt, now=clock(days=10)).removed == []
