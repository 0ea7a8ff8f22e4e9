"""``prescore demo``: the whole product on embedded defaults, narrated step by step.

Uses ``PRESCORE_HOME`` (default ``.prescore/``), the embedded models file, and the embedded Redis unless
``PRESCORE_REDIS_URL`` is set. Each step is a call into the same functions the CLI and DAGs use.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from jobs.runtime import Runtime
from jobs.synth import synth
from jobs.train import train_model

DEMO_MODEL = "churn"


def run_demo(entities: int, days: int, say: Callable[[str], None]) -> None:
    rt = Runtime.from_settings()
    spec = rt.config.model(DEMO_MODEL)
    end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    t0 = time.perf_counter()
    try:
        say(f"[1/3] synthesising {entities:,} entities x {days} days of {spec.feature_set} under {rt.home}")
        report = synth(
            rt.home, feature_set=spec.feature_set, spec=rt.config.feature_set(spec.feature_set),
            entities=entities, days=days, end_date=end, seed=rt.settings.seed,
        )  # fmt: skip
        say(f"      {report.rows:,} rows at {report.rows_per_s:,.0f} rows/s")
        say(f"[2/3] training {DEMO_MODEL}: primary (200 trees, depth 8) and fallback (30 trees, depth 4)")
        trained = train_model(rt, DEMO_MODEL)
        for r in trained.results:
            say(f"      {r.kind:8s} {r.version} hold-out AUC {r.metrics['auc']:.4f} promoted={r.promoted}")
        say("[3/3] redis: " + rt.redis_url + "  catalog: " + rt.settings.resolved_catalog_url)
        say(f"done in {time.perf_counter() - t0:.0f}s. Next: `prescore status`; stop Redis: `prescore redis stop`")
    finally:
        rt.close()
