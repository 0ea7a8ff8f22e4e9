"""The champion/challenger rollout end to end through Airflow: the nightly DAG shadow-scores and compares two
challengers for three dates, ``prescore_promote`` refuses one before its gate is met, promotes it once it is, and
promotes the other only with ``force`` (recorded). ``dag.test()`` against the real Redis fixture and a fresh SQLite
metadata DB; the logic itself is tested in ``tests/jobs/test_compare.py`` and ``tests/jobs/test_promote.py``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.runtime import Runtime
from tests.dags.test_dag_run import current_run_id, task_result, task_states, tries
from tests.support.challenger import register_challenger
from tests.support.clock import day
from warehouse.catalog import COMMITTED, COMPARED
from warehouse.rollout import challenger_key
from warehouse.store import ScoreStore

pytestmark = [pytest.mark.filterwarnings("ignore::starlette.exceptions.StarletteDeprecationWarning")]

MODEL = "churn"
NIGHTLY = f"prescore_score__{MODEL}"
# loose enough for the test's small challenger (15 trees on one day), strict on agreement and on labelled dates
GATE = {"min_days": 3, "max_psi": 0.25, "max_decision_change": 0.2, "min_rank_correlation": 0.8,
        "min_labelled_days": 3, "max_quality_loss": 0.1}  # fmt: skip


def logical(partition: dt.date) -> dt.datetime:
    """The logical date whose nightly run scores ``partition`` (its interval closes the next day at 02:00)."""
    return dt.datetime.combine(partition + dt.timedelta(days=1), dt.time(2, 0), tzinfo=dt.UTC)


@pytest.fixture
def rt(prescore_env: dict[str, Any]) -> Iterator[Runtime]:
    """The models file with ``GATE``; a Runtime on the task processes' environment (to set up and inspect)."""
    models_file = prescore_env["models_file"]
    raw = yaml.safe_load(models_file.read_text())
    raw["models"][MODEL]["promotion"] = GATE
    models_file.write_text(yaml.safe_dump(raw))
    runtime = Runtime.from_settings()
    yield runtime
    runtime.close()


def _challenger_run(rt: Runtime, version: str, partition: dt.date) -> str:
    [run] = rt.catalog.runs(challenger_key(MODEL, version), partition_date=partition, status=COMMITTED)
    return run.run_id


def _pointers(redis_url: str) -> dict[str, str]:
    with ScoreStore.from_url(redis_url) as store:
        return store.challengers(MODEL)


def test_shadow_compare_and_promote_through_the_gate(
    airflow_db: Path, prescore_env: dict[str, Any], load_dags: Any, rt: Runtime
) -> None:
    redis_url = prescore_env["redis_url"]
    good, noisy = register_challenger(rt), register_challenger(rt, noise=True, seed=2)
    champion = rt.registry.production_version(MODEL, "primary")
    bag = load_dags()
    nightly, promote = bag.dags[NIGHTLY], bag.dags["prescore_promote"]

    def night(offset: int) -> Any:
        dr = nightly.test(logical_date=logical(day(offset)))
        assert dr.state == "success", task_states(dr)
        assert set(task_states(dr).values()) == {"success"}, task_states(dr)
        return dr

    # two nights: both challengers shadow-scored, loaded behind their pointers and compared with labels
    for offset in (-2, -1):
        dr = night(offset)
        compared = task_result(dr, "compare")
        assert compared["failed"] == [] and len(compared["comparisons"]) == 2
    assert set(_pointers(redis_url)) == {good, noisy}

    # not yet: two dates where the gate wants three; refused at once (not retried), nothing changed
    live = current_run_id(redis_url)
    refused = promote.test(run_conf={"model": MODEL, "version": good})
    states = task_states(refused)
    assert refused.state == "failed" and states == {"check_gate": "success", "promote": "failed"}, states
    assert tries(refused, "promote") == 1
    gate = task_result(refused, "check_gate")
    assert not gate["passed"]
    assert [c["name"] for c in gate["checks"] if not c["passed"]] == ["min_days", "min_labelled_days"]
    assert rt.registry.production_version(MODEL, "primary") == champion
    assert current_run_id(redis_url) == live and set(_pointers(redis_url)) == {good, noisy}
    assert "promote" not in {p["action"] for p in rt.catalog.publications(MODEL)}

    # the third night meets the gate: promoted, the live pointer on the challenger's already-loaded run of day(0)
    night(0)
    rows = rt.catalog.comparisons(MODEL, challenger_version=good)
    assert [r.partition_date for r in rows] == [day(0), day(-1), day(-2)]
    assert all(r.status == COMPARED and r.champion_quality and r.challenger_quality for r in rows)
    champion_live = current_run_id(redis_url)
    promoted = promote.test(run_conf={"model": MODEL, "version": good})
    assert promoted.state == "success", task_states(promoted)
    result = task_result(promoted, "promote")
    challenger_run = _challenger_run(rt, good, day(0))
    assert (result["run_id"], result["previous_run_id"], result["forced"]) == (challenger_run, champion_live, False)
    assert rt.registry.production_version(MODEL, "primary") == good
    assert rt.registry.challengers(MODEL) == [noisy] and set(_pointers(redis_url)) == {noisy}
    assert current_run_id(redis_url) == challenger_run
    record = rt.catalog.publications(MODEL)[0]
    assert (record["action"], record["run_id"], record["forced"]) == ("promote", challenger_run, False)

    # the noisy challenger has no comparison with the new champion: only --force promotes it, and it is recorded
    forced = promote.test(run_conf={"model": MODEL, "version": noisy, "force": True})
    assert forced.state == "success", task_states(forced)
    record = rt.catalog.publications(MODEL)[0]
    assert (record["action"], record["run_id"], record["forced"]) == ("promote", _challenger_run(rt, noisy, day(0)),
                                                                      True)  # fmt: skip
    failing = {c["name"] for c in record["detail"]["failing_checks"]}
    assert {"min_days", "min_labelled_days"} <= failing
    assert rt.registry.production_version(MODEL, "primary") == noisy and _pointers(redis_url) == {}
