"""The staleness and degradation ladder: a pure function, no I/O.

For one lookup, given the precomputed hit (or a miss), the current time, the model's policy, and whether the
request brought features that the fallback model can use:

1. hit with ``age <= max_age``                        → ``precomputed`` (fresh)
2. otherwise, features given and a fallback model     → ``fallback`` (scored now)
3. otherwise, hit with ``age <= hard_max_age``        → ``precomputed`` flagged ``stale``
4. otherwise                                          → ``default`` (the model's safe default score)

A miss skips rungs 1 and 3. A score whose ``as_of`` lies in the future (clock skew) counts as age 0. Rung 1 takes a
``fresh`` score and rung 3 a ``stale`` one, as ``warehouse.model_config.freshness`` labels the score's age.

During a rollout the ladder runs on the score of the variant that answers the entity (``warehouse.rollout``): a
challenger's miss or stale score goes down the same rungs as the champion's would, to the same fallback model and
default.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass

from warehouse.model_config import ModelSpec, freshness


class Source(enum.StrEnum):
    PRECOMPUTED = "precomputed"
    FALLBACK = "fallback"
    DEFAULT = "default"


class Rung(enum.StrEnum):
    """Which rung answered; counted in metrics."""

    FRESH = "fresh"
    FALLBACK_MISS = "fallback_miss"
    FALLBACK_STALE = "fallback_stale"
    STALE = "stale"
    DEFAULT_MISS = "default_miss"
    DEFAULT_EXPIRED = "default_expired"
    FALLBACK_INVALID = "fallback_invalid"  # the entity's precomputed score was invalidated (``prescore invalidate``)
    DEFAULT_INVALID = "default_invalid"


@dataclass(frozen=True)
class Decision:
    source: Source
    rung: Rung
    stale: bool
    age_s: float | None  # age of the precomputed score consulted, None on a miss


def decide(
    as_of_epoch: float | None,
    now_epoch: float,
    max_age_s: float,
    hard_max_age_s: float,
    can_fallback: bool,
) -> Decision:
    """Pick the rung (see module docstring). ``as_of_epoch`` is None on a miss."""
    if as_of_epoch is None:
        if can_fallback:
            return Decision(Source.FALLBACK, Rung.FALLBACK_MISS, False, None)
        return Decision(Source.DEFAULT, Rung.DEFAULT_MISS, False, None)
    age = max(0.0, now_epoch - as_of_epoch)
    state = freshness(age, max_age_s, hard_max_age_s)
    if state == "fresh":
        return Decision(Source.PRECOMPUTED, Rung.FRESH, False, age)
    if can_fallback:
        return Decision(Source.FALLBACK, Rung.FALLBACK_STALE, False, age)
    if state == "stale":
        return Decision(Source.PRECOMPUTED, Rung.STALE, True, age)
    return Decision(Source.DEFAULT, Rung.DEFAULT_EXPIRED, False, age)


def decide_invalid(can_fallback: bool) -> Decision:
    """The rung of an entity whose precomputed score was invalidated: never served; the fallback scores the request's
    features, else the default answers."""
    if can_fallback:
        return Decision(Source.FALLBACK, Rung.FALLBACK_INVALID, False, None)
    return Decision(Source.DEFAULT, Rung.DEFAULT_INVALID, False, None)


def policy_version(spec: ModelSpec) -> str:
    """A short, stable id of everything that shapes an answer besides the scores themselves."""
    payload = {
        "staleness": spec.staleness.model_dump(),
        "default_score": spec.default_score,
        "thresholds": spec.thresholds.model_dump() if spec.thresholds else None,
        "fallback_features": list(spec.fallback_features),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"p-{digest[:10]}"


def threshold_cuts(spec: ModelSpec) -> tuple[tuple[str, float], ...]:
    """The model's threshold labels, highest threshold first (computed once per model, not per request)."""
    if spec.thresholds is None or not spec.thresholds.labels:
        return ()
    return tuple(sorted(spec.thresholds.labels.items(), key=lambda kv: -kv[1]))


def label_for(cuts: tuple[tuple[str, float], ...], score: float) -> str:
    """The first label whose threshold the score reaches, else ``low``."""
    for label, value in cuts:
        if score >= value:
            return label
    return "low"
