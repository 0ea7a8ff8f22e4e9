"""Challenger versions end to end on the synthetic warehouse: trained or registered as challengers, shadow-scored on
the champion's partition into their own catalog runs and Parquet, loaded behind their challenger pointers (never the
live one), and failing without the champion noticing. Real Redis, catalog and Dask (threads)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from jobs.backfill import backfill
from jobs.challengers import abort_canary, drop_challenger, resume_canary
from jobs.publish import publish_run
from jobs.retention import apply_retention
from jobs.runtime import Runtime
from jobs.score import score_partition
from jobs.shadow import shadow
from jobs.status import model_status
from jobs.train import train_model
from tests.support.clock import END, day
from warehouse.datasets.score_files import committed_parts
from warehouse.errors import RegistryError
from warehouse.model_config import load_config
from warehouse.rollout import MAX_CHALLENGERS, challenger_key
from warehouse.store import ScoreStore

MODEL = "churn"


def edit_models(rt: Runtime, change: dict[str, object]) -> None:
    """Point ``rt`` at a private copy of its models file with ``models.churn`` updated by ``change``."""
    raw = yaml.safe_load(Path(rt.settings.models_file).read_text())
    raw["models"][MODEL].update(change)
    path = Path(rt.settings.root) / f"models-{len(list(Path(rt.settings.root).glob('models-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    rt.settings = rt.settings.model_copy(update={"models_file": path})
    rt.config = load_config(path)


def new_challenger(rt: Runtime) -> str:
    """A challenger with a smaller shape than the champion's: a different model of the same features."""
    training = rt.config.model(MODEL).training
    assert not isinstance(training, str)
    edit_models(rt, {"training": {**training.model_dump(), "primary_trees": 12, "primary_depth": 3}})
    report = train_model(rt, MODEL, challenger=True)
    primary = next(r for r in report.results if r.kind == "primary")
    assert not primary.promoted
    return primary.version


def test_train_challenger_is_listed_never_promoted(rt: Runtime) -> None:
    champion = rt.registry.require_production(MODEL, "primary")
    fallback = rt.registry.require_production(MODEL, "fallback")
    version = new_challenger(rt)
    assert rt.registry.challengers(MODEL) == [version]
    assert rt.registry.require_production(MODEL, "primary") == champion
    assert rt.registry.require_production(MODEL, "fallback") == fallback  # a challenger run promotes nothing
    with pytest.raises(RegistryError, match=r"production .*champion"):
        rt.registry.add_challenger(MODEL, champion)
    rt.registry.promote(MODEL, "primary", version)
    assert rt.registry.challengers(MODEL) == []  # a promoted challenger stops being one


def test_at_most_max_challengers_and_registry_leftovers(rt: Runtime) -> None:
    champion = rt.registry.require_production(MODEL, "primary")
    booster = rt.registry.load(MODEL, "primary", rt.config.model_features(MODEL)).booster
    versions = []
    for _ in range(MAX_CHALLENGERS):
        manifest = rt.registry.register(MODEL, "primary", booster, rt.config.model_features(MODEL), {}, {})
        rt.registry.add_challenger(MODEL, manifest.version)
        versions.append(manifest.version)
    with pytest.raises(RegistryError, match=f"at most {MAX_CHALLENGERS}"):
        rt.registry.require_room_for_challenger(MODEL)
    with pytest.raises(RegistryError, match="is a challenger"):
        rt.registry.remove_version(MODEL, "primary", versions[0])
    assert rt.registry.leftovers(MODEL, "primary") == []
    (rt.registry.kind_dir(MODEL, "primary") / "challengers.json").write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        rt.registry.challengers(MODEL)
    assert rt.registry.require_production(MODEL, "primary") == champion


def test_shadow_scores_and_loads_behind_the_challenger_pointer(rt: Runtime) -> None:
    version = new_challenger(rt)
    champ = score_partition(rt, MODEL, END)
    publish_run(rt, MODEL, champ.run_id)
    [result] = shadow(rt, MODEL, END, validated=rt.catalog.get_run(champ.run_id).input_fingerprint)
    assert result["status"] == "published" and result["published"], result
    key = challenger_key(MODEL, version)
    run = rt.catalog.get_run(result["run_id"])
    assert (run.model, run.model_version, run.status) == (key, version, "committed")
    assert Path(run.output_path or "").parent.parent.name == key  # scores/churn@<version>/dt=D/run=R
    assert rt.catalog.latest_committed(MODEL).run_id == champ.run_id  # the champion's history never sees it
    with ScoreStore.from_url(rt.redis_url) as store:
        assert store.current_run(MODEL).run_id == champ.run_id  # type: ignore[union-attr]
        assert store.challengers(MODEL) == {version: run.run_id}
        table = pq.read_table(committed_parts(run.output_path)[0])  # type: ignore[arg-type,index]
        sample = table.slice(0, 500)
        assert store.sample_check(MODEL, run.run_id, sample.column("entity_id"), sample.column("score")) == []
        champion_scores = pq.read_table(committed_parts(champ.output_path)[0]).column("score")  # type: ignore[arg-type,index]
        assert champion_scores.to_pylist()[:500] != sample.column("score").to_pylist()  # really another model
    status = model_status(rt, MODEL)
    [listed] = status["challengers"]
    assert (listed["version"], listed["redis_run_id"]) == (version, run.run_id)
    # the same night again: the committed challenger run is reused, the pointer unchanged
    [again] = shadow(rt, MODEL, END)
    assert again["reused"] and again["run_id"] == run.run_id and again["published"]


def test_a_failing_challenger_never_stops_the_champion(rt: Runtime) -> None:
    broken = new_challenger(rt)
    artifact = rt.registry.kind_dir(MODEL, "primary") / broken / "model.ubj"
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")  # tampered after registration
    champ = score_partition(rt, MODEL, END)
    [result] = shadow(rt, MODEL, END)
    assert result["status"] == "failed" and result["stage"] == "score"
    assert "does not match its manifest" in result["error"]
    publication = publish_run(rt, MODEL, champ.run_id)
    assert publication.declined is None
    with ScoreStore.from_url(rt.redis_url) as store:
        assert store.current_run(MODEL).run_id == champ.run_id  # type: ignore[union-attr]
        assert store.challengers(MODEL) == {}


def test_a_challenger_blocked_by_its_gate_keeps_its_previous_run(rt: Runtime) -> None:
    version = new_challenger(rt)
    for offset in (-1, 0):
        champ = score_partition(rt, MODEL, day(offset))
        publish_run(rt, MODEL, champ.run_id, force=True)
    [first] = shadow(rt, MODEL, day(-1))
    assert first["status"] == "published"
    edit_models(rt, {"max_psi": 1e-9})  # any change of distribution blocks
    [second] = shadow(rt, MODEL, day(0))
    assert second["status"] == "failed" and second["stage"] == "publish"
    assert "quality gate blocked" in second["error"]
    with ScoreStore.from_url(rt.redis_url) as store:
        assert store.challengers(MODEL) == {version: first["run_id"]}
    blocked = rt.catalog.publications(challenger_key(MODEL, version))
    assert blocked[0]["action"] == "blocked"


def test_backfill_scores_challengers_for_every_date(rt: Runtime) -> None:
    version = new_challenger(rt)
    report = backfill(rt, MODEL, day(-2), day(0))
    assert [d.status for d in report.dates] == ["scored"] * 3
    for d in report.dates:
        [c] = d.challengers
        assert c["status"] == "scored" and c["version"] == version
    key = challenger_key(MODEL, version)
    assert len(rt.catalog.runs(key, status="committed")) == 3
    [published] = report.challengers_published
    assert published["status"] == "published" and published["run_id"] == report.dates[-1].challengers[0]["run_id"]


def test_retention_keeps_challenger_versions(rt: Runtime) -> None:
    version = new_challenger(rt)
    booster = rt.registry.load(MODEL, "primary", rt.config.model_features(MODEL)).booster
    for _ in range(2):  # two newer versions: the challenger falls outside the newest one kept
        rt.registry.register(MODEL, "primary", booster, rt.config.model_features(MODEL), {}, {})
    rt.settings = rt.settings.model_copy(update={"retention_model_versions": 1})
    report = apply_retention(rt, now=dt.datetime.now(dt.UTC))
    assert version in rt.registry.versions(MODEL, "primary")
    assert any(k.item.endswith(version) and "challenger" in k.reason for k in report.kept)


def test_rollout_abort_resume_and_drop(rt: Runtime) -> None:
    version = new_challenger(rt)
    edit_models(rt, {"rollout": {"challenger": version, "percent": 10, "mode": "canary"}})
    assert abort_canary(rt, MODEL)["configured_percent"] == 10
    with ScoreStore.from_url(rt.redis_url) as store:
        assert store.rollout_override(MODEL) == 0.0
        resume_canary(rt, MODEL)
        assert store.rollout_override(MODEL) is None
    with pytest.raises(Exception, match="serves 10 % of entities"):
        drop_challenger(rt, MODEL, version)
    edit_models(rt, {"rollout": {"challenger": version, "percent": 0, "mode": "canary"}})
    assert drop_challenger(rt, MODEL, version)["version"] == version
    assert rt.registry.challengers(MODEL) == []
    assert json.loads(json.dumps(model_status(rt, MODEL)["challengers"])) == []


def test_retention_bounds_challenger_runs_and_keeps_the_one_behind_its_pointer(rt: Runtime) -> None:
    version = new_challenger(rt)
    report = backfill(rt, MODEL, day(-2), day(0))
    key = challenger_key(MODEL, version)
    runs = {r.partition_date: r for r in rt.catalog.runs(key, status="committed")}
    assert len(runs) == 3
    rt.settings = rt.settings.model_copy(update={"retention_score_days": 0, "retention_unpublished_run_hours": 0})
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    apply_retention(rt, now=later)
    left = rt.catalog.runs(key, status="committed")
    assert [r.run_id for r in left] == [report.dates[-1].challengers[0]["run_id"]]  # the run behind the pointer
    assert all(not Path(runs[d].output_path or "").exists() for d in (day(-2), day(-1)))
    with ScoreStore.from_url(rt.redis_url) as store:
        assert store.challengers(MODEL) == {version: left[0].run_id}
        assert store.get_run(MODEL, left[0].run_id) is not None  # not unloaded as "never published"


def test_a_run_of_a_demoted_version_does_not_go_live_after_a_promotion(rt: Runtime) -> None:
    """A nightly run scored before a promotion would put the old version back when published after it: declined
    (unless forced), nothing loaded or flipped."""
    old = score_partition(rt, MODEL, END)
    version = new_challenger(rt)
    rt.registry.promote(MODEL, "primary", version)  # what prescore promote does first
    declined = publish_run(rt, MODEL, old.run_id)
    assert declined.declined and f"production is {version} now" in declined.declined
    with ScoreStore.from_url(rt.redis_url) as store:
        assert store.current_run(MODEL) is None and store.get_run(MODEL, old.run_id) is None
    assert publish_run(rt, MODEL, old.run_id, force=True).declined is None
