"""``prescore invalidate``: mark entities of a model's live run whose precomputed score is known to be wrong.

The ids go into the live run's overlay layer as one new generation (``warehouse.store.overlays``): atomic per call,
seen by every reader at its next pointer read (within ``refresh_s``), kept in Redis (so across API restarts), and
cleared by the next run that scores the entity (a delta run rescoring it, or the next nightly run). Until then the
online ladder skips the entity's precomputed score (request features → fallback, else the default) and its answer
says why (``reason``). Ids the live run does not hold are counted, not marked; more than
``PRESCORE_INVALIDATE_MAX_IDS`` ids in one call are refused before anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jobs.runtime import Runtime
from warehouse.errors import UserError
from warehouse.store import Overlays, ScoreStore


def overlays_for(rt: Runtime, store: ScoreStore) -> Overlays:
    """The overlay writer of ``store`` with the bounds of ``rt``'s settings."""
    s = rt.settings
    return Overlays(store.client, store.clock, max_entities=s.overlay_max_entities, max_overlays=s.overlay_max_deltas)


def read_ids(source: str) -> list[str]:
    """The ids of ``source`` (a file path, or ``-`` for stdin), one per line; blank lines are skipped."""
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"--ids {source}: no such file; pass a file of ids, one per line, or - for stdin")
        text = path.read_text(encoding="utf-8")
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise UserError(f"--ids {source}: no ids in it; pass ids one per line")
    return ids


def invalidate(rt: Runtime, model: str, ids: list[str], reason: str) -> dict[str, Any]:
    """Invalidate ``ids`` of ``model``'s live run (see the module docstring); what was done, as a dict."""
    rt.config.model(model)  # an unknown model: UnknownModelError
    store = ScoreStore.from_url(rt.redis_url)
    try:
        done = overlays_for(rt, store).invalidate(model, ids, reason, max_ids=rt.settings.invalidate_max_ids)
    finally:
        store.close()
    return {"model": model, "run_id": done.base, "invalidated": done.invalidated, "unknown": done.unknown,
            "reason": reason, "generation": done.layer.generation if done.layer else None}  # fmt: skip
