"""``ScoreStore`` as a whole against a real redis-server: every part reads the one injected clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.warehouse.store.sample_runs import MODEL, load_run, scores_for, ten_digit_ids
from warehouse.errors import StoreError
from warehouse.store import ScoreStore


def test_future_check_and_retention_ages_read_the_injected_clock(redis_url: str) -> None:
    """The store reads time only through its clock: an as_of one day ahead of it is refused (whatever the
    calendar says), and a rolled-away run waits out the grace period by that clock, not the wall's."""
    now = [time.time() - 10 * 86_400.0]  # the store's clock, ten days behind the wall
    skewed = ScoreStore.from_url(redis_url, socket_timeout=2.0, clock=lambda: now[0])
    try:
        with pytest.raises(StoreError, match="in the future"):
            skewed.create_run(MODEL, "ahead", "v1", now[0] + 86_400.0, 1)
        ids = ten_digit_ids(50)
        load_run(skewed, "r1", ids, scores_for(50, 1), as_of=datetime.fromtimestamp(now[0] - 3600, UTC))
        load_run(skewed, "r2", ids, scores_for(50, 2), as_of=datetime.fromtimestamp(now[0] - 60, UTC))
        skewed.rollback(MODEL)  # r2 is retired at the store's "now"
        assert skewed.cleanup(MODEL, keep_runs=0, grace_s=600.0).removed == {}
        now[0] += 601.0
        assert set(skewed.cleanup(MODEL, keep_runs=0, grace_s=600.0).removed) == {"r2"}
    finally:
        skewed.close()
