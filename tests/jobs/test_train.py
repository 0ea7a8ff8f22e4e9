"""Training, evaluation, registration and promotion on the synthetic warehouse."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from jobs.runtime import Runtime
from jobs.train import choose_window, train_model
from tests.jobs.conftest import END
from warehouse.errors import UserError


def test_template_models_are_registered_and_promoted(rt: Runtime) -> None:
    """The session's training registered both kinds with manifests that describe them, and promoted them."""
    for kind, n_features in (("primary", 32), ("fallback", 8)):
        version = rt.registry.production_version("churn", kind)
        assert version is not None
        manifest = rt.registry.manifest("churn", kind, version)
        assert len(manifest.features) == n_features
        assert manifest.training_window["holdout"] == END.isoformat()
        assert manifest.metrics["auc"] > 0.7  # the synthetic label is learnable
        assert 0 < manifest.metrics["logloss"] < 0.69
        assert set(manifest.library_versions) >= {"xgboost", "python"}
        loaded = rt.registry.load("churn", kind, manifest.features)
        assert loaded.booster.num_features() == n_features
    rows = rt.catalog.model_versions("churn")
    assert {r.kind for r in rows if r.promoted_at is not None} == {"primary", "fallback"}


def test_retraining_promotes_only_when_not_worse(rt: Runtime) -> None:
    """A retrain on the same data is within the margin (promoted); with an impossible margin it is kept out."""
    first = rt.registry.production_version("churn", "primary")
    report = train_model(rt, "churn")
    primary = next(r for r in report.results if r.kind == "primary")
    assert primary.production_metrics is not None
    assert primary.promoted and rt.registry.production_version("churn", "primary") == primary.version != first
    spec = rt.config.models["churn"]
    strict = spec.model_copy(update={"training": spec.training.model_copy(update={"promote_margin": -1.0})})
    rt.config = rt.config.model_copy(update={"models": {"churn": strict}})
    report = train_model(rt, "churn")
    assert not any(r.promoted for r in report.results)
    assert rt.registry.production_version("churn", "primary") == primary.version
    assert json.loads((rt.registry.kind_dir("churn", "primary") / "production.json").read_text())


def test_too_few_partitions_is_a_user_error() -> None:
    days = [dt.date(2026, 11, d) for d in (1, 2)]
    with pytest.raises(UserError, match="training needs 4 daily feature partitions"):
        choose_window(days, 3, None)
    train, holdout = choose_window([dt.date(2026, 11, d) for d in range(1, 6)], 3, dt.date(2026, 11, 4))
    assert holdout == dt.date(2026, 11, 4) and train[0] == dt.date(2026, 11, 1)


def test_unknown_model(rt: Runtime) -> None:
    with pytest.raises(UserError, match="unknown model 'nope'"):
        train_model(rt, "nope")


def _with_training(rt: Runtime, training: object) -> Runtime:
    import yaml

    from warehouse.settings import Settings

    raw = yaml.safe_load(rt.settings.models_file.read_text())
    raw["models"]["churn"]["training"] = training
    path = rt.home / "models-variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Runtime.from_settings(Settings(home=rt.home, models_file=path, redis_url=rt.redis_url))


def test_an_external_model_is_never_trained(rt: Runtime) -> None:
    external = _with_training(rt, "external")
    try:
        with pytest.raises(UserError, match="training is external: prescore does not train churn; register"):
            train_model(external, "churn")
    finally:
        external.close()


def test_training_params_reach_xgboost(rt: Runtime) -> None:
    """gamma this large forbids every split: each tree is one leaf, so every hold-out row gets the same score."""
    raw_training = {"max_train_rows": 30_000, "primary_trees": 5, "params": {"gamma": 1e9}}
    stumps = _with_training(rt, raw_training)
    try:
        report = train_model(stumps, "churn")
        primary = next(k for k in report.results if k.kind == "primary")
        booster = stumps.registry.load("churn", "primary", stumps.config.model_features("churn"),
                                       version=primary.version).booster  # fmt: skip
        assert all('"split"' not in tree for tree in booster.get_dump(dump_format="json"))
        assert primary.metrics["auc"] == pytest.approx(0.5)
    finally:
        stumps.close()
