"""The UBJSON decoder reads xgboost's model files as xgboost's own JSON export reads them (floats as float32)."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from warehouse import ubjson


def _f32(value: Any) -> Any:
    if isinstance(value, float):
        return float(np.float32(value))
    if isinstance(value, list):
        return [_f32(v) for v in value]
    if isinstance(value, dict):
        return {k: _f32(v) for k, v in value.items()}
    return value


def _models() -> list[xgb.Booster]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    frame = pd.DataFrame({"a": x[:, 0], "c": pd.Categorical(rng.choice(["x", "y", "z"], 500))})
    return [
        xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, y, feature_names=list("abcd")), 5),
        xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(x, 1000 * y), 3),
        xgb.train(
            {"objective": "binary:logistic", "max_cat_to_onehot": 1}, xgb.DMatrix(frame, y, enable_categorical=True), 4
        ),
    ]


@pytest.mark.parametrize("index", range(3), ids=["binary", "regression", "categorical"])
def test_a_model_file_decodes_to_xgboosts_json(index: int) -> None:
    booster = _models()[index]
    decoded = ubjson.loads(bytes(booster.save_raw("ubj")))
    assert _f32(decoded) == _f32(json.loads(booster.save_raw("json")))


def test_untyped_containers_strings_and_constants() -> None:
    doc = (b"{" + b"i\x01a" + b"[" + b"T" + b"F" + b"Z" + b"N" + b"U\xff" + b"I\x01\x00" + b"D" + struct.pack(">d", 0.1)
           + b"Si\x02h\xc3" + b"]" + b"i\x01b" + b"[$i#i\x03\x01\xff\x02" + b"i\x01c" + b"C" + b"q" + b"}")  # fmt: skip
    with pytest.raises(ValueError, match="not a UBJSON model"):  # 'h\xc3' is cut UTF-8
        ubjson.loads(doc)
    doc = doc.replace(b"Si\x02h\xc3", b"Si\x02h\x69")
    assert ubjson.loads(doc) == {"a": [True, False, None, 255, 256, 0.1, "hi"], "b": [1, -1, 2], "c": "q"}


@pytest.mark.parametrize(
    ("data", "what"),
    [(b"", "unexpected end"), (b"[$l#i\x02\x00\x00", "unexpected end"), (b"{i\x01a}", "unknown type '}'"),
     (b"Ti", "trailing bytes"), (b"[$l]", "a typed container without a count"), (b"X", "unknown type 'X'")],
)  # fmt: skip
def test_malformed_input_names_the_offset(data: bytes, what: str) -> None:
    with pytest.raises(ValueError, match=f"not a UBJSON model: {what} at byte \\d+"):
        ubjson.loads(data)


def test_value_at_decodes_one_field_in_place() -> None:
    data = bytes(_models()[0].save_raw("ubj"))
    at = data.rfind(b"\x07version") + len(b"\x07version")
    assert ubjson.value_at(data, at) == [int(p) for p in xgb.__version__.split(".")[:3]]
    with pytest.raises(ValueError, match="not a UBJSON model"):
        ubjson.value_at(data, len(data))
