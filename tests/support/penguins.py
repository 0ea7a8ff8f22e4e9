"""A real public dataset as a lake: the Palmer penguins (the ``palmerpenguins`` package, 344 birds, two categorical
features) written as daily Parquet partitions outside ``PRESCORE_HOME``, and models trained on it with plain
xgboost — the proof that a team's own data and model go through prescore unchanged.

Each study year is one daily partition (2007 → ``END - 2``, 2008 → ``END - 1``, 2009 → ``END``); an entity is one
bird (``p000``…). ``species`` is stored as a dictionary column, ``island`` as plain strings; the measurements are
float64 with the dataset's own gaps as nulls. The model predicts ``sex == "male"``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb
import yaml
from palmerpenguins import load_penguins

from tests.support.clock import END

MODEL = "penguin_sex"
FEATURE_SET = "penguins"
NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CATEGORICAL = {"species": ["Adelie", "Chinstrap", "Gentoo"], "island": ["Biscoe", "Dream", "Torgersen"]}
FEATURES = ["species", "island", *NUMERIC]
FALLBACK = ["species", "island", "flipper_length_mm"]
YEARS = {2007: -2, 2008: -1, 2009: 0}


def day_of(year: int) -> dt.date:
    return END + dt.timedelta(days=YEARS[year])


def birds() -> pd.DataFrame:
    frame = load_penguins()
    frame.insert(0, "entity_id", [f"p{i:03d}" for i in range(len(frame))])
    return frame


def partition_table(frame: pd.DataFrame, day: dt.date) -> pa.Table:
    rows = len(frame)
    stamp = dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)
    return pa.table({
        "entity_id": pa.array(frame["entity_id"].tolist(), pa.string()),
        "as_of": pa.array([stamp] * rows, pa.timestamp("us", tz="UTC")),
        "species": pa.array(frame["species"].tolist(), pa.string()).dictionary_encode(),
        "island": pa.array(frame["island"].tolist(), pa.string()),
        **{c: pa.array(frame[c].to_numpy(), pa.float64(), from_pandas=True) for c in NUMERIC},
    })  # fmt: skip


def write_lake(root: Path) -> Path:
    """``root/penguins/study_day=YYYYMMDD/part-0.parquet`` for each year; returns the table's directory."""
    base = root / "penguins"
    frame = birds()
    for year in YEARS:
        where = base / f"study_day={day_of(year):%Y%m%d}"
        where.mkdir(parents=True)
        pq.write_table(partition_table(frame[frame["year"] == year], day_of(year)), where / "part-0.parquet")
    return base


def models_file(path: Path, lake: Path) -> Path:
    """A models file whose feature set reads the lake (no ``_SUCCESS`` markers) and whose model is external."""
    numeric = {c: {"dtype": "float64", "min": 0, "max": 10_000, "max_null_fraction": 0.05} for c in NUMERIC}
    raw: dict[str, Any] = {
        "feature_sets": {
            FEATURE_SET: {
                "path": f"{lake}/study_day={{date}}/",
                "date_format": "%Y%m%d",
                "success_marker": False,
                "features": {
                    "species": {"dtype": "category", "categories": CATEGORICAL["species"], "unknown": "reject"},
                    "island": {"dtype": "category", "categories": CATEGORICAL["island"], "max_null_fraction": 0.05},
                    **numeric,
                },
            }
        },
        "models": {
            MODEL: {
                "feature_set": FEATURE_SET,
                "features": FEATURES,
                "fallback_features": FALLBACK,
                "schedule": "0 2 * * *",
                "staleness": {"max_age_s": 172_800, "hard_max_age_s": 604_800},
                "default_score": 0.5,
                "training": "external",
            }
        },
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def design(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The model's input as the team would build it: pandas categoricals with the dataset's own categories."""
    out = frame[columns].copy()
    for name in columns:
        if name in CATEGORICAL:
            out[name] = pd.Categorical(out[name])
    return out


def train(columns: list[str], rounds: int = 30, depth: int = 3) -> xgb.Booster:
    """A binary:logistic model of ``sex == "male"`` on the 2007 and 2008 birds of known sex (plain xgboost)."""
    frame = birds()
    known = frame[(frame["year"] < 2009) & frame["sex"].notna()]
    label = (known["sex"] == "male").astype(int)
    data = xgb.DMatrix(design(known, columns), label=label, enable_categorical=True)
    params = {"objective": "binary:logistic", "max_depth": depth, "max_cat_to_onehot": 1, "nthread": 1, "seed": 3}
    return xgb.train(params, data, num_boost_round=rounds)


def expected_scores(booster: xgb.Booster, year: int, columns: list[str]) -> pd.Series:
    """xgboost's own predictions on that year's birds, indexed by entity id."""
    frame = birds()
    rows = frame[frame["year"] == year]
    return pd.Series(booster.inplace_predict(design(rows, columns)), index=rows["entity_id"].to_numpy())
