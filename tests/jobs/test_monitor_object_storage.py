"""Baselines and ``prescore monitor`` with ``PRESCORE_HOME`` on S3 (a moto server): the baseline is uploaded with the
version and read back hash-checked; the monitor reads the partition, labels, run and prediction log there."""

from __future__ import annotations

from jobs.monitor import monitor_date
from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.support.clock import END
from tests.warehouse.datasets.test_storage import aws_env, s3_endpoint, s3_rt, s3_template  # noqa: F401
from warehouse.registry import BASELINE


def test_baseline_and_monitor_on_object_storage(s3_rt: Runtime) -> None:  # noqa: F811
    version = s3_rt.registry.require_production("churn", "primary")
    assert (s3_rt.registry.kind_dir("churn", "primary") / version / BASELINE).exists()
    baseline = s3_rt.registry.baseline("churn", "primary", version)
    assert baseline is not None and baseline["source"]["kind"] == "training"
    run = score_partition(s3_rt, "churn", END, device="cpu")
    publish_run(s3_rt, "churn", run.run_id)
    report = monitor_date(s3_rt, "churn", END)
    assert (report.drift_status, report.quality_status, report.serving_status) == ("measured", "measured", "no log")
    assert report.n_drifted == 0 and len(report.features) == 32
    assert report.published_quality is not None and report.published_quality["rows"] == 5_000
