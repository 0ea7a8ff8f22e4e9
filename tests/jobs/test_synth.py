"""The synthetic warehouse generator: layout, determinism, contract, population, learnable labels."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet
import pytest

from jobs.synth import SynthReport, new_entity_count, synth
from warehouse.datasets.contracts import validate_partition
from warehouse.datasets.features import (
    SUCCESS_MARKER,
    available_dates,
    available_label_dates,
    read_labels,
    read_partition,
)
from warehouse.errors import UnknownFeatureSetError, UserError
from warehouse.model_config import FeatureSetSpec, FeatureSpec, load_config
from warehouse.settings import DEFAULT_MODELS_FILE

FS = "customer_daily"
END = dt.date(2026, 11, 20)
SPEC = load_config(DEFAULT_MODELS_FILE).feature_set(FS)
ENTITIES = 8_000


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthReport]:
    """3 days × 8,000 entities in chunks of 2,500 rows and files of ~5,000 rows, made by the helper thread."""
    root = tmp_path_factory.mktemp("wh")
    report = synth(root, entities=ENTITIES, days=3, end_date=END, chunk_rows=2_500, rows_per_file=5_000, prefetch=True)
    return root, report


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_layout_success_markers_and_report(warehouse: tuple[Path, SynthReport]) -> None:
    """Each day: features and labels partitions with the same part files, _SUCCESS, no leftovers."""
    root, report = warehouse
    dates = [END - dt.timedelta(days=2), END - dt.timedelta(days=1), END]
    assert report.dates == dates
    assert available_dates(root, FS) == dates
    assert available_label_dates(root, FS) == dates
    assert (report.rows, report.days, report.new_entities_per_day) == (3 * ENTITIES, 3, 160)
    parts = ["part-00000.parquet", "part-00001.parquet"]
    for features, labels in zip(report.paths, report.label_paths, strict=True):
        assert sorted(p.name for p in features.iterdir()) == sorted([*parts, SUCCESS_MARKER])
        assert sorted(p.name for p in labels.iterdir()) == sorted([*parts, SUCCESS_MARKER])
    assert report.files == 12
    assert report.rows_per_s > 0 and report.bytes_written > 0
    assert not [p for p in (root / "features" / FS).iterdir() if "." in p.name]
    assert report.to_dict()["dates"][-1] == "2026-11-20"


def test_schema_matches_the_contract_and_validates(warehouse: tuple[Path, SynthReport]) -> None:
    root, _ = warehouse
    table = read_partition(root, FS, END)
    assert table.column_names == ["entity_id", "as_of", *SPEC.feature_names]
    assert table.schema.field("entity_id").type == pa.string()
    assert table.schema.field("as_of").type == pa.timestamp("us", tz="UTC")
    assert {table.schema.field(f).type for f in SPEC.feature_names} == {pa.float32()}
    assert table.column("as_of").unique().to_pylist() == [dt.datetime(2026, 11, 20, 23, 59, 59, tzinfo=dt.UTC)]
    assert pc.all(pc.equal(pc.utf8_length(table.column("entity_id")), 10)).as_py()
    assert table.column("entity_id").null_count == 0
    for day in available_dates(root, FS):
        assert validate_partition(root, FS, day, SPEC) == []
    nulls = {name: table.column(name).null_count for name in SPEC.feature_names}
    assert 0 < sum(1 for n in nulls.values() if n) <= 4
    assert max(nulls.values()) <= 0.01 * ENTITIES


def test_labels_align_with_features(warehouse: tuple[Path, SynthReport]) -> None:
    root, _ = warehouse
    labels = read_labels(root, FS, END)
    assert labels.schema == pa.schema([("entity_id", pa.string()), ("label", pa.int8())])
    assert labels.column("entity_id").equals(read_partition(root, FS, END, columns=["entity_id"]).column(0))
    rate = pc.mean(labels.column("label")).as_py()
    assert 0.1 < rate < 0.4


def test_stable_population_plus_new_entities_every_day(warehouse: tuple[Path, SynthReport]) -> None:
    """The same stable ids every day; each day's new ids (2 %) appear on no other day."""
    root, report = warehouse
    ids = [set(read_partition(root, FS, d, columns=["entity_id"]).column(0).to_pylist()) for d in report.dates]
    assert all(len(day) == ENTITIES for day in ids)
    stable = ids[0] & ids[1] & ids[2]
    assert len(stable) == ENTITIES - 160
    new = [day - stable for day in ids]
    assert [len(n) for n in new] == [160, 160, 160]
    assert not (new[0] & new[1]) and not (new[1] & new[2]) and not (new[0] & new[2])


def test_static_features_persist_and_dynamic_ones_move(warehouse: tuple[Path, SynthReport]) -> None:
    """Per-entity values persist day to day: f02 is static, f00 moves but stays correlated."""
    root, report = warehouse
    days = [read_partition(root, FS, d).slice(0, 1_000) for d in report.dates[:2]]
    assert days[0].column("entity_id").equals(days[1].column("entity_id"))
    assert days[0].column("f02").equals(days[1].column("f02"))
    a, b = (np.asarray(t.column("f00")) for t in days)
    assert 0.5 < np.corrcoef(a, b)[0, 1] < 0.99


def test_same_arguments_give_identical_files(tmp_path: Path, warehouse: tuple[Path, SynthReport]) -> None:
    """Determinism: same seed and arguments → byte-identical parquet files; another seed differs."""
    root, report = warehouse
    again = synth(tmp_path / "a", entities=ENTITIES, days=1, end_date=END, chunk_rows=2_500, rows_per_file=5_000)
    assert _digest(again.paths[0]) == _digest(report.paths[-1])
    assert _digest(again.label_paths[0]) == _digest(report.label_paths[-1])
    other = synth(tmp_path / "b", entities=ENTITIES, days=1, end_date=END, seed=8, chunk_rows=2_500)
    assert not read_partition(other_root := tmp_path / "b", FS, END).equals(read_partition(root, FS, END))
    assert other.paths[0].is_relative_to(other_root)


def test_values_do_not_depend_on_chunking(tmp_path: Path, warehouse: tuple[Path, SynthReport]) -> None:
    """One big chunk, no prefetch thread → the same rows as 2,500-row chunks in several files."""
    root, _ = warehouse
    synth(tmp_path, entities=ENTITIES, days=1, end_date=END)
    assert read_partition(tmp_path, FS, END).equals(read_partition(root, FS, END))
    assert read_labels(tmp_path, FS, END).equals(read_labels(root, FS, END))


def test_label_is_learnable_from_the_fallback_features(tmp_path: Path) -> None:
    """A logistic regression on f00–f07 trained on one day reaches AUC > 0.65 on the next day."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    synth(tmp_path, entities=20_000, days=2, end_date=END)
    fallback = [f"f{i:02d}" for i in range(8)]

    def xy(day: dt.date) -> tuple[np.ndarray, np.ndarray]:
        table = read_partition(tmp_path, FS, day, columns=fallback)
        x = np.column_stack([pc.fill_null(table.column(c), 0.0).to_numpy() for c in fallback])
        return (x - x.mean(axis=0)) / x.std(axis=0), read_labels(tmp_path, FS, day).column("label").to_numpy()

    x_train, y_train = xy(END - dt.timedelta(days=1))
    x_test, y_test = xy(END)
    model = LogisticRegression(max_iter=500).fit(x_train, y_train)
    assert roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]) > 0.65


def test_drift_moves_some_feature_means_slowly(tmp_path: Path) -> None:
    """Over 45 days the drifting features' means move by > 0.1 σ; a non-drifting one stays put."""

    def means(day: dt.date) -> dict[str, float]:
        synth(tmp_path, entities=20_000, days=1, end_date=day)
        table = read_partition(tmp_path, FS, day)
        return {c: float(pc.mean(table.column(c)).as_py() / pc.stddev(table.column(c)).as_py()) for c in SPEC.features}

    before, after = means(END - dt.timedelta(days=45)), means(END)
    assert max(abs(after[c] - before[c]) for c in ("f01", "f10", "f17", "f26")) > 0.1
    assert abs(after["f00"] - before["f00"]) < 0.05


def test_contract_ranges_and_dtypes_are_honoured(tmp_path: Path) -> None:
    """A custom contract with narrow bounds and integer/float64 features still validates."""
    spec = FeatureSetSpec(
        entity_column="customer",
        timestamp_column="ts",
        features={
            "ratio": FeatureSpec(dtype="float32", min=0.1, max=0.2),
            "count": FeatureSpec(dtype="int64", min=0, max=5),
            "amount": FeatureSpec(dtype="float64", min=-1, max=None, max_null_fraction=0.5),
            "score": FeatureSpec(dtype="int32"),
        },
    )
    synth(tmp_path, entities=2_000, days=1, end_date=END, feature_set="custom", spec=spec)
    assert validate_partition(tmp_path, "custom", END, spec) == []
    assert read_partition(tmp_path, "custom", END).column_names[:2] == ["customer", "ts"]


def test_rerun_replaces_partitions_and_reports_progress(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    synth(tmp_path, entities=300, days=2, end_date=END, seed=1)
    synth(tmp_path, entities=300, days=2, end_date=END, chunk_rows=100, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (600, 600) and len(seen) == 8
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    fresh = synth(tmp_path / "fresh", entities=300, days=1, end_date=END)
    assert read_partition(tmp_path, FS, END).equals(read_partition(tmp_path / "fresh", FS, END))
    assert fresh.rows == 300
    assert validate_partition(tmp_path, FS, END, SPEC) == []  # too small for nulls: never over the limit
    assert sorted(p.name for p in (tmp_path / "features" / FS).iterdir()) == ["dt=2026-11-19", "dt=2026-11-20"]


def test_new_entity_count() -> None:
    assert new_entity_count(8_000, 0.02) == 160
    assert new_entity_count(10, 0.02) == 1
    assert new_entity_count(1, 0.02) == 0
    assert new_entity_count(1_000, 0.0) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"entities": 0}, r"entities must be a positive integer, got 0"),
        ({"entities": -5}, r"entities must be a positive integer, got -5"),
        ({"days": 0}, r"days must be a positive integer, got 0"),
        ({"end_date": "2026-13-01"}, r"end_date: bad date '2026-13-01': expected YYYY-MM-DD"),
        ({"end_date": "tomorrow"}, r"end_date: bad date 'tomorrow'"),
        ({"chunk_rows": 0}, r"chunk_rows must be a positive integer"),
        ({"seed": -1}, r"seed must be a non-negative integer"),
        ({"new_entity_fraction": 0.9}, r"new_entity_fraction must be within"),
    ],
)
def test_bad_arguments_are_user_errors(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"entities": 10, "days": 1, "end_date": END, **kwargs}
    with pytest.raises(UserError, match=message):
        synth(tmp_path, **args)  # type: ignore[arg-type]
    assert not (tmp_path / "features").exists()


def test_unknown_feature_set(tmp_path: Path) -> None:
    with pytest.raises(UnknownFeatureSetError, match="unknown feature set 'nope'"):
        synth(tmp_path, entities=10, days=1, end_date=END, feature_set="nope")


def test_every_contract_dtype_is_synthesised_and_passes_its_contract(tmp_path: Path) -> None:
    """bool, int8 and int16 features next to floats: the right Arrow types, in their ranges, about half of a bool
    feature true, and the partition passes the contract the features were drawn from."""
    raw = {
        "feature_sets": {"mixed": {"features": {
            "a": {"dtype": "float32", "min": -5, "max": 5},
            "b": {"dtype": "int8"},
            "c": {"dtype": "int16", "min": 0, "max": 300},
            "d": {"dtype": "bool"},
            "e": {"dtype": "int64", "min": 0, "max": 100_000},
        }}},
        "models": {"m": {"feature_set": "mixed", "fallback_features": ["a", "d"], "default_score": 0.1,
                         "staleness": {"max_age_s": 100, "hard_max_age_s": 200}}},
    }  # fmt: skip
    import yaml

    (tmp_path / "m.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "m.yaml")
    spec = config.feature_set("mixed")
    end = dt.date(2026, 1, 10)
    synth(tmp_path / "home", entities=4000, days=1, end_date=end, feature_set="mixed", spec=spec, chunk_rows=2000)
    files = sorted((tmp_path / "home" / "features" / "mixed").glob("dt=*/*.parquet"))
    table = pa.concat_tables(pa.parquet.read_table(f) for f in files)
    types = {name: str(table.schema.field(name).type) for name in "abcde"}
    assert types == {"a": "float", "b": "int8", "c": "int16", "d": "bool", "e": "int64"}
    assert pc.min_max(table["c"]).as_py() == {"min": pc.min(table["c"]).as_py(), "max": pc.max(table["c"]).as_py()}
    assert pc.min(table["c"]).as_py() >= 0 and pc.max(table["c"]).as_py() <= 300
    assert 0.3 < pc.mean(table["d"].cast(pa.float64())).as_py() < 0.7
    assert validate_partition(tmp_path / "home", "mixed", end, spec) == []
