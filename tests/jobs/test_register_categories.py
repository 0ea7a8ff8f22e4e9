"""``prescore register`` with category features: the model's feature types and categories are checked against the
contract, and the version records each category feature's code order (on the penguins lake, a real dataset)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
import yaml
from typer.testing import CliRunner

from jobs.cli import app
from jobs.feature_matrix import to_matrix
from jobs.register import register_model
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.support import penguins
from warehouse.datasets.score_files import read_run
from warehouse.errors import ContractViolationError, RegistryError, UserError
from warehouse.settings import Settings

MODEL = penguins.MODEL


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return penguins.write_lake(tmp_path / "lake")


def _runtime(tmp_path: Path, models_file: Path, redis_url: str) -> Runtime:
    return Runtime.from_settings(
        Settings(home=tmp_path / "home", models_file=models_file, redis_url=redis_url, dask_local="threads")
    )


@pytest.fixture
def rt(tmp_path: Path, lake: Path, redis_url: str) -> Iterator[Runtime]:
    runtime = _runtime(tmp_path, penguins.models_file(tmp_path / "models.yaml", lake), redis_url)
    yield runtime
    runtime.close()


def _edited(rt: Runtime, tmp_path: Path, name: str, **feature: Any) -> Runtime:
    """A runtime whose models file changes one feature of the penguins contract."""
    raw = yaml.safe_load(rt.settings.models_file.read_text())
    spec = raw["feature_sets"][penguins.FEATURE_SET]["features"][name]
    for key, value in feature.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    path = tmp_path / f"edited-{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return _runtime(tmp_path, path, rt.redis_url)


def test_a_pandas_categorical_model_registers_with_its_code_order_and_scores_like_xgboost(
    rt: Runtime, tmp_path: Path
) -> None:
    booster = penguins.train(penguins.FEATURES)
    booster.save_model(tmp_path / "primary.ubj")
    report = register_model(rt, MODEL, "primary", tmp_path / "primary.ubj", promote=True)
    assert report.probe is not None and report.probe["rows"] > 0
    manifest = rt.registry.manifest(MODEL, "primary", report.version)
    assert manifest.categories == penguins.CATEGORICAL  # pandas sorted them; the model stored that order

    run = score_partition(rt, MODEL, penguins.day_of(2009), device="cpu")
    scores = read_run(run.output_path)
    expected = penguins.expected_scores(booster, 2009, penguins.FEATURES)
    got = dict(zip(scores.column("entity_id").to_pylist(), scores.column("score").to_pylist(), strict=True))
    assert set(got) == set(expected.index)
    np.testing.assert_allclose([got[e] for e in expected.index], expected.to_numpy(), rtol=1e-6)


def test_a_model_trained_on_codes_takes_the_contract_order(rt: Runtime, lake: Path, tmp_path: Path) -> None:
    """No categories stored in the model: code i is the contract's i-th category."""
    reversed_species = list(reversed(penguins.CATEGORICAL["species"]))
    coded = _edited(rt, tmp_path, "species", categories=reversed_species)
    table = pq.read_table(lake / f"study_day={penguins.day_of(2008):%Y%m%d}")
    order = {"species": reversed_species, "island": penguins.CATEGORICAL["island"]}
    x = to_matrix(table, penguins.FEATURES, order)
    y = (x[:, 0] == 0).astype(np.float32)  # "is a Gentoo" (code 0 in the reversed order)
    types = ["c", "c", "q", "q", "q", "q"]
    data = xgb.DMatrix(x, y, feature_names=penguins.FEATURES, feature_types=types, enable_categorical=True)
    xgb.train({"objective": "binary:logistic", "max_cat_to_onehot": 1}, data, 5).save_model(tmp_path / "codes.ubj")
    report = register_model(coded, MODEL, "primary", tmp_path / "codes.ubj", promote=True)
    assert coded.registry.manifest(MODEL, "primary", report.version).categories == order
    scores = read_run(score_partition(coded, MODEL, penguins.day_of(2008), device="cpu").output_path)
    gentoo = {e for e, s in zip(table["entity_id"].to_pylist(), table["species"].to_pylist(), strict=True)
              if s == "Gentoo"}  # fmt: skip
    high = {e for e, s in zip(scores["entity_id"].to_pylist(), scores["score"].to_pylist(), strict=True) if s > 0.5}
    assert high == gentoo
    coded.close()

    rt.close()
    nameless = _edited(rt, tmp_path, "species", categories=None)
    with pytest.raises(RegistryError, match=r"stores no categories for species .*list them in feature_sets.penguins"):
        register_model(nameless, MODEL, "primary", tmp_path / "codes.ubj")
    nameless.close()


@pytest.mark.parametrize(
    ("feature", "change", "message"),
    [
        ("species", {"dtype": "float64", "categories": None, "unknown": None},
         "treats species as categorical but feature_sets.penguins.features.species is dtype: float64"),
        ("island", {"categories": ["Biscoe", "Dream", "Torgersen", "Anvers"]},
         r"the categories of island differ: the model knows \[\] .* allows \['Anvers'\] that the model never saw"),
        ("island", {"categories": ["Biscoe", "Dream"]},
         r"the model knows \['Torgersen'\] that feature_sets.penguins.features.island.categories lacks"),
    ],
)  # fmt: skip
def test_types_and_categories_that_disagree_with_the_contract_are_refused(
    rt: Runtime, tmp_path: Path, feature: str, change: dict[str, Any], message: str
) -> None:
    penguins.train(penguins.FEATURES, rounds=5).save_model(tmp_path / "m.ubj")
    edited = _edited(rt, tmp_path, feature, **change)
    with pytest.raises(RegistryError, match=message):
        register_model(edited, MODEL, "primary", tmp_path / "m.ubj", promote=True)
    assert edited.registry.versions(MODEL, "primary") == []
    edited.close()


def test_a_numeric_model_for_a_category_contract_is_refused_by_the_cli_in_one_line(
    rt: Runtime, lake: Path, tmp_path: Path
) -> None:
    table = pq.read_table(lake / f"study_day={penguins.day_of(2008):%Y%m%d}")
    x = to_matrix(table, penguins.FEATURES, penguins.CATEGORICAL)  # codes, but trained as plain numbers
    data = xgb.DMatrix(x, (x[:, 2] > 44).astype(np.float32), feature_names=penguins.FEATURES)
    xgb.train({"objective": "binary:logistic"}, data, 3).save_model(tmp_path / "numeric.ubj")
    env = {"PRESCORE_HOME": str(rt.home), "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
           "PRESCORE_REDIS_URL": rt.redis_url}  # fmt: skip
    done = CliRunner().invoke(app, ["register", str(tmp_path / "numeric.ubj"), "--model", MODEL, "--role", "primary"],
                              env=env)  # fmt: skip
    assert done.exit_code == 1, done.output
    assert "treats species as a number but feature_sets.penguins.features.species is dtype: category" in done.output
    assert "Traceback" not in done.output


def test_unknown_categories_in_a_partition_under_each_policy(rt: Runtime, lake: Path, tmp_path: Path) -> None:
    """species rejects an unknown value (the run fails before scoring); island scores it as missing, within its
    null budget, and beyond that budget the partition breaks its contract."""
    penguins.train(penguins.FEATURES, rounds=5).save_model(tmp_path / "m.ubj")
    register_model(rt, MODEL, "primary", tmp_path / "m.ubj", promote=True)
    day = penguins.day_of(2009)
    where = lake / f"study_day={day:%Y%m%d}" / "part-0.parquet"
    original = pq.read_table(where)

    def rewrite(column: str, values: list[str | None]) -> None:
        import pyarrow as pa

        array = pa.array(values, pa.string())
        if column == "species":
            array = array.dictionary_encode()
        pq.write_table(original.set_column(original.schema.get_field_index(column), column, array), where)

    species = original["species"].to_pylist()
    rewrite("species", ["Emperor", *species[1:]])
    with pytest.raises(ContractViolationError, match=r"species unknown_category \(1 rows\)") as err:
        score_partition(rt, MODEL, day, device="cpu")
    assert "'Emperor'" in next(v.detail for v in err.value.violations if v.kind == "unknown_category")

    island = original["island"].to_pylist()
    rewrite("island", ["Anvers", *island[1:]])  # 1 of 120 rows: within max_null_fraction 0.05
    run = score_partition(rt, MODEL, day, device="cpu")
    assert run.rows_out == original.num_rows
    many = len(island) // 10
    rewrite("island", ["Anvers"] * many + island[many:])
    with pytest.raises(ContractViolationError, match=r"island too_many_nulls \(\d+ rows\)") as err:
        score_partition(rt, MODEL, day, device="cpu", force=True)
    assert "unknown categories ('Anvers') count as missing" in err.value.violations[0].detail


@pytest.mark.gpu
def test_gpu_scores_of_a_categorical_model_match_cpu(rt: Runtime, tmp_path: Path) -> None:
    """On a CUDA machine, the GPU path scores the same category codes as the CPU path (within 1e-5)."""
    from jobs.cluster import gpu_visible

    if not gpu_visible():
        pytest.skip("no CUDA GPU visible (cupy missing or no device)")
    penguins.train(penguins.FEATURES).save_model(tmp_path / "primary.ubj")
    register_model(rt, MODEL, "primary", tmp_path / "primary.ubj", promote=True)
    day = penguins.day_of(2009)
    cpu = read_run(score_partition(rt, MODEL, day, device="cpu").output_path).sort_by("entity_id")
    gpu_run = score_partition(rt, MODEL, day, device="cuda", force=True)
    gpu = read_run(gpu_run.output_path).sort_by("entity_id")
    assert gpu_run.device == "cuda"
    np.testing.assert_allclose(gpu["score"].to_numpy(), cpu["score"].to_numpy(), atol=1e-5)


def test_prescore_train_learns_category_features_in_the_contract_order(rt: Runtime, tmp_path: Path) -> None:
    """A lake feature set with labels under PRESCORE_HOME: ``prescore train`` encodes category features with the
    contract's ``categories`` and records that order in both versions; a contract without them is refused."""
    import pyarrow as pa

    from jobs.train import train_model
    from warehouse.datasets import features as fstore

    frame = penguins.birds()
    for year in penguins.YEARS:
        rows = frame[(frame["year"] == year) & frame["sex"].notna()]
        labels = pa.table({"entity_id": rows["entity_id"].tolist(),
                           "label": pa.array((rows["sex"] == "male").astype("int8").to_numpy())})  # fmt: skip
        with fstore.staged_partition(fstore.label_partition_dir(rt.home, penguins.FEATURE_SET,
                                                                penguins.day_of(year))) as staging:  # fmt: skip
            pq.write_table(labels, staging / "part-00000.parquet")
    raw = yaml.safe_load(rt.settings.models_file.read_text())
    raw["models"][MODEL]["training"] = {"train_days": 2, "max_train_rows": 1000, "primary_trees": 20,
                                        "primary_depth": 3, "fallback_trees": 10, "fallback_depth": 3}  # fmt: skip
    trained_here = tmp_path / "trained.yaml"
    trained_here.write_text(yaml.safe_dump(raw, sort_keys=False))
    trainer = _runtime(tmp_path, trained_here, rt.redis_url)
    try:
        report = train_model(trainer, MODEL)
        assert [r.promoted for r in report.results] == [True, True]
        assert report.results[0].metrics["auc"] > 0.8  # sex from measurements and species: a learnable target
        for result in report.results:
            manifest = trainer.registry.manifest(MODEL, result.kind, result.version)
            assert manifest.categories == {k: v for k, v in penguins.CATEGORICAL.items() if k in result.features}
        run = score_partition(trainer, MODEL, penguins.day_of(2009), device="cpu")
        assert run.rows_out == 120
    finally:
        trainer.close()
    raw["feature_sets"][penguins.FEATURE_SET]["features"]["island"].pop("categories")
    trained_here.write_text(yaml.safe_dump(raw, sort_keys=False))
    listless = _runtime(tmp_path, trained_here, rt.redis_url)
    try:
        with pytest.raises(UserError, match=r"prescore train needs feature_sets.penguins.features.island.categories"):
            train_model(listless, MODEL)
    finally:
        listless.close()
