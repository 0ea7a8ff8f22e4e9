"""Arrow columns of every contract dtype → the float32 matrix XGBoost scores (nulls become NaN)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from jobs.feature_matrix import to_matrix


def test_every_dtype_with_nulls_becomes_float32_in_the_given_order() -> None:
    table = pa.table({
        "f": pa.array([1.5, None, -2.0], pa.float32()),
        "d": pa.array([0.25, 2.5, None], pa.float64()),
        "i8": pa.array([-128, None, 127], pa.int8()),
        "i16": pa.array([None, 300, -300], pa.int16()),
        "i64": pa.array([1, 2, None], pa.int64()),
        "b": pa.array([True, None, False], pa.bool_()),
    })  # fmt: skip
    order = ["b", "i8", "f", "i16", "i64", "d"]
    m = to_matrix(table, order)
    assert m.dtype == np.float32 and m.flags.c_contiguous and m.shape == (3, 6)
    expected = np.array(
        [
            [1, -128, 1.5, np.nan, 1, 0.25],
            [np.nan, np.nan, np.nan, 300, 2, 2.5],
            [0, 127, -2.0, -300, np.nan, np.nan],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(m, expected)  # NaN equals NaN in assert_array_equal


def test_category_features_become_their_code_in_the_model_order_and_unknowns_nan() -> None:
    import pytest

    colours = pa.array(["red", "teal", None, "blue", "purple"])
    table = pa.table({"c": colours, "d": colours.dictionary_encode(), "x": pa.array([1.0, 2, 3, 4, 5])})
    order = ["blue", "red", "teal"]  # the manifest's code order, not alphabetical by accident
    m = to_matrix(table, ["x", "c", "d"], {"c": order, "d": ["teal", "red", "blue"]})
    np.testing.assert_array_equal(m[:, 0], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(m[:, 1], [1, 2, np.nan, 0, np.nan])  # purple is unknown: missing
    np.testing.assert_array_equal(m[:, 2], [1, 0, np.nan, 2, np.nan])
    with pytest.raises(ValueError, match="feature 'c' is a string column: only category features"):
        to_matrix(table, ["c"])
