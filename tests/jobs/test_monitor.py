"""``prescore monitor`` on real runs of the synthetic warehouse: drift against the baseline, realized quality
(published and served, per answer source), the serving mix, and the faults (no labels, broken labels, unscored
labels, a log gap, a rerun, a version without a baseline). Dates come from the test clock (``tests.support.clock``).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import xgboost as xgb
from sklearn.metrics import log_loss, roc_auc_score

from jobs.monitor import monitor_date, monitor_range
from jobs.prediction_drain import LOG_DIR, part_name
from jobs.publish import publish_run
from jobs.register import register_model
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.support.clock import day
from warehouse.datasets import features as fstore
from warehouse.datasets.score_files import read_run
from warehouse.errors import RegistryError, UserError
from warehouse.prediction_stream import records_table
from warehouse.registry import BASELINE, MANIFEST

FIXED = dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC)
MODEL = "churn"
FS = "customer_daily"


def _publish(rt: Runtime, offset: int, force: bool = False) -> str:
    run = score_partition(rt, MODEL, day(offset), device="cpu", force=force)
    publish_run(rt, MODEL, run.run_id, force=force)
    return run.run_id


def _write_log(rt: Runtime, offset: int, rows: list[tuple[str, str | None, str, float, int]]) -> None:
    """Answers ``(entity_id, run_id, source, score, hour)`` of UTC day ``day(offset)`` as a drained part file."""
    start = dt.datetime.combine(day(offset), dt.time(), dt.UTC).timestamp()
    records = [(f"req-{i}", MODEL, entity, "v" if run else None, run, source, score, 100,
                start + hour * 3600 + i * 1e-3, "champion")
               for i, (entity, run, source, score, hour) in enumerate(rows)]  # fmt: skip
    first = f"{int(start * 1000)}-0"
    table = records_table([(first, records)])
    path = rt.home / LOG_DIR / f"dt={day(offset)}" / part_name(first, first)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _count(rt: Runtime, table: str) -> int:
    with rt.catalog.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def _labels(rt: Runtime, offset: int) -> pa.Table:
    return fstore.read_labels(rt.home, FS, day(offset))


def _rewrite_labels(rt: Runtime, offset: int, table: pa.Table) -> None:
    directory = fstore.label_partition_dir(rt.home, FS, day(offset))
    for part in directory.glob("part-*.parquet"):
        part.unlink()
    pq.write_table(table, directory / "part-00000.parquet")


def test_monitor_measures_drift_quality_and_serving_and_a_rerun_replaces_it(rt: Runtime) -> None:
    """Two published days; day 0 also has a served log: precomputed answers from the published run (fresh), from
    the run of day -3 (stale: older than 36 h), fallback answers with poor scores, and defaults. Published quality
    equals scikit-learn's on the run joined with the labels; served quality is split per source and the fallback's
    AUC is far below the precomputed one; the mix and miss rate per hour add up. A rerun replaces the date."""
    stale_run = _publish(rt, -3)
    previous = _publish(rt, -1)
    current = _publish(rt, 0)
    labels = _labels(rt, 0)
    ids = labels.column("entity_id").to_pylist()
    y = dict(zip(ids, labels.column("label").to_pylist(), strict=True))
    scores = read_run(rt.catalog.get_run(previous).output_path or "", columns=["entity_id", "score"])
    by_id = dict(zip(scores.column("entity_id").to_pylist(), scores.column("score").to_pylist(), strict=True))
    rng = np.random.default_rng(5)
    rows: list[tuple[str, str | None, str, float, int]] = [
        (e, previous, "precomputed", by_id[e], 9) for e in ids[:3000]
    ]
    rows += [(e, stale_run, "precomputed", by_id[e], 9) for e in ids[3000:3500]]
    rows += [(e, None, "fallback", float(rng.random()), 10) for e in ids[3500:5000]]
    rows += [(e, None, "default", 0.05, 10) for e in ids[5000:5500]]
    _write_log(rt, 0, rows)

    report = monitor_date(rt, MODEL, day(0), clock=lambda: FIXED)
    assert (report.run_id, report.previous_run_id, report.monitored_at) == (current, previous, FIXED)
    assert report.model_version == rt.registry.production_version(MODEL, "primary")
    assert (report.drift_status, report.quality_status, report.serving_status) == ("measured",) * 3
    assert len(report.features) == 32 and report.n_drifted == 0
    assert all(f.psi is not None and f.psi < 0.1 for f in report.features)
    assert report.score_psi_previous is not None and report.score_psi_previous < 0.1
    assert report.score_psi_baseline is not None and report.score_psi_baseline < 0.25

    run = read_run(rt.catalog.get_run(current).output_path or "", columns=["entity_id", "score"])
    joined = labels.join(run, "entity_id", join_type="inner")
    yy, ss = joined.column("label").to_numpy(), joined.column("score").to_numpy().astype(np.float64)
    q = report.published_quality
    assert q is not None and q["rows"] == report.n_labels == 20_000 and report.n_labels_unscored == 0
    assert q["auc"] == pytest.approx(roc_auc_score(yy, ss), abs=1e-6)
    assert q["logloss"] == pytest.approx(log_loss(yy, np.clip(ss, 1e-15, 1 - 1e-15)), abs=1e-6)
    assert len(q["calibration"]["bins"]) == 10 and sum(b["count"] for b in q["calibration"]["bins"]) == 20_000
    assert 0 <= q["ece"] < 0.1

    served = report.served_quality
    assert served is not None and set(served) == {"precomputed", "fallback", "default"}
    assert served["precomputed"]["rows"] == 3500 and served["fallback"]["rows"] == 1500
    expected = roc_auc_score([y[e] for e, *_ in rows[:3500]], [r[3] for r in rows[:3500]])
    assert served["precomputed"]["auc"] == pytest.approx(expected, abs=1e-6)
    assert served["fallback"]["auc"] < served["precomputed"]["auc"] - 0.1

    mix = report.serving
    assert mix is not None and report.answers == 5500 and report.lost_to_trimming == 0
    assert mix["all"]["answers"] == 5500
    assert mix["all"]["precomputed"] == pytest.approx(3000 / 5500, abs=1e-6)
    assert mix["all"]["stale"] == pytest.approx(500 / 5500, abs=1e-6)
    assert mix["all"]["miss_rate"] == pytest.approx(2000 / 5500, abs=1e-6)
    assert mix["by_hour"]["09"] == {"answers": 3500, "precomputed": pytest.approx(3000 / 3500, abs=1e-6),
                                    "stale": pytest.approx(500 / 3500, abs=1e-6), "fallback": 0.0, "default": 0.0,
                                    "miss_rate": 0.0}  # fmt: skip
    assert mix["by_hour"]["10"]["miss_rate"] == 1.0

    again = monitor_date(rt, MODEL, day(0), clock=lambda: FIXED + dt.timedelta(hours=1))
    assert (_count(rt, "monitor_reports"), _count(rt, "monitor_features")) == (1, 32)
    [stored] = rt.catalog.monitor_reports(MODEL)
    assert stored == again and stored.monitored_at == FIXED + dt.timedelta(hours=1)


def test_labels_that_never_arrive_and_labels_of_unscored_entities(rt: Runtime) -> None:
    """Day 0 without a label partition: quality says "no labels yet" and drift and score drift are still measured.
    Once labels arrive with 500 entities the run never scored, they are counted, not joined."""
    _publish(rt, 0)
    directory = Path(str(fstore.label_partition_dir(rt.home, FS, day(0))))
    aside = directory.with_name("aside")
    directory.rename(aside)
    report = monitor_date(rt, MODEL, day(0))
    assert (report.quality_status, report.published_quality, report.n_labels) == ("no labels yet", None, None)
    assert report.drift_status == "measured" and report.serving_status == "no log" and report.serving is None
    aside.rename(directory)
    labels = _labels(rt, 0)
    extra = pa.table({"entity_id": [f"never-{i}" for i in range(500)], "label": pa.array([1] * 500, pa.int8())})
    _rewrite_labels(rt, 0, pa.concat_tables([labels, extra.cast(labels.schema)]))
    report = monitor_date(rt, MODEL, day(0))
    assert report.quality_status == "measured"
    assert (report.n_labels, report.n_labels_unscored) == (20_500, 500)
    assert report.published_quality is not None and report.published_quality["rows"] == 20_000


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (lambda t: t.set_column(1, "label", pa.array([None] * t.num_rows, pa.int8())), "null labels"),
        (lambda t: t.set_column(1, "label", pa.array([2] * t.num_rows, pa.int8())), "include 2"),
        (lambda t: pa.concat_tables([t, t.slice(0, 3)]), "more than once"),
        (lambda t: t.rename_columns(["entity_id", "target"]), "needs an entity id"),
    ],
)
def test_a_label_partition_that_breaks_its_contract_is_named_and_the_rest_is_measured(
    rt: Runtime, broken: object, message: str
) -> None:
    """The choice documented in ``jobs.monitor``: quality is ``error`` with a note naming the label partition and
    the problem; drift and score drift are still measured and stored."""
    _publish(rt, 0)
    _rewrite_labels(rt, 0, broken(_labels(rt, 0)))  # type: ignore[operator]
    report = monitor_date(rt, MODEL, day(0))
    assert report.quality_status == "error" and report.published_quality is None
    [note] = [n for n in report.notes if n.startswith("quality not measured")]
    assert f"dt={day(0)}" in note and message in note
    assert report.drift_status == "measured" and len(report.features) == 32
    assert len(rt.catalog.monitor_reports(MODEL)) == 1


def test_a_log_gap_is_reported(rt: Runtime) -> None:
    """A drain recorded 40 answers trimmed in a gap touching day 0: the report counts them and says so."""
    _publish(rt, 0)
    _write_log(rt, 0, [("e1", None, "default", 0.05, 1)])
    start = int(dt.datetime.combine(day(0), dt.time(), dt.UTC).timestamp() * 1000)
    gap = rt.home / LOG_DIR / f"dt={day(0)}" / f"gap-{start + 5000}-0.json"
    gap.write_text(json.dumps({"lost": 40, "after": f"{start - 5000}-0", "before": f"{start + 5000}-0"}))
    report = monitor_date(rt, MODEL, day(0))
    assert report.lost_to_trimming == 40 and report.answers == 1
    assert any("40 answers were trimmed" in n for n in report.notes)


def test_a_version_without_a_baseline_reports_drift_unavailable_not_zero(rt: Runtime) -> None:
    """A production version registered before baselines (no ``baseline_sha256``, no file) still scores; drift is
    ``unavailable`` with no feature rows and no counts (never zeros); a tampered baseline says so too."""
    version = rt.registry.require_production(MODEL, "primary")
    vdir = Path(str(rt.registry.kind_dir(MODEL, "primary") / version))
    original = (vdir / MANIFEST).read_text()
    shutil.copy(vdir / BASELINE, vdir.parent / "kept-baseline")
    (vdir / BASELINE).unlink()
    old = {k: v for k, v in json.loads(original).items() if k != "baseline_sha256"}
    (vdir / MANIFEST).write_text(json.dumps(old))
    _publish(rt, 0)
    report = monitor_date(rt, MODEL, day(0))
    assert (report.drift_status, report.n_drifted, report.features, report.score_psi_baseline) == (
        "unavailable", None, (), None)  # fmt: skip
    assert any("has no baseline" in n for n in report.notes)
    assert report.quality_status == "measured"

    (vdir / MANIFEST).write_text(original)
    (vdir / BASELINE).write_text((vdir.parent / "kept-baseline").read_text().replace("training", "trainingX"))
    report = monitor_date(rt, MODEL, day(0))
    assert report.drift_status == "unavailable" and any("does not match its manifest" in n for n in report.notes)


def test_no_committed_run_is_one_line_and_a_range_skips_it(rt: Runtime) -> None:
    with pytest.raises(UserError, match="no committed run for"):
        monitor_date(rt, MODEL, day(0))
    _publish(rt, 0)
    assert [r.partition_date for r in monitor_range(rt, MODEL, day(0), 2)] == [day(0)]


def _shift_feature(rt: Runtime, offset: int, feature: str, by: float) -> None:
    directory = fstore.partition_dir(rt.home, FS, day(offset))
    for part in sorted(directory.glob("part-*.parquet")):
        table = pq.read_table(part)
        i = table.column_names.index(feature)
        table = table.set_column(i, feature, pa.compute.add(table.column(feature), pa.scalar(by, pa.float32())))
        pq.write_table(table, part)


def _degraded_model(rt: Runtime, tmp_path: Path) -> Path:
    """A model of the same features that learned noise: a real registered version, much worse than production."""
    names = rt.config.model_features(MODEL)
    table = fstore.read_partition(rt.home, FS, day(-2), columns=names)
    x = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in names]).astype(np.float32)
    y = np.random.default_rng(0).integers(0, 2, len(x))
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, y, feature_names=names), 5)
    path = tmp_path / "degraded.ubj"
    booster.save_model(path)
    return path


def test_monitor_flags_a_drifted_feature_and_a_degraded_model(rt: Runtime, tmp_path: Path) -> None:
    """The proof: feature f05 shifted on day -1 is flagged there (and only it, only there); a degraded model scoring
    day 0 shows as a drop of the realized AUC and as score drift against the previous run. The degraded version
    was registered (``prescore register``) with a reference baseline of the newest partition."""
    _publish(rt, -2)
    healthy = monitor_date(rt, MODEL, day(-2))
    _shift_feature(rt, -1, "f05", 150.0)
    _publish(rt, -1, force=True)
    drifted = monitor_date(rt, MODEL, day(-1))
    assert [f.feature for f in drifted.features if f.drifted] == ["f05"] and drifted.n_drifted == 1
    assert any(n.startswith("feature f05 drifted: psi") for n in drifted.notes)
    assert healthy.n_drifted == 0

    registered = register_model(rt, MODEL, "primary", _degraded_model(rt, tmp_path), promote=True,
                                reference_date=day(-2))  # fmt: skip
    assert registered.baseline == {"kind": "reference", "dates": [day(-2).isoformat()], "rows": 20_000,
                                   "partition_rows": 20_000}  # fmt: skip
    _publish(rt, 0, force=True)
    degraded = monitor_date(rt, MODEL, day(0))
    assert degraded.model_version == registered.version and degraded.n_drifted == 0
    auc_before = healthy.published_quality["auc"]  # type: ignore[index]
    auc_now = degraded.published_quality["auc"]  # type: ignore[index]
    assert auc_before > 0.7 and auc_now < auc_before - 0.15
    assert degraded.score_psi_previous is not None and degraded.score_psi_previous > 0.25
    assert rt.registry.baseline(MODEL, "primary", registered.version)["source"]["kind"] == "reference"  # type: ignore[index]
    assert [r.partition_date for r in rt.catalog.monitor_reports(MODEL)] == [day(0), day(-1), day(-2)]
    assert asdict(degraded.features[0])["kind"] == "numeric"


def test_register_profiles_the_newest_partition_by_default_and_refuses_a_missing_reference(
    rt: Runtime, tmp_path: Path
) -> None:
    """``prescore register`` without ``--reference-date`` profiles the newest partition (the probe's); a reference
    date without a partition is refused before anything is registered."""
    path = _degraded_model(rt, tmp_path)
    before = rt.registry.versions(MODEL, "primary")
    with pytest.raises(RegistryError, match="--reference-date"):
        register_model(rt, MODEL, "primary", path, reference_date=day(5))
    assert rt.registry.versions(MODEL, "primary") == before
    report = register_model(rt, MODEL, "primary", path)
    assert report.baseline is not None and report.baseline["dates"] == [day(0).isoformat()]
    doc = rt.registry.baseline(MODEL, "primary", report.version)
    assert doc is not None and doc["score"]["rows"] == 20_000 and len(doc["score"]["quantiles"]) == 101
    assert set(doc["features"]) == set(rt.config.model_features(MODEL))
