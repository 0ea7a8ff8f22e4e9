"""A regression model on the synthetic warehouse, end to end: a models file whose model is trained with
``objective: reg:squarederror``; ``prescore synth`` and ``prescore train``; scoring, the PSI gate and publishing to
the real test Redis; reading back; the API's ladder (precomputed, fallback model, default) with real-valued scores.

The synthetic labels are 0/1; the module rewrites them as a real-valued target far from [0, 1]
(``tests.jobs.test_train.spend_labels``: 400 + 100 × label + noise), so a score that is treated as a probability
anywhere on the way would show.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from typer.testing import CliRunner

from jobs.cli import app
from jobs.feature_matrix import to_matrix
from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.jobs.conftest import END, runtime_on_copy
from tests.jobs.test_train import relabel, spend_labels
from warehouse.datasets import features as fstore
from warehouse.datasets.score_files import read_run
from warehouse.errors import QualityGateError
from warehouse.settings import DEFAULT_MODELS_FILE, Settings
from warehouse.store import ScoreReader
from warehouse.store.local_server import RedisProcess

MODEL = "spend"
FS = "customer_daily"
ENTITIES = 8_000
DEFAULT = 450.0  # a safe default on the scores' own scale
BIG = 480.0  # threshold label "big_spender": a regression threshold far outside [0, 1]
runner = CliRunner()


def _models_file(path: Path) -> Path:
    """The embedded feature set with one model, ``spend``, trained as a regression with small tree counts."""
    raw = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
    churn = raw["models"]["churn"]
    raw["models"] = {
        MODEL: {
            "feature_set": FS,
            "fallback_features": churn["fallback_features"],
            "staleness": churn["staleness"],
            "default_score": DEFAULT,
            "thresholds": {"labels": {"big_spender": BIG}},
            "max_psi": 0.25,
            "training": {
                "objective": "reg:squarederror",
                "train_days": 3,
                "max_train_rows": 20_000,
                "primary_trees": 40,
                "primary_depth": 6,
                "fallback_trees": 15,
                "fallback_depth": 4,
            },
        }
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def _env(home: Path, models_file: Path, redis_url: str) -> dict[str, str]:
    return {"PRESCORE_HOME": str(home), "PRESCORE_MODELS_FILE": str(models_file), "PRESCORE_REDIS_URL": redis_url,
            "PRESCORE_DASK_LOCAL": "threads", "PRESCORE_CATALOG_URL": ""}  # fmt: skip


@pytest.fixture(scope="module")
def regression_home(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisProcess) -> tuple[Path, Path]:
    """``prescore synth`` + real-valued labels + ``prescore train --model spend`` (built once, copied per test)."""
    base = tmp_path_factory.mktemp("regression")
    home, models_file = base / "home", _models_file(base / "models.yaml")
    env = _env(home, models_file, redis_server.url)
    args = ["synth", "--entities", str(ENTITIES), "--days", "4", "--end-date", END.isoformat(), "--json"]
    synth = runner.invoke(app, args, env=env)
    assert synth.exit_code == 0, synth.output
    rt = Runtime.from_settings(Settings(home=home, models_file=models_file, redis_url=redis_server.url))
    try:
        relabel(rt, spend_labels)
    finally:
        rt.close()
    trained = runner.invoke(app, ["train", "--model", MODEL, "--json"], env=env)
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.stdout)
    for kind in report["results"]:
        assert kind["promoted"] and set(kind["metrics"]) == {"rmse", "mae"}
        assert kind["metrics"]["rmse"] < 50.0  # the label's spread is ~47: the model learnt something
    return home, models_file


@pytest.fixture
def rt(regression_home: tuple[Path, Path], tmp_path: Path, redis_url: str) -> Iterator[Runtime]:
    yield from runtime_on_copy(regression_home, tmp_path, redis_url)


def _expected(rt: Runtime, day: dt.date, ids: pa.ChunkedArray, kind: str = "primary") -> np.ndarray:
    """``inplace_predict`` of the production ``kind`` booster on the feature rows of ``ids`` (in that order)."""
    cols = rt.config.model_features(MODEL) if kind == "primary" else list(rt.config.model(MODEL).fallback_features)
    feats = fstore.read_partition(rt.home, FS, day, columns=["entity_id", *cols])
    rows = feats.take(pc.index_in(ids, value_set=feats.column("entity_id").combine_chunks()))
    booster = rt.registry.load(MODEL, kind, cols).booster
    return booster.inplace_predict(to_matrix(rows, cols)).astype(np.float32)


def _score(rt: Runtime, day: dt.date) -> Any:
    return score_partition(rt, MODEL, day, device="cpu")


def test_a_regression_model_is_scored_gated_published_and_read_back_like_xgboost(rt: Runtime) -> None:
    first, second = _score(rt, END - dt.timedelta(days=1)), _score(rt, END)
    scores = read_run(second.output_path)
    assert scores.num_rows == second.rows_out == ENTITIES
    expected = _expected(rt, END, scores.column("entity_id"))
    np.testing.assert_array_equal(scores.column("score").to_numpy(), expected)
    assert float(expected.min()) > 300.0 and float(expected.max()) < 600.0  # the label's scale, not [0, 1]
    assert len(second.quantiles) == 101 and second.quantiles[0] > 1.0

    assert second.psi_against == first.run_id and second.psi is not None and 0.0 <= second.psi < 0.25
    publish_run(rt, MODEL, first.run_id)
    published = publish_run(rt, MODEL, second.run_id)
    assert published.declined is None and published.psi == pytest.approx(second.psi, abs=1e-6)

    sample = scores.take(pa.array(np.random.default_rng(3).choice(scores.num_rows, 300, replace=False)))
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        hits = reader.get_many(MODEL, sample.column("entity_id").to_pylist())
    finally:
        reader.close()
    want = _expected(rt, END, sample.column("entity_id"))
    found = [h for h in hits if h is not None and h.run_id == second.run_id]
    assert len(found) == len(hits)
    np.testing.assert_allclose(np.array([h.score for h in found]), want, rtol=1e-6)


def test_the_psi_gate_blocks_a_shifted_regression_run(rt: Runtime) -> None:
    """Labels move up by 300: the retrained model is promoted, and its scores, 300 higher, fail the gate (over
    deciles of real-valued scores) until forced."""
    live = _score(rt, END)
    publish_run(rt, MODEL, live.run_id)
    relabel(rt, lambda day, labels: labels + 300.0)
    from jobs.train import train_model

    report = train_model(rt, MODEL)
    primary = next(r for r in report.results if r.kind == "primary")
    assert primary.promoted and primary.production_metrics is not None
    assert primary.production_metrics["rmse"] > 250.0 > primary.metrics["rmse"]  # the old model is 300 off
    shifted = _score(rt, END)
    assert shifted.run_id != live.run_id and shifted.psi is not None and shifted.psi > 1.0
    with pytest.raises(QualityGateError, match=f"quality gate blocked run {shifted.run_id}: score PSI"):
        publish_run(rt, MODEL, shifted.run_id)
    forced = publish_run(rt, MODEL, shifted.run_id, force=True)
    assert forced.forced and forced.declined is None


def test_the_api_ladder_answers_a_regression_model(rt: Runtime) -> None:
    """Precomputed (= Parquet), a new entity with features (= the regression fallback model's inplace_predict) and
    an unknown one (the model's default, on the scores' scale); decisions from a threshold of 480."""
    from online.lookup import lookup
    from online.settings import OnlineSettings

    run = _score(rt, END)
    publish_run(rt, MODEL, run.run_id)
    scores = read_run(run.output_path).sort_by("score")
    low, high = scores.column("entity_id")[0].as_py(), scores.column("entity_id")[-1].as_py()
    names = list(rt.config.model(MODEL).fallback_features)
    feats = fstore.read_partition(rt.home, FS, END, columns=["entity_id", *names]).slice(0, 1)
    values = {n: float(feats.column(n)[0].as_py()) for n in names}
    settings = OnlineSettings(home=rt.home, models_file=rt.settings.models_file, redis_url=rt.redis_url,
                              catalog_url=rt.settings.catalog_url)  # fmt: skip
    answers = lookup(MODEL, [low, high, "NEW-1", "NEW-2"], {"NEW-1": values}, settings=settings)
    by_id = {a["entity_id"]: a for a in answers}
    for entity, row in ((low, 0), (high, scores.num_rows - 1)):
        a = by_id[entity]
        assert (a["source"], a["run_id"]) == ("precomputed", run.run_id)
        assert a["score"] == pytest.approx(float(scores.column("score")[row].as_py()), rel=1e-6)
        assert a["decision"] == ("big_spender" if a["score"] >= BIG else "low")
    assert by_id[high]["score"] > by_id[low]["score"] > 1.0

    fallback = by_id["NEW-1"]
    assert fallback["source"] == "fallback"
    assert fallback["model_version"] == rt.registry.production_version(MODEL, "fallback")
    want = float(_expected(rt, END, feats.column("entity_id"), kind="fallback")[0])
    assert fallback["score"] == pytest.approx(want, rel=1e-5) and fallback["score"] > 1.0

    default = by_id["NEW-2"]
    assert (default["source"], default["score"], default["decision"]) == ("default", DEFAULT, "low")
