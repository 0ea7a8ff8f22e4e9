"""Champion and challengers: how a challenger version's runs are named, and which entities a canary serves.

A model's *champion* is its production primary version (``warehouse.registry``); a *challenger* is another
registered version scored every night next to it (``jobs.shadow``), never served by the live pointer. Its runs are
recorded in the catalog and written to Parquet under the key ``challenger_key(model, version)`` (``churn@<version>``),
so the champion's run history, reuse checks and retention never see them; in Redis they live in the model's own
namespace behind the challenger pointer (``warehouse.store.keys``: ``ps:{m}:challenger:<version>``), so promotion
is one pointer change to a run that is already loaded.

``in_canary`` is the one rule of which entities a canary answers from the challenger: a hash of the model name and
the entity id, compared with the percent, so an entity always gets the same variant and the share is exact over
many ids (resolution 0.01 %).
"""

from __future__ import annotations

import hashlib

MAX_CHALLENGERS = 3  # challenger versions per model: each costs a nightly prediction pass and a Redis run
CHAMPION, CHALLENGER = "champion", "challenger"
VARIANTS = (CHAMPION, CHALLENGER)
_SEP = "@"
_SLOTS = 10_000  # percent resolution: 0.01 %


def challenger_key(model: str, version: str) -> str:
    """The catalog and Parquet name of challenger ``version``'s runs of ``model``."""
    return f"{model}{_SEP}{version}"


def split_key(key: str) -> tuple[str, str | None]:
    """``(model, challenger version)`` of a catalog model key; the version is None for the champion's own runs."""
    model, sep, version = key.partition(_SEP)
    return (model, version) if sep else (key, None)


def canary_slot(model: str, entity_id: str) -> int:
    """The entity's slot in [0, 10000) for ``model``: stable across processes, releases and restarts."""
    digest = hashlib.blake2b(f"{model}\x00{entity_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % _SLOTS


def in_canary(model: str, entity_id: str, percent: float) -> bool:
    """Whether a canary of ``percent`` (0-100) answers ``entity_id`` from the challenger."""
    if percent <= 0:
        return False
    return canary_slot(model, entity_id) < round(percent * (_SLOTS // 100))
