"""A feature set that points at an existing lake outside ``PRESCORE_HOME`` (path template, another date format,
int64 entity ids, no ``_SUCCESS`` markers): readiness, validation, scoring, publishing and backfill dates read there,
and nothing is copied."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
import yaml

from jobs.backfill import backfill
from jobs.feature_matrix import to_matrix
from jobs.publish import publish_run
from jobs.register import register_model
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.jobs.conftest import END
from warehouse.datasets import features as fstore
from warehouse.datasets.contracts import validate_partition
from warehouse.datasets.score_files import read_run
from warehouse.errors import ContractViolationError, PartitionNotFoundError, UserError
from warehouse.settings import Settings
from warehouse.store import ScoreReader

MODEL = "churn"
DAYS = [END - dt.timedelta(days=1), END]


@pytest.fixture
def lake(rt: Runtime, tmp_path: Path) -> tuple[Runtime, Path]:
    """The synthetic partitions of two days rewritten as a lake: ``customers/ds=YYYYMMDD/data.parquet``, int64 ids,
    no markers; a models file whose feature set points there and whose model is only registered."""
    base = tmp_path / "lake" / "customers"
    fs_name = rt.config.model(MODEL).feature_set
    for day in DAYS:
        table = fstore.read_partition(rt.home, fs_name, day)
        ids = pc.cast(table.column("entity_id"), pa.int64())
        table = table.set_column(table.schema.get_field_index("entity_id"), "entity_id", ids)
        (base / f"ds={day:%Y%m%d}").mkdir(parents=True)
        pq.write_table(table, base / f"ds={day:%Y%m%d}" / "data.parquet")
    (base / "ds=notadate").mkdir()  # other directories in the lake are ignored
    raw = yaml.safe_load(rt.settings.models_file.read_text())
    raw["feature_sets"][fs_name].update(path=f"{base}/ds={{date}}/", date_format="%Y%m%d", success_marker=False,
                                        entity_dtype="int64")  # fmt: skip
    raw["models"][MODEL]["training"] = "external"
    models_file = tmp_path / "lake-models.yaml"
    models_file.write_text(yaml.safe_dump(raw))
    runtime = Runtime.from_settings(Settings(home=tmp_path / "lake-home", models_file=models_file,
                                             redis_url=rt.redis_url, dask_local="threads"))  # fmt: skip
    yield runtime, base
    runtime.close()


def _external_model(rt: Runtime, base: Path, path: Path) -> xgb.Booster:
    cols = rt.config.model_features(MODEL)
    table = pq.read_table(base / f"ds={DAYS[0]:%Y%m%d}" / "data.parquet")
    x = to_matrix(table, cols)
    y = (x[:, 0] > np.median(x[:, 0])).astype(np.float32)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, y, feature_names=cols), 5)
    booster.save_model(path)
    return booster


def test_a_lake_feature_set_is_read_in_place_scored_and_served(lake: tuple[Runtime, Path], tmp_path: Path) -> None:
    rt, base = lake
    fs_name = rt.config.model(MODEL).feature_set
    fs = rt.config.feature_set(fs_name)
    assert fstore.available_dates(rt.home, fs_name, fs) == DAYS
    assert validate_partition(rt.home, fs_name, END, fs) == []
    booster = _external_model(rt, base, tmp_path / "model.ubj")
    register_model(rt, MODEL, "primary", tmp_path / "model.ubj", promote=True)
    run = score_partition(rt, MODEL, END, device="cpu")
    assert run.rows_out == pq.read_metadata(base / f"ds={END:%Y%m%d}" / "data.parquet").num_rows
    assert not (rt.home / "features").exists()  # nothing was copied into PRESCORE_HOME

    scores = read_run(run.output_path)
    lake_rows = pq.read_table(base / f"ds={END:%Y%m%d}" / "data.parquet")
    assert scores.column("entity_id").type == pa.string()
    assert scores.column("entity_id").to_pylist() == [str(i) for i in lake_rows.column("entity_id").to_pylist()]
    expected = booster.inplace_predict(to_matrix(lake_rows, rt.config.model_features(MODEL))).astype(np.float32)
    np.testing.assert_array_equal(scores.column("score").to_numpy(), expected)

    publish_run(rt, MODEL, run.run_id)
    some = str(lake_rows.column("entity_id")[7].as_py())
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        hit = reader.get(MODEL, some)
    finally:
        reader.close()
    assert hit is not None and hit.score == pytest.approx(float(expected[7]))


def test_lake_faults_name_the_lake_path(lake: tuple[Runtime, Path], tmp_path: Path) -> None:
    rt, base = lake
    fs_name = rt.config.model(MODEL).feature_set
    fs = rt.config.feature_set(fs_name)
    missing_day = END + dt.timedelta(days=1)
    with pytest.raises(PartitionNotFoundError, match=f"{base}/ds={missing_day:%Y%m%d} does not exist"):
        fstore.partition_files(rt.home, fs_name, missing_day, fs)
    (base / f"ds={missing_day:%Y%m%d}").mkdir()  # created but not written yet: not a partition
    assert fstore.available_dates(rt.home, fs_name, fs) == DAYS
    with pytest.raises(PartitionNotFoundError, match="holds no Parquet file yet"):
        fstore.partition_files(rt.home, fs_name, missing_day, fs)
    with pytest.raises(UserError, match=f"no feature partition for 1 of 3 dates of customer_daily: {missing_day}"):
        backfill(rt, MODEL, DAYS[0], missing_day, publish="none")

    bad = pq.read_table(base / f"ds={END:%Y%m%d}" / "data.parquet")
    bad = bad.set_column(bad.schema.get_field_index("entity_id"), "entity_id", pc.cast(bad["entity_id"], pa.string()))
    pq.write_table(bad, base / f"ds={END:%Y%m%d}" / "data.parquet")
    from warehouse.datasets.contracts import require_valid

    with pytest.raises(ContractViolationError, match=f"partition {base}/ds={END:%Y%m%d} breaks its contract") as err:
        require_valid(rt.home, fs_name, END, fs)
    assert [v.detail for v in err.value.violations if v.kind == "wrong_dtype"] == [
        "entity_id is string, contract says int64"
    ]

    gone = yaml.safe_load(rt.settings.models_file.read_text())
    gone["feature_sets"][fs_name]["path"] = f"{tmp_path}/no-such-lake/ds={{date}}/"
    (tmp_path / "gone.yaml").write_text(yaml.safe_dump(gone))
    from warehouse.model_config import load_config

    nowhere = load_config(tmp_path / "gone.yaml").feature_set(fs_name)
    assert fstore.available_dates(rt.home, fs_name, nowhere) == []
    with pytest.raises(PartitionNotFoundError, match="no-such-lake"):
        fstore.partition_files(rt.home, fs_name, END, nowhere)


def test_the_dag_tasks_wait_for_and_validate_the_lake_partition(
    lake: tuple[Runtime, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs import orchestration

    rt, base = lake
    monkeypatch.setenv("PRESCORE_HOME", str(rt.home))
    monkeypatch.setenv("PRESCORE_MODELS_FILE", str(rt.settings.models_file))
    monkeypatch.setenv("PRESCORE_REDIS_URL", rt.redis_url)
    assert orchestration.feature_partition_ready(MODEL, END.isoformat())
    assert not orchestration.feature_partition_ready(MODEL, (END + dt.timedelta(days=1)).isoformat())
    checked = orchestration.validate_features(MODEL, END.isoformat())
    assert checked["partition"] == f"{base}/ds={END:%Y%m%d}" and checked["files"] == 1


def test_synth_refuses_a_lake_feature_set(lake: tuple[Runtime, Path]) -> None:
    from jobs.synth import synth

    rt, base = lake
    fs_name = rt.config.model(MODEL).feature_set
    with pytest.raises(UserError, match=f"is read from {base}/ds={{date}}/: prescore never writes there"):
        synth(rt.home, entities=10, days=1, end_date=END, feature_set=fs_name, spec=rt.config.feature_set(fs_name))
    assert not (rt.home / "features").exists()
