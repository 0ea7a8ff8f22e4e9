"""The reader ages scores by its injected clock, never by the calendar: the same published run is fresh, stale
or expired depending only on the clock the app is given."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from online.settings import OnlineSettings
from tests.online.conftest import MODEL, now_utc, serve

pytestmark = pytest.mark.asyncio
DAY_S = 86_400.0


@pytest.mark.parametrize(
    ("ahead_s", "source", "stale", "state"),
    [
        (0.0, "precomputed", False, "fresh"),
        (2 * DAY_S, "precomputed", True, "stale"),  # past max_age (36 h), within hard max (7 d)
        (8 * DAY_S, "default", False, "expired"),  # past hard max: the safe default
    ],
)
async def test_answers_age_by_the_injected_clock(
    make_settings: Callable[..., OnlineSettings], publish: Callable[..., str], ahead_s, source, stale, state
) -> None:
    publish({"a": 0.8}, now_utc() - timedelta(hours=1))
    offset = ahead_s
    async with serve(make_settings(), clock=lambda: time.time() + offset) as (_, client):
        body = (await client.get(f"/v1/scores/{MODEL}/a")).json()
        models = (await client.get("/v1/models")).json()["models"]
    assert (body["source"], body["stale"]) == (source, stale)
    if source == "precomputed":
        assert body["age_s"] == pytest.approx(3600 + ahead_s, abs=60)
    [entry] = [m for m in models if m["model"] == MODEL]
    assert entry["state"] == state
    assert entry["age_s"] == pytest.approx(3600 + ahead_s, abs=60)
    # the freshness contract: late once older than the promise (max_age_s 36 h), the next run by the same clock
    assert entry["promise_s"] == 129_600 and entry["late"] is (state != "fresh")
    from datetime import UTC, datetime

    from warehouse.schedule import next_run

    clock_now = datetime.fromtimestamp(time.time() + offset, UTC)
    next_at = datetime.fromisoformat(entry["next_run_at"].replace("Z", "+00:00"))
    assert next_at == next_run("0 2 * * *", clock_now) or next_at == next_run(
        "0 2 * * *", clock_now - timedelta(minutes=1)
    )
    assert timedelta(0) < next_at - clock_now <= timedelta(days=1)
