"""``prescore rollout``: stop a canary at once, give it back to the models file, drop a challenger, list them.

``abort_canary`` sets the store's rollout override (``ScoreStore.set_rollout_override``, percent 0): every online
reader answers every entity from the champion from its next pointer read (within its pointer cache's refresh time,
``PRESCORE_POINTER_REFRESH_S``; the API's ``POST /v1/admin/rollout/{model}/abort`` applies it to its own process at
once). One Redis write: no models-file change, no restart, nothing in flight is lost. ``resume_canary`` removes the
override (the models file's ``rollout.percent`` applies again). ``drop_challenger`` stops scoring a version in
shadow (the registry's challenger list) and removes its challenger pointer; its runs stay in Parquet and the
catalog. ``challenger_status`` is what ``prescore status`` shows of them.
"""

from __future__ import annotations

from typing import Any

from jobs.runtime import Runtime
from warehouse.errors import UserError
from warehouse.rollout import challenger_key
from warehouse.store import ScoreStore


def abort_canary(rt: Runtime, model: str) -> dict[str, Any]:
    spec = rt.config.model(model)
    with ScoreStore.from_url(rt.redis_url) as store:
        store.set_rollout_override(model, 0.0)
    configured = spec.rollout.percent if spec.rollout else None
    return {"model": model, "override_percent": 0.0, "configured_percent": configured,
            "challenger": spec.rollout.challenger if spec.rollout else None}  # fmt: skip


def resume_canary(rt: Runtime, model: str) -> dict[str, Any]:
    spec = rt.config.model(model)
    with ScoreStore.from_url(rt.redis_url) as store:
        store.clear_rollout_override(model)
    return {"model": model, "override_percent": None, "configured_percent": spec.rollout.percent if spec.rollout
            else None}  # fmt: skip


def drop_challenger(rt: Runtime, model: str, version: str) -> dict[str, Any]:
    spec = rt.config.model(model)
    challengers = rt.registry.challengers(model)
    if version not in challengers:
        raise UserError(f"{version} is not a challenger of {model} (challengers: {', '.join(challengers) or 'none'})")
    if spec.rollout is not None and spec.rollout.challenger == version and spec.rollout.percent > 0:
        raise UserError(
            f"models.{model}.rollout serves {spec.rollout.percent:g} % of entities from {version}: set its percent "
            f"to 0 (or `prescore rollout abort --model {model}`) and reload the API, then drop it"
        )
    rt.registry.remove_challenger(model, version)
    with ScoreStore.from_url(rt.redis_url) as store:
        run_id = store.drop_challenger(model, version)
    return {"model": model, "version": version, "dropped_run_id": run_id}


def challenger_status(rt: Runtime, model: str, store: ScoreStore | None) -> list[dict[str, Any]]:
    """Each challenger: version, sha256, the run its pointer names in Redis (None: none yet, or Redis not asked)
    and its newest committed run in the catalog."""
    pointers = store.challengers(model) if store is not None else {}
    out = []
    for version in rt.registry.challengers(model):
        manifest = rt.registry.manifest(model, "primary", version)
        newest = rt.catalog.latest_committed(challenger_key(model, version))
        out.append({
            "version": version, "sha256": manifest.sha256, "redis_run_id": pointers.get(version),
            "latest_run": ({"run_id": newest.run_id, "date": newest.partition_date.isoformat()} if newest else None),
        })  # fmt: skip
    return out
