"""The freshness contract's schedule arithmetic: ``next_run`` agrees with croniter (Airflow's own cron library)
on every schedule form the models file may use, and ``contract`` says late exactly past the promise."""

from __future__ import annotations

import datetime as dt

import pytest

from warehouse.schedule import contract, last_interval, next_run, parse

SCHEDULES = ["0 2 * * *", "*/15 * * * *", "5,35 8-18 * * mon-fri", "0 0 1 * *", "0 0 13 * 5", "0 6 * * 7",
             "30 1 1-7 jan,jul *", "0 */6 * * *", "10-50/20 3 * * 0-2", "@hourly", "@daily", "@weekly", "@monthly",
             "@yearly"]  # fmt: skip


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_next_run_agrees_with_croniter(schedule: str) -> None:
    croniter = pytest.importorskip("croniter").croniter
    start = dt.datetime(2026, 2, 27, 23, 59, 30, tzinfo=dt.UTC)
    for step in range(0, 400 * 24 * 60, 997):  # a year and more, at irregular minutes
        after = start + dt.timedelta(minutes=step)
        expected = croniter(schedule, after).get_next(dt.datetime)
        assert next_run(schedule, after) == expected, (schedule, after)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_last_interval_is_the_one_airflow_gives_a_manual_run(schedule: str) -> None:
    """A manual run without a logical date has no data interval in Airflow 3: the nightly DAG scores the one
    Airflow's own timetable infers for a manual run at that time (``infer_manual_data_interval``)."""
    pendulum = pytest.importorskip("pendulum")
    timetable = pytest.importorskip("airflow.timetables.interval").CronDataIntervalTimetable(schedule, "UTC")
    start = dt.datetime(2026, 2, 27, 23, 59, 30, tzinfo=dt.UTC)
    for step in [*range(0, 400 * 24 * 60, 9973), 3, 121]:  # a year and more, at irregular minutes
        at = start + dt.timedelta(minutes=step)
        inferred = timetable.infer_manual_data_interval(run_after=pendulum.instance(at))
        assert last_interval(schedule, at) == (inferred.start, inferred.end), (schedule, at)
    on_the_minute = dt.datetime(2026, 3, 2, 2, 0, 40, tzinfo=dt.UTC)  # "0 2 * * *" fired 40 s ago
    assert last_interval("0 2 * * *", on_the_minute) == (
        on_the_minute.replace(day=1, second=0),
        on_the_minute.replace(second=0),
    )


@pytest.mark.parametrize("schedule", ["@once", "", "0 2 * *", "61 * * * *", "0 2 * * funday", "* * 0 * *", None,
                                      "*/0 * * * *", "30 2 30 2 *"])  # fmt: skip
def test_what_is_not_a_cron_schedule_has_no_next_run(schedule: str | None) -> None:
    assert next_run(schedule, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) is None
    assert last_interval(schedule, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) is None
    assert schedule == "30 2 30 2 *" or parse(schedule) is None  # February 30th parses but never fires


def test_the_contract_is_late_only_past_the_promise() -> None:
    now = dt.datetime(2026, 12, 2, 5, 0, tzinfo=dt.UTC)
    on_time = contract("0 2 * * *", 3600.0, now - dt.timedelta(seconds=3600), now)
    assert on_time == {"promise_s": 3600.0, "age_s": 3600.0, "late": False,
                       "next_run_at": dt.datetime(2026, 12, 3, 2, 0, tzinfo=dt.UTC)}  # fmt: skip
    assert contract("0 2 * * *", 3600.0, now - dt.timedelta(seconds=3601), now)["late"] is True
    assert contract("@once", 3600.0, None, now) == {"promise_s": 3600.0, "age_s": None, "late": None,
                                                    "next_run_at": None}  # fmt: skip
