"""``prescore register`` against the real registry, catalog and scoring job: models trained with plain xgboost
outside prescore, each bad model file refused with one line while the production model stays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest
import xgboost as xgb
from typer.testing import CliRunner

from jobs.cli import app
from jobs.feature_matrix import to_matrix
from jobs.register import register_model
from jobs.runtime import Runtime
from jobs.score import score_partition
from jobs.status import model_status
from online.fallback import FallbackModel
from tests.jobs.conftest import END
from warehouse.datasets import features as fstore
from warehouse.datasets.score_files import read_run
from warehouse.datasets.storage import sha256_file
from warehouse.errors import RegistryError

MODEL = "churn"
ROOT = Path(__file__).resolve().parents[2]


def _training_data(rt: Runtime, cols: list[str], rows: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    fs = rt.config.model(MODEL).feature_set
    table = fstore.read_partition(rt.home, fs, END, columns=[*cols, "entity_id"]).slice(0, rows)
    labels = fstore.read_labels(rt.home, fs, END)
    joined = table.join(labels, "entity_id")
    x = to_matrix(joined, cols)
    return x, np.asarray(joined.column(fstore.LABEL_COLUMN).to_numpy(zero_copy_only=False), dtype=np.float32)


@pytest.fixture
def external(rt: Runtime, tmp_path: Path) -> Callable[..., Path]:
    """Train a small model with plain xgboost (not prescore train) and save it; returns the file."""

    def make(
        name: str = "model.ubj",
        cols: list[str] | None = None,
        params: dict[str, Any] | None = None,
        names: bool = True,
        role: str = "primary",
    ) -> Path:
        default = (
            rt.config.model_features(MODEL) if role == "primary" else list(rt.config.model(MODEL).fallback_features)
        )
        cols = default if cols is None else cols
        x, y = _training_data(rt, cols)
        dtrain = xgb.DMatrix(x, y, feature_names=cols if names else None)
        booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, **(params or {})}, dtrain, 5)
        path = tmp_path / name
        booster.save_model(path)
        return path

    return make


def test_an_external_model_is_registered_promoted_and_scores_like_xgboost(
    rt: Runtime, external: Callable[..., Path]
) -> None:
    before = rt.registry.production_version(MODEL, "primary")
    path = external()
    report = register_model(rt, MODEL, "primary", path, promote=True)
    assert report.promoted and report.previous_production == before and report.version != before
    assert rt.registry.production_version(MODEL, "primary") == report.version
    manifest = rt.registry.manifest(MODEL, "primary", report.version)
    assert manifest.lineage["source"] == str(path.resolve()) and manifest.lineage["objective"] == "binary:logistic"
    assert manifest.lineage["source_sha256"] == sha256_file(path) and manifest.lineage["registered_by"]
    assert report.probe is not None and 0.0 <= report.probe["min"] <= report.probe["max"] <= 1.0

    run = score_partition(rt, MODEL, END, device="cpu")
    scores = read_run(run.output_path).sort_by("entity_id").slice(0, 500)
    cols = rt.config.model_features(MODEL)
    feats = fstore.read_partition(rt.home, rt.config.model(MODEL).feature_set, END, columns=["entity_id", *cols])
    rows = feats.take(pc.index_in(scores.column("entity_id"), feats.column("entity_id")))
    own = xgb.Booster()
    own.load_model(path)
    expected = own.inplace_predict(to_matrix(rows, cols)).astype(np.float32)
    np.testing.assert_array_equal(scores.column("score").to_numpy(), expected)


def test_without_promote_it_is_registered_but_not_production(rt: Runtime, external: Callable[..., Path]) -> None:
    before = rt.registry.production_version(MODEL, "primary")
    report = register_model(rt, MODEL, "primary", external("model.json"))
    assert not report.promoted and rt.registry.production_version(MODEL, "primary") == before
    assert report.version in rt.registry.versions(MODEL, "primary")
    status = model_status(rt, MODEL)["production"]["primary"]
    assert status["version"] == before and status["newest_registered"] == report.version


def test_a_model_without_feature_names_needs_features_by_position(rt: Runtime, external: Callable[..., Path]) -> None:
    path = external(names=False)
    with pytest.raises(RegistryError, match="stores no feature names: pass --features"):
        register_model(rt, MODEL, "primary", path)
    cols = rt.config.model_features(MODEL)
    with pytest.raises(RegistryError, match=f"--features lists 2 names but .* has {len(cols)} features"):
        register_model(rt, MODEL, "primary", path, features=cols[:2])
    assert register_model(rt, MODEL, "primary", path, features=cols).features == cols


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda cols: cols[:-1], r"missing \['f31'\]"),
        (lambda cols: [*cols, "f31_squared"], r"unexpected \['f31_squared'\]"),
        (lambda cols: [cols[1], cols[0], *cols[2:]], "in another order"),
    ],
)
def test_features_that_do_not_match_the_contract_are_refused(
    rt: Runtime, tmp_path: Path, change: Callable[[list[str]], list[str]], words: str
) -> None:
    contract = rt.config.model_features(MODEL)
    cols = change(contract)
    x, y = _training_data(rt, contract)
    by_name = {c: x[:, i] for i, c in enumerate(contract)} | {"f31_squared": x[:, -1] ** 2}
    matrix = np.column_stack([by_name[c] for c in cols])
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(matrix, y, feature_names=cols), 3)
    booster.save_model(tmp_path / "other.ubj")
    before = (rt.registry.versions(MODEL, "primary"), rt.registry.production_version(MODEL, "primary"))
    with pytest.raises(RegistryError, match=words):
        register_model(rt, MODEL, "primary", tmp_path / "other.ubj", promote=True)
    assert (rt.registry.versions(MODEL, "primary"), rt.registry.production_version(MODEL, "primary")) == before


def test_a_fallback_using_features_outside_fallback_features_is_refused(
    rt: Runtime, external: Callable[..., Path]
) -> None:
    fallback = list(rt.config.model(MODEL).fallback_features)
    outside = next(c for c in rt.config.model_features(MODEL) if c not in fallback)
    path = external(cols=[*fallback, outside], role="fallback")
    with pytest.raises(RegistryError, match=f"uses features outside models.churn.fallback_features: \\['{outside}'\\]"):
        register_model(rt, MODEL, "fallback", path)
    with pytest.raises(RegistryError, match=r"cannot be the online fallback .*'binary:hinge' is not supported"):
        register_model(rt, MODEL, "fallback", external("fb-hinge.ubj", role="fallback",
                                                       params={"objective": "binary:hinge"}))  # fmt: skip
    source = external("fb.ubj", role="fallback")
    ok = register_model(rt, MODEL, "fallback", source, promote=True)
    assert rt.registry.production_version(MODEL, "fallback") == ok.version
    served = FallbackModel.from_booster(rt.registry.load(MODEL, "fallback", fallback).booster, fallback, ok.version)
    x, _ = _training_data(rt, fallback, rows=50)
    own = xgb.Booster()
    own.load_model(source)
    np.testing.assert_allclose(served.predict_many(x), own.inplace_predict(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"objective": "multi:softprob", "num_class": 3}, "multiclass.*one binary:logistic model per class"),
        ({"objective": "survival:cox"}, "objective survival:cox is not one prescore can serve"),
    ],
)
def test_an_unsupported_objective_is_refused(rt: Runtime, tmp_path: Path, params: dict[str, Any], words: str) -> None:
    cols = rt.config.model_features(MODEL)
    x, y = _training_data(rt, cols)
    if params["objective"].startswith("multi"):
        y = (np.arange(len(y)) % 3).astype(np.float32)
    else:
        y = np.where(y > 0, 1.0, -1.0).astype(np.float32) * (1 + np.arange(len(y)) % 5)
    booster = xgb.train(params, xgb.DMatrix(x, y, feature_names=cols), 3)
    booster.save_model(tmp_path / "m.ubj")
    with pytest.raises(RegistryError, match=words):
        register_model(rt, MODEL, "primary", tmp_path / "m.ubj")


def test_regression_and_ranking_objectives_are_accepted(rt: Runtime, external: Callable[..., Path]) -> None:
    for i, objective in enumerate(("reg:squarederror", "count:poisson", "rank:pairwise", "binary:logitraw")):
        report = register_model(rt, MODEL, "primary", external(f"m{i}.ubj", params={"objective": objective}))
        assert report.objective == objective and report.probe is not None


def test_a_categorical_feature_against_a_numeric_contract_is_refused(rt: Runtime, tmp_path: Path) -> None:
    cols = rt.config.model_features(MODEL)
    x, y = _training_data(rt, cols)
    x[:, 0] = np.floor(np.abs(x[:, 0])) % 4
    types = ["c", *(["q"] * (len(cols) - 1))]
    dtrain = xgb.DMatrix(x, y, feature_names=cols, feature_types=types, enable_categorical=True)
    xgb.train({"objective": "binary:logistic", "tree_method": "hist"}, dtrain, 3).save_model(tmp_path / "c.ubj")
    fs = rt.config.model(MODEL).feature_set
    wrong = f"treats {cols[0]} as categorical but feature_sets.{fs}.features.{cols[0]} is dtype: float32"
    with pytest.raises(RegistryError, match=wrong):
        register_model(rt, MODEL, "primary", tmp_path / "c.ubj")
    nameless = xgb.DMatrix(x, y, feature_types=types, enable_categorical=True)  # matched by position: same check
    xgb.train({"objective": "binary:logistic", "tree_method": "hist"}, nameless, 3).save_model(tmp_path / "n.ubj")
    with pytest.raises(RegistryError, match=wrong):
        register_model(rt, MODEL, "primary", tmp_path / "n.ubj", features=cols)
    assert rt.registry.versions(MODEL, "primary") == [rt.registry.production_version(MODEL, "primary")]


def test_broken_files_are_refused_in_one_line(rt: Runtime, external: Callable[..., Path], tmp_path: Path) -> None:
    good = external()
    truncated = tmp_path / "truncated.ubj"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.json"
    text.write_text('{"these are": not the trees you are looking for')
    for path in (truncated, text):
        with pytest.raises(RegistryError, match=r"is not an XGBoost model this xgboost .* can read"):
            register_model(rt, MODEL, "primary", path)
    legacy = tmp_path / "model.bin"
    legacy.write_bytes(b"binf" + bytes(64))  # not UBJSON or JSON: what the pre-1.0 binary format looks like
    with pytest.raises(RegistryError, match=r"legacy binary format.*xgboost 2\.x"):
        register_model(rt, MODEL, "primary", legacy)
    with pytest.raises(RegistryError, match="does not exist"):
        register_model(rt, MODEL, "primary", tmp_path / "nowhere.ubj")


def test_a_model_predicting_non_finite_values_fails_the_probe(rt: Runtime, external: Callable[..., Path]) -> None:
    path = external("m.json", params={"objective": "reg:squarederror"})
    raw = json.loads(path.read_text())
    raw["learner"]["learner_model_param"]["base_score"] = "[1E39]"  # beyond float32: every prediction is inf
    path.write_text(json.dumps(raw))
    with pytest.raises(RegistryError, match=r"predicts \d+ non-finite values on \d+ rows"):
        register_model(rt, MODEL, "primary", path, promote=True)


def test_an_interrupted_register_leaves_nothing_half_registered(rt: Runtime, external: Callable[..., Path]) -> None:
    """The registering process is SIGKILLed just before the version is renamed into place."""
    path = external()
    before = (rt.registry.versions(MODEL, "primary"), rt.registry.production_version(MODEL, "primary"))
    code = f"""
import os, signal
from jobs.register import register_model
from jobs.runtime import Runtime
from warehouse.settings import Settings
rt = Runtime.from_settings(Settings(home={str(rt.home)!r}, models_file={str(rt.settings.models_file)!r},
                                    redis_url={rt.redis_url!r}))
os.rename = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
register_model(rt, "churn", "primary", {str(path)!r}, promote=True)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ}, capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert (rt.registry.versions(MODEL, "primary"), rt.registry.production_version(MODEL, "primary")) == before
    assert [p.name.startswith(".staging-") for p in rt.registry.leftovers(MODEL, "primary")] == [True]
    assert register_model(rt, MODEL, "primary", path, promote=True).promoted  # a retry registers it


def test_cli_register_prints_json_and_refuses_bad_files_with_exit_1(
    rt: Runtime, external: Callable[..., Path], tmp_path: Path
) -> None:
    env = {"PRESCORE_HOME": str(rt.home), "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
           "PRESCORE_REDIS_URL": rt.redis_url}  # fmt: skip
    runner = CliRunner()
    ok = runner.invoke(app, ["register", str(external()), "--model", MODEL, "--role", "primary", "--json"], env=env)
    assert ok.exit_code == 0, ok.output
    body = json.loads(ok.stdout)
    assert body["version"] in rt.registry.versions(MODEL, "primary") and body["promoted"] is False
    bad = tmp_path / "bad.ubj"
    bad.write_text("{")
    refused = runner.invoke(app, ["register", str(bad), "--model", MODEL, "--role", "primary"], env=env)
    assert refused.exit_code == 1 and "is not an XGBoost model" in refused.output
    assert "Traceback" not in refused.output
    usage = runner.invoke(app, ["register", str(bad), "--model", MODEL, "--role", "champion"], env=env)
    assert usage.exit_code == 2 and "--role must be primary or fallback" in usage.output
    for args in ([], [str(bad), "--from-mlflow", "models:/x/1"]):
        neither = runner.invoke(app, ["register", *args, "--model", MODEL, "--role", "primary"], env=env)
        assert neither.exit_code == 2 and "give a model file or --from-mlflow URI" in neither.output


def test_a_registered_regression_model_is_scored_gated_and_published(
    rt: Runtime, external: Callable[..., Path]
) -> None:
    """Scores outside [0, 1]: the PSI gate compares quantile summaries, so two days give a finite, small PSI."""
    from datetime import timedelta

    from jobs.publish import publish_run

    report = register_model(
        rt,
        MODEL,
        "primary",
        external("reg.ubj", params={"objective": "reg:squarederror", "base_score": 40.0}),
        promote=True,
    )
    assert report.probe is not None and report.probe["min"] > 1.0  # not a probability
    first = score_partition(rt, MODEL, END - timedelta(days=1), device="cpu")
    second = score_partition(rt, MODEL, END, device="cpu")
    assert second.psi_against == first.run_id and second.psi is not None and 0.0 <= second.psi < 0.25
    assert len(second.quantiles) == 101 and second.quantiles[0] > 1.0
    publish_run(rt, MODEL, first.run_id)
    published = publish_run(rt, MODEL, second.run_id)
    assert published.psi == pytest.approx(second.psi, abs=1e-6) and published.declined is None


def test_thresholds_outside_the_registered_objective_range_are_refused(
    rt: Runtime, external: Callable[..., Path], tmp_path: Path
) -> None:
    """``training: external``: the objective is known only at registration, so register checks the thresholds."""
    import yaml

    from warehouse.settings import Settings

    raw = yaml.safe_load(rt.settings.models_file.read_text())
    raw["models"][MODEL].update(training="external", thresholds={"labels": {"big_spender": 250.0}})
    edited = tmp_path / "thresholds.yaml"
    edited.write_text(yaml.safe_dump(raw))
    other = Runtime.from_settings(Settings(home=rt.home, models_file=edited, redis_url=rt.redis_url))
    try:
        before = other.registry.versions(MODEL, "primary")
        with pytest.raises(RegistryError, match=r"is a binary:logistic model, but models.churn.thresholds.labels: "
                                                r"big_spender = 250.0 is outside the range"):  # fmt: skip
            register_model(other, MODEL, "primary", external("binary.ubj"))
        assert other.registry.versions(MODEL, "primary") == before
        regression = external("regression.ubj", params={"objective": "reg:squarederror"})
        assert register_model(other, MODEL, "primary", regression).objective == "reg:squarederror"
    finally:
        other.close()


def test_a_model_saved_by_a_newer_xgboost_is_refused(
    rt: Runtime, external: Callable[..., Path], tmp_path: Path
) -> None:
    """xgboost itself loads such a file without a word: register reads the version the file says (JSON, UBJSON)."""
    from jobs.register import saved_version

    installed = tuple(int(p) for p in xgb.__version__.split(".")[:3])
    for suffix in ("json", "ubj"):
        good = external(f"good.{suffix}")
        assert saved_version(good) == installed
    raw = json.loads(external("m.json").read_text())
    raw["version"] = [installed[0] + 1, 0, 0]
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(raw))
    booster = xgb.Booster()
    booster.load_model(newer)  # what it would have been without the check: loaded as if nothing were odd
    with pytest.raises(RegistryError, match=rf"saved by xgboost {installed[0] + 1}\.0\.0, newer than the installed"):
        register_model(rt, MODEL, "primary", newer)
    booster.save_model(tmp_path / "resaved.ubj")  # re-saved by this xgboost: it says so, and registers
    data = (tmp_path / "resaved.ubj").read_bytes()
    at = data.rfind(b"\x07version[") + len(b"\x07version[")
    assert saved_version(tmp_path / "resaved.ubj") == installed
    bumped = tmp_path / "bumped.ubj"
    count_end = at + 2 + 8  # '#', 'L' and an 8-byte count
    bumped.write_bytes(data[:count_end] + b"i" + bytes([installed[0] + 1]) + data[count_end + 2 :])
    with pytest.raises(RegistryError, match="newer than the installed"):
        register_model(rt, MODEL, "primary", bumped)


def test_register_a_challenger_through_the_cli(rt: Runtime, external: Callable[..., Path]) -> None:
    """--challenger: registered, listed as a challenger, never production; a challenger whose features do not match
    the contract is refused like any primary; --challenger with --promote or a fallback role is a usage error."""
    env = {"PRESCORE_HOME": str(rt.home), "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
           "PRESCORE_REDIS_URL": rt.redis_url}  # fmt: skip
    before = rt.registry.production_version(MODEL, "primary")
    runner = CliRunner()
    ok = runner.invoke(app, ["register", str(external()), "--model", MODEL, "--role", "primary", "--challenger",
                             "--json"], env=env)  # fmt: skip
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert report["challenger"] and not report["promoted"]
    assert rt.registry.challengers(MODEL) == [report["version"]]
    assert rt.registry.production_version(MODEL, "primary") == before
    wrong = external("wrong.ubj", cols=rt.config.model_features(MODEL)[:-1])
    refused = runner.invoke(app, ["register", str(wrong), "--model", MODEL, "--role", "primary", "--challenger"],
                            env=env)  # fmt: skip
    assert refused.exit_code == 1 and "features" in refused.output
    assert rt.registry.challengers(MODEL) == [report["version"]]
    for extra in (["--promote"], []):
        role = "primary" if extra else "fallback"
        usage = runner.invoke(app, ["register", str(external()), "--model", MODEL, "--role", role, "--challenger",
                                    *extra], env=env)  # fmt: skip
        assert usage.exit_code == 2 and "--challenger takes --role primary" in usage.output
