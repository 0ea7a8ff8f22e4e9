"""When a model's next scheduled run is due, and whether its live scores are late: the freshness contract that
``/v1/models`` and ``prescore status`` state.

``next_run(schedule, after)``: the first time strictly after ``after`` (UTC) that a model's ``schedule`` fires — a
five-field cron expression (minute hour day-of-month month day-of-week; ``*``, lists, ``a-b`` ranges, ``*/n`` and
``a-b/n`` steps, day-of-week 0–7 with 0 and 7 Sunday, three-letter month and day names) or a preset (``@hourly``,
``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``). As in cron (and Airflow), when
both day fields are restricted a day matches either. ``None`` for a schedule it cannot read (an Airflow timetable,
``@once``, ``None``): the contract then shows no next run rather than a wrong one.

``contract(...)`` puts the promise (``max_age_s``), the live run's age, the next run and ``late`` (the live scores
are older than the promise; ``None`` without a live run) into one mapping. Pure: the caller passes the time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES = {3: {m: i for i, m in enumerate(_MONTHS, 1)}, 4: {d: i for i, d in enumerate(_DAYS)}}
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
MAX_YEARS = 5  # "30 2 30 2 *" (February 30th) never fires: give up after this many years


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day-of-month is *
    any_weekday: bool  # day-of-week is *

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        by_date, by_weekday = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return by_date and by_weekday
        return by_date or by_weekday


def _field(text: str, index: int) -> frozenset[int]:
    low, high = _BOUNDS[index]
    names = _NAMES.get(index, {})
    values: set[int] = set()
    for part in text.lower().split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step_text!r}")
        if body == "*":
            start, end = low, high
        else:
            first, _, last = body.partition("-")
            start = names[first] if first in names else int(first)
            end = (names[last] if last in names else int(last)) if last else (high if step_text else start)
        if not low <= start <= end <= high:
            raise ValueError(f"{part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:  # 7 is Sunday too
        values = (values - {7}) | {0}
    return frozenset(values)


def parse(schedule: str | None) -> Cron | None:
    """The cron expression (or preset) ``schedule``, or ``None`` when it is not one."""
    if not isinstance(schedule, str):
        return None
    text = PRESETS.get(schedule.strip().lower(), schedule)
    parts = text.split()
    if len(parts) != 5:
        return None
    try:
        fields = [_field(part, i) for i, part in enumerate(parts)]
    except ValueError:
        return None
    minutes, hours, days, months, weekdays = fields
    return Cron(minutes, hours, days, months, weekdays, any_day=parts[2] == "*", any_weekday=parts[4] == "*")


def _firings(cron: Cron, start: dt.datetime, step: int) -> Iterator[dt.datetime]:
    """The firings of ``cron`` from the minute ``start`` (UTC, included) on: forward for ``step`` 1, backward for
    -1; for at most ``MAX_YEARS``."""
    day = start.date()
    times = sorted(((h, m) for h in cron.hours for m in cron.minutes), reverse=step < 0)
    for _ in range(366 * MAX_YEARS):
        if cron.day_matches(day):
            for hour, minute in times:
                at = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)
                if (at - start) * step >= dt.timedelta(0):
                    yield at
        day += dt.timedelta(days=step)


def next_run(schedule: str | None, after: dt.datetime) -> dt.datetime | None:
    """The first firing of ``schedule`` strictly after ``after`` (aware, UTC), or ``None`` (see the module doc)."""
    cron = parse(schedule)
    if cron is None:
        return None
    start = after.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return next(_firings(cron, start, 1), None)


def last_interval(schedule: str | None, at: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """The last interval ``[start, end)`` between two firings of ``schedule`` that has closed by ``at`` (a firing
    at ``at``'s minute has happened), or ``None``: the data interval Airflow gives a manual run at ``at``."""
    cron = parse(schedule)
    if cron is None:
        return None
    backward = _firings(cron, at.astimezone(dt.UTC).replace(second=0, microsecond=0), -1)
    end, start = next(backward, None), next(backward, None)
    return None if start is None or end is None else (start, end)


def contract(schedule: str | None, max_age_s: float, as_of: dt.datetime | None, now: dt.datetime) -> dict[str, Any]:
    """``promise_s``, ``age_s`` (None without a live run), ``late`` (age beyond the promise; None without a run)
    and ``next_run_at`` (None for a schedule ``parse`` cannot read)."""
    age = None if as_of is None else max(0.0, (now - as_of).total_seconds())
    upcoming = next_run(schedule, now)
    return {
        "promise_s": max_age_s,
        "age_s": None if age is None else round(age, 3),
        "late": None if age is None else age > max_age_s,
        "next_run_at": upcoming,
    }
