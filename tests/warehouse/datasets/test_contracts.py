"""Feature-set contracts: every violation is reported with its column and row count."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warehouse.datasets.contracts import Violation, require_valid, summarize, validate, validate_partition
from warehouse.datasets.features import partition_dir, write_partition_atomically
from warehouse.errors import (
    ContractViolationError,
    PartitionNotFoundError,
    PartitionUnreadableError,
    UnknownFeatureSetError,
)
from warehouse.model_config import FeatureSetSpec, FeatureSpec, load_config
from warehouse.settings import DEFAULT_MODELS_FILE

DAY = dt.date(2026, 11, 20)
FS = "customer_daily"
SPEC = FeatureSetSpec(
    features={
        "f00": FeatureSpec(dtype="float32", min=-10, max=10, max_null_fraction=0.1),
        "f01": FeatureSpec(dtype="float32", min=0, max=1, max_null_fraction=0.0),
        "f02": FeatureSpec(dtype="int64", min=0, max=100),
    }
)
ROWS = 100


def _columns(rows: int = ROWS, first_id: int = 0) -> dict[str, pa.Array]:
    rng = np.random.default_rng(0)
    return {
        "entity_id": pa.array([f"{i:010d}" for i in range(first_id, first_id + rows)]),
        "as_of": pa.array([dt.datetime(2026, 11, 20, 23, 59, 59, tzinfo=dt.UTC)] * rows, pa.timestamp("us", tz="UTC")),
        "f00": pa.array(rng.uniform(-10, 10, rows).astype(np.float32)),
        "f01": pa.array(rng.uniform(0, 1, rows).astype(np.float32)),
        "f02": pa.array(rng.integers(0, 101, rows), pa.int64()),
    }


def _table(**replace: pa.Array | None) -> pa.Table:
    cols = _columns()
    for name, array in replace.items():
        if array is None:
            del cols[name]
        else:
            cols[name] = array
    return pa.table(cols)


def _kinds(violations: list[Violation]) -> set[tuple[str, str, int]]:
    return {(v.column, v.kind, v.count) for v in violations}


def test_conforming_table_has_no_violations() -> None:
    assert validate(_table(), SPEC) == []


def test_extra_columns_and_column_order_are_allowed() -> None:
    """Columns outside the contract are ignored, and readers select by name so order is free."""
    table = _table(comment=pa.array(["x"] * ROWS))
    assert validate(table.select(list(reversed(table.column_names))), SPEC) == []


def test_missing_column() -> None:
    assert _kinds(validate(_table(f01=None), SPEC)) == {("f01", "missing_column", ROWS)}


def test_wrong_dtype() -> None:
    """float64 is not float32, an integer id is not a string, a naive timestamp is not UTC."""
    table = _table(
        f00=pa.array(np.zeros(ROWS)),
        entity_id=pa.array(np.arange(ROWS)),
        as_of=pa.array([dt.datetime(2026, 11, 20)] * ROWS, pa.timestamp("us")),
    )
    assert _kinds(validate(table, SPEC)) == {
        ("f00", "wrong_dtype", ROWS),
        ("entity_id", "wrong_dtype", ROWS),
        ("as_of", "wrong_dtype", ROWS),
    }


def test_values_out_of_range_are_counted_with_nan_and_inf() -> None:
    values = np.zeros(ROWS, dtype=np.float32)
    values[:5] = 11.0
    values[5] = np.nan
    values[6] = -np.inf
    ints = np.arange(ROWS)
    ints[0] = -1
    [f00, f02] = sorted(validate(_table(f00=pa.array(values), f02=pa.array(ints)), SPEC), key=lambda v: v.column)
    assert (f00.column, f00.kind, f00.count) == ("f00", "out_of_range", 7)
    assert "2 NaN/inf" in f00.detail and "[-10, 10]" in f00.detail
    assert (f02.kind, f02.count) == ("out_of_range", 1)


def test_nulls_are_not_range_violations_but_are_limited() -> None:
    """f00 allows 10 % nulls (11 % breaks it); f01 allows none."""
    f00 = pa.array([None] * 11 + [1.0] * (ROWS - 11), pa.float32())
    f01 = pa.array([None] + [0.5] * (ROWS - 1), pa.float32())
    violations = validate(_table(f00=f00, f01=f01), SPEC)
    assert _kinds(violations) == {("f00", "too_many_nulls", 11), ("f01", "too_many_nulls", 1)}
    assert validate(_table(f00=pa.array([None] * 10 + [1.0] * (ROWS - 10), pa.float32())), SPEC) == []


def test_null_and_duplicate_entities() -> None:
    ids = [f"{i:010d}" for i in range(ROWS)]
    ids[1] = ids[0]
    ids[2] = ids[0]
    ids[3] = None  # type: ignore[call-overload]
    assert _kinds(validate(_table(entity_id=pa.array(ids)), SPEC)) == {
        ("entity_id", "duplicate_entity", 2),
        ("entity_id", "null_entity", 1),
    }


def test_every_violation_is_reported_at_once() -> None:
    """Three different problems → three violations, each with its count, in one call."""
    f00 = np.zeros(ROWS, dtype=np.float32)
    f00[:12] = 1e6
    f01 = pa.array([None] * 3 + [0.5] * (ROWS - 3), pa.float32())
    violations = validate(_table(f00=pa.array(f00), f01=f01, f02=None), SPEC)
    assert _kinds(violations) == {
        ("f00", "out_of_range", 12),
        ("f01", "too_many_nulls", 3),
        ("f02", "missing_column", ROWS),
    }
    assert summarize(violations).count(",") == 2


def _write(root: Path, *tables: pa.Table) -> None:
    def write(directory: Path) -> None:
        for i, table in enumerate(tables):
            pq.write_table(table, directory / f"part-{i:05d}.parquet", row_group_size=40)

    write_partition_atomically(partition_dir(root, FS, DAY), write)


def test_validate_partition_streams_files_and_row_groups(tmp_path: Path) -> None:
    """Counts add up over files and row groups; a duplicate id across two files is found."""
    first = pa.table(_columns())
    bad = _columns(first_id=ROWS - 1)  # its first id repeats the last id of the first file
    bad["f00"] = pa.array(np.full(ROWS, 50, dtype=np.float32))
    _write(tmp_path, first, pa.table(bad))
    assert _kinds(validate_partition(tmp_path, FS, DAY, SPEC)) == {
        ("f00", "out_of_range", ROWS),
        ("entity_id", "duplicate_entity", 1),
    }


def test_large_string_ids_in_one_file_are_fine(tmp_path: Path) -> None:
    second = _columns(first_id=ROWS - 1)
    second["entity_id"] = second["entity_id"].cast(pa.large_string())
    _write(tmp_path, pa.table(_columns()), pa.table(second))
    assert _kinds(validate_partition(tmp_path, FS, DAY, SPEC)) == {("entity_id", "duplicate_entity", 1)}


def test_schema_problem_in_one_file_counts_that_files_rows(tmp_path: Path) -> None:
    second = _columns(first_id=ROWS)
    del second["f01"]
    _write(tmp_path, pa.table(_columns()), pa.table(second))
    assert _kinds(validate_partition(tmp_path, FS, DAY, SPEC)) == {("f01", "missing_column", ROWS)}


def test_require_valid_raises_with_a_summary_and_the_violations(tmp_path: Path) -> None:
    f01 = np.full(ROWS, 0.5, dtype=np.float32)
    f01[:12] = 3
    _write(tmp_path, _table(f01=pa.array(f01), f02=None))
    with pytest.raises(ContractViolationError) as info:
        require_valid(tmp_path, FS, DAY, SPEC)
    message = str(info.value)
    assert message.startswith("partition features/customer_daily/dt=2026-11-20 breaks its contract: ")
    assert "f01 out_of_range (12 rows)" in message and "f02 missing_column" in message
    assert _kinds(info.value.violations) == {("f01", "out_of_range", 12), ("f02", "missing_column", ROWS)}  # type: ignore[arg-type]


def test_require_valid_passes_a_conforming_partition(tmp_path: Path) -> None:
    _write(tmp_path, _table())
    require_valid(tmp_path, FS, DAY, SPEC)


def test_missing_partition_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PartitionNotFoundError, match=r"features/customer_daily/dt=2026-11-20"):
        validate_partition(tmp_path, FS, DAY, SPEC)


@pytest.mark.parametrize("content", [b"", b"PAR1 truncated, then overwritten by something else"])
def test_an_unreadable_file_of_a_complete_partition_names_the_file(tmp_path: Path, content: bytes) -> None:
    """A file of a complete partition (``_SUCCESS`` present) that is empty or not Parquet is a
    ``PartitionUnreadableError`` naming the file and the fix, not a pyarrow error."""
    _write(tmp_path, _table())
    part = sorted(partition_dir(tmp_path, FS, DAY).glob("*.parquet"))[0]
    part.write_bytes(content)
    with pytest.raises(PartitionUnreadableError) as info:
        require_valid(tmp_path, FS, DAY, SPEC)
    message = str(info.value)
    assert f"feature file {part} is not readable Parquet" in message
    assert "rewrite the partition features/customer_daily/dt=2026-11-20" in message


def test_unknown_feature_set_is_a_user_error() -> None:
    config = load_config(DEFAULT_MODELS_FILE)
    with pytest.raises(UnknownFeatureSetError, match=r"unknown feature set 'nope'.*customer_daily"):
        config.feature_set("nope")


def test_bool_and_small_int_features_are_checked_like_the_others() -> None:
    from warehouse.model_config import FeatureSetSpec, FeatureSpec

    spec = FeatureSetSpec(features={
        "flag": FeatureSpec(dtype="bool", max_null_fraction=0.5),
        "small": FeatureSpec(dtype="int8", min=0, max=10),
        "mid": FeatureSpec(dtype="int16"),
    })  # fmt: skip
    ts = pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * 4, pa.timestamp("us", tz="UTC"))
    good = pa.table({"entity_id": ["a", "b", "c", "d"], "as_of": ts,
                     "flag": pa.array([True, None, False, True]), "small": pa.array([0, 3, 10, 5], pa.int8()),
                     "mid": pa.array([-3000, 0, 1, 2], pa.int16())})  # fmt: skip
    assert validate(good, spec) == []
    bad = good.set_column(3, "small", pa.array([0, 11, 10, -1], pa.int8()))
    bad = bad.set_column(4, "mid", pa.array([1, 2, 3, 4], pa.int32()))
    bad = bad.set_column(2, "flag", pa.array([None, None, None, True], pa.bool_()))
    kinds = {(v.column, v.kind): v.count for v in validate(bad, spec)}
    assert kinds == {("small", "out_of_range"): 2, ("mid", "wrong_dtype"): 4, ("flag", "too_many_nulls"): 3}


def test_a_bool_feature_takes_no_range(tmp_path: Path) -> None:
    from warehouse.model_config import FeatureSpec

    with pytest.raises(ValueError, match="a bool feature takes no min or max"):
        FeatureSpec(dtype="bool", max=1)


CATEGORY_SPEC = FeatureSetSpec(
    features={
        "colour": FeatureSpec(dtype="category", categories=["red", "green", "blue"], unknown="reject"),
        "shape": FeatureSpec(dtype="category", categories=["round", "square"], max_null_fraction=0.2),
        "free": FeatureSpec(dtype="category", max_null_fraction=0.5),  # no list: any string
    }
)


def _category_table(colour: list[str | None], shape: list[str | None], free: pa.Array | None = None) -> pa.Table:
    rows = len(colour)
    return pa.table({
        "entity_id": pa.array([f"{i:010d}" for i in range(rows)]),
        "as_of": pa.array([dt.datetime(2026, 11, 20, tzinfo=dt.UTC)] * rows, pa.timestamp("us", tz="UTC")),
        "colour": pa.array(colour).dictionary_encode(),
        "shape": pa.array(shape, pa.large_string()),
        "free": free if free is not None else pa.array(["anything"] * rows),
    })  # fmt: skip


def test_category_columns_conform_as_strings_or_dictionaries() -> None:
    table = _category_table(["red", "blue", "green", "red", "red"], ["round", "square", None, "round", "round"])
    assert validate(table, CATEGORY_SPEC) == []


def test_unknown_categories_are_violations_under_reject_and_missing_values_under_missing() -> None:
    colour = ["red", "mauve", "blue", "mauve", "ochre", None, "red", "red", "red", "red"]
    shape = ["round", "oval", "oval", "square", "round", "round", "round", "round", "round", "round"]
    found = validate(_category_table(colour, shape), CATEGORY_SPEC)
    assert _kinds(found) == {("colour", "unknown_category", 3), ("colour", "too_many_nulls", 1)}
    unknown = next(v for v in found if v.kind == "unknown_category")
    assert "'mauve', 'ochre'" in unknown.detail and "allowed: ['red', 'green', 'blue']" in unknown.detail
    # shape: 2 unknown ("oval") under unknown: missing count as nulls: 2/10 = 20% is allowed, 3/10 is not
    shape[4] = None
    too_many = next(v for v in validate(_category_table(colour, shape), CATEGORY_SPEC) if v.column == "shape")
    assert (too_many.kind, too_many.count) == ("too_many_nulls", 3)
    assert "2 unknown categories ('oval') count as missing" in too_many.detail


def test_a_category_feature_stored_as_numbers_is_a_wrong_dtype() -> None:
    table = _category_table(["red"] * 4, ["round"] * 4, free=pa.array([1, 2, 3, 4]))
    found = validate(table, CATEGORY_SPEC)
    assert _kinds(found) == {("free", "wrong_dtype", 4)}
    assert found[0].detail == "free is int64, contract says category (strings)"


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"dtype": "category", "min": 0}, "a category feature takes no min or max"),
        ({"dtype": "float32", "categories": ["a"]}, "categories and unknown apply to dtype category only"),
        ({"dtype": "int32", "unknown": "reject"}, "categories and unknown apply to dtype category only"),
        ({"dtype": "category", "categories": ["a", "b", "a"]}, r"categories lists \['a'\] more than once"),
        ({"dtype": "category", "categories": ["a", ""]}, "categories holds an empty string"),
        ({"dtype": "category", "unknown": "ignore"}, "unknown"),
    ],
)
def test_category_contract_mistakes_are_refused(feature: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        FeatureSpec.model_validate(feature)
