"""Arrow tables → dense float32 matrices in a model's feature order (nulls become NaN, xgboost's missing; bool
features become 0 and 1, integer features their value)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_matrix(table: pa.Table, features: list[str]) -> np.ndarray:
    """A C-contiguous float32 (rows × features) matrix; columns in exactly the order of ``features``."""
    out = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        column = table.column(name)
        if not pa.types.is_floating(column.type):  # bool and integers: NaN (a null) needs a float column
            column = column.cast(pa.float64())
        if column.null_count:
            column = column.fill_null(float("nan"))
        out[:, j] = column.to_numpy()
    return out
