"""Lookups for operators (``prescore lookup``): the API's ladder, in process, without HTTP.

The same ``ScoringService`` as the API answers: the models file and hash-checked fallbacks are loaded, Redis is
read in one round trip (bounded by the same timeout and circuit breaker), and each entity gets the answer the
batch endpoint would give it. Errors the API maps to 4xx/503 become ``UserError`` (one line in the CLI).
Nothing is written to the prediction log: operator lookups are not traffic.
"""

from __future__ import annotations

import asyncio
from typing import Any

from online.errors import ApiError
from online.service import ScoringService
from online.settings import OnlineSettings
from online.validation import check_entity_id, check_features
from warehouse.errors import UserError


def lookup(
    model: str,
    entity_ids: list[str],
    features: dict[str, dict[str, Any]] | None = None,
    settings: OnlineSettings | None = None,
) -> list[dict[str, Any]]:
    """Answer each of ``entity_ids`` for ``model``; ``features`` (entity id → feature values) feed the fallback."""
    base = settings or OnlineSettings()
    quiet = base.model_copy(update={"prediction_log": False, "store_check_s": 0.0})  # no background work for one call
    return asyncio.run(_lookup(quiet, model, entity_ids, features or {}))


async def _lookup(
    settings: OnlineSettings, model: str, ids: list[str], raw_features: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    if not ids:
        raise UserError("give at least one entity id, e.g. prescore lookup --model churn C0000000001")
    service = ScoringService(settings)
    try:
        await service.start()
        if service.snapshot is not None and service.snapshot.problems:
            raise UserError("; ".join(service.snapshot.problems))
        m = service.model(model)
        for i, entity_id in enumerate(ids):
            check_entity_id(entity_id, f"entity id #{i + 1}")
        features = {}
        for entity_id, raw in raw_features.items():
            if entity_id not in ids:
                raise UserError(f"--features names {entity_id!r}, which is not one of the entity ids looked up")
            features[entity_id] = check_features(m, raw, f"features of {entity_id}")
        _, answers, _ = await service.answer_many(m, ids, features, service.new_request_id())
        return answers
    except ApiError as exc:
        raise UserError(exc.message) from None
    finally:
        await service.stop()
