"""The promotion gate on stored comparisons, and promotion itself against real Redis, the registry and the catalog:
refused (nothing changes), forced (recorded), promoted (one pointer change, the old champion a rollback target),
and raced against a nightly publish (one wins, nothing half-visible)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from typing import Any

import pyarrow.parquet as pq
import pytest

from jobs.compare import compare_date
from jobs.promote import check_gate, promote_challenger
from jobs.publish import publish_run, rollback_model
from jobs.restore import restore_model
from jobs.runtime import Runtime
from jobs.score import score_partition
from jobs.shadow import shadow
from tests.support.challenger import register_challenger
from tests.support.clock import day
from warehouse.catalog import COMPARED, FAILED, ComparisonRecord
from warehouse.errors import PromotionRefusedError, UserError
from warehouse.rollout import challenger_key
from warehouse.store import ScoreReader, ScoreStore

NOW = dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC)


def _gate(rt: Runtime, **changes: Any) -> None:
    spec = rt.config.models["churn"]
    spec = spec.model_copy(update={"promotion": spec.promotion.model_copy(update=changes)})
    rt.config = rt.config.model_copy(update={"models": {**rt.config.models, "churn": spec}})


def _store_rows(rt: Runtime, version: str, offsets: tuple[int, ...] = (0, -1, -2), **kw: Any) -> None:
    """Comparisons of ``version`` with the production champion that pass the default gate, changed by ``kw``."""
    champion = rt.registry.production_version("churn", "primary")
    for offset in offsets:
        row = ComparisonRecord(
            model="churn", challenger_version=version, partition_date=day(offset), status=COMPARED, compared_at=NOW,
            champion_version=champion, n_champion=100, n_challenger=100, n_joined=100, psi=0.02,
            rank_correlation=0.9, decision_change=0.03, objective="binary:logistic",
        )  # fmt: skip
        rt.catalog.upsert_comparison(dataclasses.replace(row, **kw))


def _checks(gate: Any) -> dict[str, tuple[bool, Any]]:
    return {c.name: (c.passed, c.value) for c in gate.checks}


def _live_champion_and_loaded_challenger(rt: Runtime) -> tuple[str, str, str]:
    """A champion run of ``day(0)`` live in Redis and a challenger's run of the same date loaded behind its pointer
    (the nightly DAG's score, publish and shadow tasks); returns (version, champion run, challenger run)."""
    version = register_challenger(rt)
    champion = score_partition(rt, "churn", day(0), device="cpu")
    publish_run(rt, "churn", champion.run_id)
    [loaded] = shadow(rt, "churn", day(0), device="cpu")
    assert loaded["status"] == "published", loaded
    return version, champion.run_id, loaded["run_id"]


def _state(rt: Runtime) -> dict[str, Any]:
    with ScoreStore.from_url(rt.redis_url) as store:
        current = store.current_run("churn")
        pointers = store.challengers("churn")
    return {
        "production": rt.registry.production_version("churn", "primary"),
        "challengers": rt.registry.challengers("churn"),
        "live": current.run_id if current else None,
        "pointers": pointers,
        "publications": rt.catalog.publications("churn"),
    }


# ---- the gate ----------------------------------------------------------------------------------------------------
def test_gate_passes_on_three_good_days_and_names_each_failing_check(rt: Runtime) -> None:
    """Three good dates pass every check; each rule fails on its own measure, with the worst value; rows recorded
    against another champion version and failed dates do not count."""
    version = register_challenger(rt)
    assert _checks(check_gate(rt, version=version, model="churn"))["min_days"] == (False, 0)
    _store_rows(rt, version)
    gate = check_gate(rt, "churn", version)
    assert gate.passed and gate.dates == [day(0).isoformat(), day(-1).isoformat(), day(-2).isoformat()]
    assert [c.name for c in gate.checks] == ["min_days", "max_psi", "max_decision_change", "min_rank_correlation",
                                             "min_labelled_days", "max_quality_loss"]  # fmt: skip
    assert _checks(gate)["max_quality_loss"] == (True, None)  # no labels yet: nothing to lose

    _store_rows(rt, version, offsets=(-1,), psi=0.4, rank_correlation=-0.2, decision_change=0.5)
    _store_rows(rt, version, offsets=(0,), champion_quality={"auc": 0.8, "logloss": 0.4}, n_labelled=100,
                challenger_quality={"auc": 0.75, "logloss": 0.45})  # fmt: skip
    _store_rows(rt, version, offsets=(-3,), champion_version="older-champion")  # not against this champion
    _store_rows(rt, version, offsets=(-2,), status=FAILED, reason="its run failed", psi=None)
    _gate(rt, min_labelled_days=2)
    gate = check_gate(rt, "churn", version)
    assert _checks(gate) == {
        "min_days": (False, 2), "max_psi": (False, 0.4), "max_decision_change": (False, 0.5),
        "min_rank_correlation": (False, -0.2), "min_labelled_days": (False, 1), "max_quality_loss": (False, 0.05),
    }  # fmt: skip
    assert gate.failed_dates == [day(-2).isoformat()] and not gate.passed
    psi = next(c for c in gate.checks if c.name == "max_psi")
    assert day(-1).isoformat() in psi.detail and "<= 0.25" in psi.detail


# ---- promotion ---------------------------------------------------------------------------------------------------
def test_refused_by_the_gate_changes_nothing(rt: Runtime) -> None:
    """One compared date where the gate wants three: refused, naming the failing check; registry, Redis pointers
    and catalog as they were."""
    version, _champion, _challenger = _live_champion_and_loaded_challenger(rt)
    compare_date(rt, "churn", day(0))
    before = _state(rt)
    with pytest.raises(PromotionRefusedError, match=r"min_days: 1 dates compared .* needs >= 3.*--force"):
        promote_challenger(rt, "churn", version)
    assert _state(rt) == before
    with pytest.raises(UserError, match="not a challenger"):
        promote_challenger(rt, "churn", "no-such-version")


def test_promotion_flips_to_the_loaded_challenger_run_and_the_old_champion_stays_a_rollback_target(
    rt: Runtime,
) -> None:
    """Through the gate: the registry's production is the challenger, the live pointer names its already-loaded run
    (readers get exactly its Parquet scores), its challenger pointer is gone, the catalog records ``promote``;
    the catalog finds the live run under its challenger key; rollback returns to the old champion; restore after
    a FLUSHALL brings the promoted run back into the model's namespace."""
    version, champion, challenger = _live_champion_and_loaded_challenger(rt)
    previous = rt.registry.production_version("churn", "primary")
    compare_date(rt, "churn", day(0))
    _gate(rt, min_days=1, max_decision_change=1.0, max_quality_loss=1.0)
    report = promote_challenger(rt, "churn", version)
    assert (report.version, report.previous_version, report.run_id, report.previous_run_id) == (
        version, previous, challenger, champion)  # fmt: skip
    assert report.gate["passed"] and not report.forced and report.partition_date == day(0).isoformat()
    state = _state(rt)
    assert (state["production"], state["challengers"], state["live"], state["pointers"]) == (
        version, [], challenger, {})  # fmt: skip
    promoted = state["publications"][0]
    assert (promoted["action"], promoted["run_id"], promoted["previous_run_id"], promoted["forced"]) == (
        "promote", challenger, champion, False)  # fmt: skip
    assert promoted["detail"]["failing_checks"] == [] and promoted["detail"]["previous_version"] == previous
    assert rt.catalog.live_pointer("churn").run_id == challenger  # type: ignore[union-attr]
    assert rt.catalog.get_run(challenger).model == challenger_key("churn", version)
    assert {v.version: v.promoted_at is not None for v in rt.catalog.model_versions("churn")}[version]

    run = rt.catalog.get_run(challenger)
    table = pq.read_table(run.output_path, columns=["entity_id", "score"]).slice(0, 500)
    reader = ScoreReader.from_url(rt.redis_url)
    try:
        hits = reader.get_many("churn", table.column("entity_id").to_pylist())
    finally:
        reader.close()
    assert all(h is not None and h.run_id == challenger and h.model_version == version for h in hits)
    assert [h.score for h in hits if h] == pytest.approx(table.column("score").to_pylist(), abs=0)

    with ScoreStore.from_url(rt.redis_url) as store:
        store.client.flushall()
    restored = restore_model(rt, "churn")
    assert (restored.status, restored.run_id, restored.action) == ("restored", challenger, "loaded")
    with ScoreStore.from_url(rt.redis_url) as store:
        assert store.get_run("churn", challenger) is not None  # the model's namespace, not churn@<version>
    back = rollback_model(rt, "churn")
    assert (back["run_id"], back["previous_run_id"]) == (champion, challenger)


def test_forced_promotion_is_recorded_with_its_failing_checks(rt: Runtime) -> None:
    version, _champion, challenger = _live_champion_and_loaded_challenger(rt)
    compare_date(rt, "churn", day(0))
    report = promote_challenger(rt, "churn", version, force=True)
    assert report.forced and not report.gate["passed"] and report.run_id == challenger
    promoted = rt.catalog.publications("churn")[0]
    assert promoted["action"] == "promote" and promoted["forced"] is True
    assert "min_days" in {c["name"] for c in promoted["detail"]["failing_checks"]}
    assert rt.registry.production_version("churn", "primary") == version


def test_no_loaded_challenger_run_is_refused_even_forced(rt: Runtime) -> None:
    """A challenger whose shadow run never reached Redis has nothing to make live: refused before anything
    changes, --force or not."""
    version = register_challenger(rt)
    champion = score_partition(rt, "churn", day(0), device="cpu")
    publish_run(rt, "churn", champion.run_id)
    _store_rows(rt, version)
    before = _state(rt)
    with pytest.raises(PromotionRefusedError, match="no run loaded behind its pointer"):
        promote_challenger(rt, "churn", version, force=True)
    assert _state(rt) == before


def test_promotion_racing_a_nightly_publish_one_wins_nothing_half_visible(rt: Runtime) -> None:
    """Live: the champion's run of day(-1). At once: the nightly publish of the champion's run of day(0), the
    promotion of the challenger's run of day(0), and a reader. Whichever flips last is live; the catalog's live
    pointer names it; the registry agrees with the promotion's outcome; every read answers from one whole run."""
    version = register_challenger(rt)
    old = score_partition(rt, "churn", day(-1), device="cpu")
    publish_run(rt, "churn", old.run_id)
    [loaded] = shadow(rt, "churn", day(0), device="cpu")
    challenger = loaded["run_id"]
    nightly = score_partition(rt, "churn", day(0), device="cpu").run_id
    _store_rows(rt, version)
    ids = pq.read_table(old.output_path, columns=["entity_id"]).column("entity_id").to_pylist()[:300]
    rt_publish, rt_promote = Runtime.from_settings(rt.settings), Runtime.from_settings(rt.settings)
    barrier, done = threading.Barrier(3), threading.Event()
    outcome: dict[str, Any] = {}
    seen: set[str] = set()

    def run(name: str, fn: Any) -> None:
        barrier.wait()
        try:
            outcome[name] = fn()
        except Exception as exc:  # the outcome is asserted below
            outcome[name] = exc

    def read() -> None:
        reader = ScoreReader.from_url(rt.redis_url, refresh_s=0.0)
        barrier.wait()
        try:
            while not done.is_set():
                hits = reader.get_many("churn", ids)
                runs = {h.run_id for h in hits if h is not None}
                assert len(runs) == 1 and all(h is not None for h in hits), runs
                seen.update(runs)
        finally:
            reader.close()

    threads = [
        threading.Thread(target=run, args=("publish", lambda: publish_run(rt_publish, "churn", nightly))),
        threading.Thread(target=run, args=("promote", lambda: promote_challenger(rt_promote, "churn", version))),
    ]
    reader = threading.Thread(target=read)
    for t in [*threads, reader]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    rt_publish.close()
    rt_promote.close()

    state = _state(rt)
    assert not isinstance(outcome["publish"], Exception), outcome
    assert state["live"] in (nightly, challenger)
    assert rt.catalog.live_pointer("churn").run_id == state["live"]  # type: ignore[union-attr]
    assert seen <= {old.run_id, nightly, challenger}
    if isinstance(outcome["promote"], Exception):  # the nightly run went live first and the promotion lost
        assert isinstance(outcome["promote"], PromotionRefusedError | UserError), outcome
        assert (state["production"], state["challengers"]) != (version, [])
    else:
        assert (state["production"], state["challengers"], state["pointers"]) == (version, [], {})
        assert [p["action"] for p in state["publications"]].count("promote") == 1


def test_the_command_line_compares_refuses_and_forces(rt: Runtime) -> None:
    """``prescore compare`` compares a date again and lists comparisons and gates (table or JSON); ``prescore
    promote`` refuses in one line (exit 1) while the gate is not met, and ``--force --json`` promotes."""
    import json

    from typer.testing import CliRunner

    from jobs.cli import app

    version, _champion, challenger = _live_champion_and_loaded_challenger(rt)
    s = rt.settings
    env = {"PRESCORE_HOME": str(s.home), "PRESCORE_MODELS_FILE": str(s.models_file), "PRESCORE_REDIS_URL": rt.redis_url,
           "PRESCORE_DASK_LOCAL": "threads", "COLUMNS": "200"}  # fmt: skip
    runner = CliRunner()
    table = runner.invoke(app, ["compare", "--model", "churn", "--date", day(0).isoformat()], env=env)
    assert table.exit_code == 0, table.output
    assert version in table.output and "promotion gate" in table.output and "min_days" in table.output
    listed = runner.invoke(app, ["compare", "--model", "churn", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    payload = json.loads(listed.stdout)
    [row] = payload["comparisons"]
    assert (row["challenger_version"], row["status"], row["partition_date"]) == (version, COMPARED, day(0).isoformat())
    assert payload["gates"][0]["passed"] is False

    refused = runner.invoke(app, ["promote", "--model", "churn", "--version", version], env=env)
    assert refused.exit_code == 1 and "refused by its gate" in refused.output and "Traceback" not in refused.output
    assert rt.registry.production_version("churn", "primary") != version
    forced = runner.invoke(app, ["promote", "--model", "churn", "--version", version, "--force", "--json"], env=env)
    assert forced.exit_code == 0, forced.output
    report = json.loads(forced.stdout)
    assert (report["run_id"], report["forced"], report["version"]) == (challenger, True, version)
