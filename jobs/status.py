"""``prescore status``: the state of each model as plain data — feature partitions, production model versions
with their hashes (and a newer version registered but not promoted), challengers with their hashes and runs, the
rollout, recent runs and failures, publications, and what the Redis store serves."""

from __future__ import annotations

from typing import Any

from jobs.challengers import challenger_status
from jobs.publish import store_status
from jobs.restore import check_model
from jobs.runtime import Runtime
from warehouse.datasets import features as fstore
from warehouse.errors import StoreUnavailableError
from warehouse.registry import KINDS
from warehouse.store import ScoreStore


def model_status(rt: Runtime, model: str) -> dict[str, Any]:
    """Everything ``prescore status`` shows for one model, as plain data (Redis unreachable → ``store.error``;
    ``store.health``: whether the scores the catalog says are live are in Redis, ``jobs.restore.check_model``)."""
    spec = rt.config.model(model)
    prod: dict[str, Any] = {}
    for kind in KINDS:
        version = rt.registry.production_version(model, kind)
        registered = rt.registry.versions(model, kind)
        newest = registered[-1] if registered and registered[-1] != version else None  # registered, not promoted
        if version is None:
            prod[kind] = {"version": None, "newest_registered": newest} if newest else None
            continue
        manifest = rt.registry.manifest(model, kind, version)
        prod[kind] = {"version": version, "sha256": manifest.sha256, "metrics": manifest.metrics,
                      "newest_registered": newest}  # fmt: skip
    fs = rt.config.feature_set(spec.feature_set)
    runs = rt.catalog.runs(model, limit=10)
    try:
        store: dict[str, Any] = store_status(rt, model)
        with ScoreStore.from_url(rt.redis_url) as redis_store:
            health = check_model(rt, redis_store, model)
            contenders = challenger_status(rt, model, redis_store)
            override = redis_store.rollout_override(model)
        store["health"] = {"state": health.state.value, "reason": health.reason, "live_run_id": health.live_run_id}
    except StoreUnavailableError as exc:
        store = {"error": str(exc)}
        contenders, override = challenger_status(rt, model, None), None
    rollout = spec.rollout.model_dump() if spec.rollout else None
    if rollout is not None:
        rollout["override_percent"] = override
    return {
        "model": model,
        "feature_set": spec.feature_set,
        "feature_dates": [d.isoformat() for d in fstore.available_dates(rt.home, spec.feature_set, fs)],
        "production": prod,
        "challengers": contenders,
        "rollout": rollout,
        "recent_runs": [
            {
                "run_id": r.run_id,
                "date": r.partition_date.isoformat(),
                "status": r.status,
                "rows": r.rows_out,
                "error": r.error,
            }
            for r in runs
        ],
        "last_failures": [
            {"run_id": r.run_id, "date": r.partition_date.isoformat(), "error": r.error}
            for r in runs
            if r.status == "failed"
        ][:3],
        "publications": rt.catalog.publications(model, limit=5),
        "store": store,
    }
