"""A drain that finds answers trimmed before it records the gap; ``jobs.monitor`` counts it on the days it spans."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import redis

from jobs.monitor import lost_answers
from jobs.prediction_drain import GAP_GLOB, LOG_DIR, drain_predictions
from tests.jobs.test_prediction_drain import DAY_MS, T0, add
from warehouse.prediction_stream import STREAM_KEY, side_keys


def test_trimmed_answers_leave_a_gap_file_the_monitor_counts(redis_url: str, tmp_path: Path) -> None:
    """Entries drained, then three entries trimmed (the writer's script deletes them and counts their records),
    then a drain: it writes a gap between the previous watermark and its first entry; the monitor counts it for
    that day and not for the day before. A drain without loss writes none."""
    client = redis.Redis.from_url(redis_url)
    add(client, 2, 3, first_ms=T0)
    assert drain_predictions(redis_url, tmp_path).lost_to_trimming == 0
    assert list((tmp_path / LOG_DIR).glob(GAP_GLOB)) == []
    add(client, 5, 4, first_ms=T0 + 1000)
    client.xdel(STREAM_KEY, f"{T0 + 1000}-0", f"{T0 + 1001}-0", f"{T0 + 1002}-0")  # what trimming does
    client.set(side_keys()[1], 12)
    report = drain_predictions(redis_url, tmp_path)
    assert report.lost_to_trimming == 12 and report.records == 8
    [gap] = (tmp_path / LOG_DIR).glob(GAP_GLOB)
    assert json.loads(gap.read_text()) == {"lost": 12, "after": f"{T0 + 1}-0", "before": f"{T0 + 1003}-0"}
    day = dt.datetime.fromtimestamp(T0 / 1000, dt.UTC).date()
    assert gap.parent.name == f"dt={day}"
    assert lost_answers(tmp_path / LOG_DIR, day) == 12
    assert lost_answers(tmp_path / LOG_DIR, day - dt.timedelta(days=1)) == 0
    assert lost_answers(tmp_path / LOG_DIR, dt.datetime.fromtimestamp((T0 + DAY_MS) / 1000, dt.UTC).date()) == 0
    client.close()
