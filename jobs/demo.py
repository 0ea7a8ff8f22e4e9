"""``prescore demo``: the whole product on embedded defaults, narrated step by step.

Uses ``PRESCORE_HOME`` (default ``.prescore/``), the embedded models file, and the embedded Redis unless
``PRESCORE_REDIS_URL`` is set. Each step calls the same functions the CLI and the DAGs use.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pyarrow.parquet as pq

from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition
from jobs.synth import synth
from jobs.train import train_model
from warehouse.score_store import ScoreReader

DEMO_MODEL = "churn"


def run_demo(entities: int, days: int, say: Callable[[str], None]) -> dict[str, object]:
    """Run every step; return what a caller (``serve`` afterwards, tests) needs: model, date, sample ids."""
    rt = Runtime.from_settings()
    spec = rt.config.model(DEMO_MODEL)
    fs = spec.feature_set
    end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    t0 = time.perf_counter()
    try:
        say(f"[1/5] synthesising {entities:,} entities x {days} days of {fs} under {rt.home}")
        report = synth(rt.home, feature_set=fs, spec=rt.config.feature_set(fs), entities=entities, days=days,
                       end_date=end, seed=rt.settings.seed)  # fmt: skip
        say(f"      {report.rows:,} rows at {report.rows_per_s:,.0f} rows/s")
        say(f"[2/5] training {DEMO_MODEL}: primary (200 trees, depth 8) and fallback (30 trees, depth 4)")
        for r in train_model(rt, DEMO_MODEL).results:
            say(f"      {r.kind:8s} {r.version} hold-out AUC {r.metrics['auc']:.4f} promoted={r.promoted}")
        say(f"[3/5] nightly scoring of {end} on a local Dask cluster (contract check, stage, atomic commit)")
        run = score_partition(rt, DEMO_MODEL, end, device="auto")
        say(f"      run {run.run_id}: {run.rows_out:,} rows at {run.rows_per_s:,.0f} rows/s -> {run.output_path}")
        if run.dashboard:
            say(f"      (the Dask dashboard was at {run.dashboard} while the job ran)")
        say(f"[4/5] publishing to Redis at {rt.redis_url} (parallel load, verify, quality gate, pointer flip)")
        pub = publish_run(rt, DEMO_MODEL, run.run_id, force=True)
        say(f"      current run {pub.run_id} (previous {pub.previous_run_id}); {pub.rows:,} entities")
        sample = pq.read_table(run.output_path, columns=["entity_id", "score"]).slice(0, 3)
        ids = sample.column("entity_id").to_pylist()
        say("[5/5] lookups through the store reader:")
        reader = ScoreReader.from_url(rt.redis_url)
        try:
            for entity, hit in zip([*ids, "new-entity-0001"], reader.get_many(DEMO_MODEL, [*ids, "new-entity-0001"]),
                                   strict=True):  # fmt: skip
                say(f"      {entity}: " + (f"{hit.score:.4f} from run {hit.run_id}" if hit else "miss"))
        finally:
            reader.close()
        say(f"done in {time.perf_counter() - t0:.0f}s. `prescore status` shows the state; "
            "`prescore redis stop` stops the embedded Redis.")  # fmt: skip
        return {"model": DEMO_MODEL, "date": end.isoformat(), "ids": ids, "run_id": run.run_id}
    finally:
        rt.close()
