"""A loader process SIGKILLed while it loads a second run, with a reader reading the whole time.

Complements ``tests/warehouse/store/test_score_store.py::test_loader_killed_mid_load_is_cleaned_up`` (a forked loader,
reads checked after the kill): here the loader is a separate interpreter, and a concurrent reader thread checks
every ``get_many`` before, during and after the kill for a half-visible run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from warehouse.store import ScoreReader, ScoreStore
from warehouse.store.keys import encode_score, store_key

MODEL = "churn"
ROOT = Path(__file__).resolve().parents[2]
FIRST_IDS = [f"cust-{i:06d}" for i in range(5_000)]
NEW_IDS = [f"new-{i:06d}" for i in range(50)]  # only the second run has these: a hit on one is half-visible
SECOND_SCORE = 2.0  # every score of the second run (no score of the first run is >= 1)

# The loader: creates run "second" for 1M rows and writes them 2,000 per batch (the same ids with new scores,
# then new ids), pausing between batches as a loader fed by a slow source would; it would then finalize and
# publish, but is killed long before.
LOADER = f"""
import sys, time
from datetime import UTC, datetime, timedelta
import numpy as np
from warehouse.store import ScoreStore

store = ScoreStore.from_url(sys.argv[1])
rows = 1_000_000
store.create_run("{MODEL}", "second", "v2", datetime.now(UTC) - timedelta(hours=1), rows)
writer = store.writer("{MODEL}", "second")
ids = [f"cust-{{i:06d}}" for i in range({len(FIRST_IDS)})] + [f"new-{{i:06d}}" for i in range({len(NEW_IDS)})]
ids += [f"more-{{i:07d}}" for i in range(rows)]
for start in range(0, rows, 2_000):
    writer.write_batch(ids[start : start + 2_000], np.full(2_000, {SECOND_SCORE}, np.float32))
    time.sleep(0.01)
store.finalize_run("{MODEL}", "second")
store.publish("{MODEL}", "second")
"""


def test_loader_killed_mid_publish_with_a_concurrent_reader(redis_url: str, observe: Callable[..., None]) -> None:
    """Run ``first`` is published; a loader process writes run ``second`` and is SIGKILLed at >= 20k rows. A reader
    thread calling ``get_many`` throughout sees only ``first`` (exact scores, misses for ids only ``second`` has):
    0 half-visible reads. ``first`` stays current; ``cleanup`` keeps the orphan while its heartbeat is fresh, then
    removes it and every key of it."""
    scores = np.random.default_rng(0).random(len(FIRST_IDS), dtype=np.float32)
    expected = dict(zip(FIRST_IDS, (encode_score(s) for s in scores.tolist()), strict=True))
    with ScoreStore.from_url(redis_url) as store:
        store.create_run(MODEL, "first", "v1", datetime.now(UTC) - timedelta(hours=2), len(FIRST_IDS))
        store.writer(MODEL, "first").write_batch(FIRST_IDS, scores)
        store.finalize_run(MODEL, "first")
        store.publish(MODEL, "first")

    sample = FIRST_IDS[::50] + NEW_IDS  # 100 published ids and 50 that only the second run holds
    stop = threading.Event()
    reads, half_visible, problems = [0], [0], list[str]()

    def read_continuously() -> None:
        reader = ScoreReader.from_url(redis_url, refresh_s=0.05)  # re-read the pointer often: see any flip
        try:
            while not stop.is_set():
                hits = reader.get_many(MODEL, sample)
                wrong = [
                    (entity, hit)
                    for entity, hit in zip(sample, hits, strict=True)
                    if (hit is None) != (entity not in expected)
                    or (hit is not None and (hit.run_id != "first" or encode_score(hit.score) != expected[entity]))
                ]
                reads[0] += 1
                if wrong:
                    half_visible[0] += 1
                    problems.append(repr(wrong[:3]))
        finally:
            reader.close()

    thread = threading.Thread(target=read_continuously, daemon=True)
    thread.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loader = subprocess.Popen([sys.executable, "-c", LOADER, redis_url], cwd=ROOT, env=env, start_new_session=True)
    store = ScoreStore.from_url(redis_url)
    try:
        try:
            deadline = time.monotonic() + 30
            loaded = 0
            while loaded < 20_000 and time.monotonic() < deadline and loader.poll() is None:
                run = store.get_run(MODEL, "second")
                loaded = run.loaded_rows if run else 0
                time.sleep(0.02)
            assert loader.poll() is None and loaded >= 20_000, (
                f"loader exited ({loader.returncode}) or stalled at {loaded}"
            )
            reads_before_kill = reads[0]
            os.kill(loader.pid, signal.SIGKILL)
            assert loader.wait(10) == -signal.SIGKILL
            at_kill = store.get_run(MODEL, "second")
            assert at_kill is not None
            time.sleep(0.5)  # keep reading after the kill
        finally:
            if loader.poll() is None:
                os.kill(loader.pid, signal.SIGKILL)
                loader.wait(10)
            stop.set()
            thread.join(10)

        assert reads_before_kill > 0 and reads[0] > reads_before_kill
        assert half_visible[0] == 0, problems[:3]
        current = store.current_run(MODEL)
        assert current is not None and current.run_id == "first"
        orphan_keys = len(list(store.client.scan_iter(match=store_key(MODEL, "bucket", "second", "*"))))
        assert orphan_keys > 0
        assert store.cleanup(MODEL, orphan_after_s=30).removed == {}  # heartbeat still fresh: maybe alive
        time.sleep(0.6)
        report = store.cleanup(MODEL, orphan_after_s=0.5)
        assert list(report.removed) == ["second"] and "abandoned loader" in report.removed["second"]
        assert list(store.client.scan_iter(match=store_key(MODEL, "bucket", "second", "*"))) == []
        assert store.get_run(MODEL, "second") is None
        reader = ScoreReader.from_url(redis_url)
        try:
            after = reader.get_many(MODEL, FIRST_IDS)
        finally:
            reader.close()
        assert all(h is not None and h.run_id == "first" for h in after)
        assert [encode_score(h.score) for h in after if h] == [expected[e] for e in FIRST_IDS]
    finally:
        store.close()
    observe(
        "loader_kill",
        reads=reads[0],
        reads_during_load=reads_before_kill,
        half_visible_reads=half_visible[0],
        entities_per_read=len(sample),
        rows_loaded_at_kill=at_kill.loaded_rows,
        orphan_bucket_keys=orphan_keys,
        keys_removed_by_cleanup=report.keys_deleted,
        current_run_after="first",
    )
