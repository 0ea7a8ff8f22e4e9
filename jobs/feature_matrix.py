"""Arrow tables → dense float32 matrices in a model's feature order (nulls become NaN, xgboost's missing; bool
features become 0 and 1, integer features their value, category features their code).

A category feature's code is its value's position in the model version's category list (``Manifest.categories``,
the order the model was trained with); a value outside the list, like a null, becomes NaN. The same matrix goes
to the CPU and the GPU predictor, so both see the same codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from warehouse.datasets.contracts import is_category_type


def category_codes(column: pa.ChunkedArray | pa.Array, categories: Sequence[str]) -> pa.ChunkedArray | pa.Array:
    """Each value's index in ``categories`` as float64; nulls and values outside ``categories`` become NaN."""
    if not is_category_type(column.type):
        raise ValueError(f"a category feature must be a string column, not {column.type}")
    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string())
    codes = pc.index_in(column, value_set=pa.array(list(categories), column.type)).cast(pa.float64())
    return codes.fill_null(float("nan"))


def to_matrix(
    table: pa.Table, features: list[str], categories: Mapping[str, Sequence[str]] | None = None
) -> np.ndarray:
    """A C-contiguous float32 (rows × features) matrix; columns in exactly the order of ``features``.

    ``categories`` maps each category feature to its code order; every other feature must be numeric or bool.
    """
    categories = categories or {}
    out = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        column = table.column(name)
        if name in categories:
            column = category_codes(column, categories[name])
        elif not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)
                  or pa.types.is_boolean(column.type)):  # fmt: skip
            raise ValueError(
                f"feature {name!r} is a {column.type} column: only category features (dtype: category in the "
                "contract, with the model's categories) may hold text"
            )
        elif not pa.types.is_floating(column.type):  # bool and integers: NaN (a null) needs a float column
            column = column.cast(pa.float64())
        if column.null_count:
            column = column.fill_null(float("nan"))
        out[:, j] = column.to_numpy()
    return out
