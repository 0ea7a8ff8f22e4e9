"""A model's rollout in the online reader: which rollouts a models file may ask for, what the reader follows, what
``/v1/models`` says of it, and the abort.

- ``check``: a rollout must name a registered challenger of the model (``Registry.challengers``) or its production
  primary version (a challenger just promoted); anything else refuses the models file (at start: not ready; on
  ``POST /v1/admin/reload``: 409, the running models kept), the message naming ``models.<m>.rollout.challenger``.
  A percent outside 0-100 is refused by the models file's own validation (``warehouse.model_config.RolloutSpec``).
- ``route``: the ``warehouse.store.Route`` the score reader follows for the rollout (challenger version, configured
  percent, shadow or canary). Which entities a canary answers from the challenger is ``warehouse.rollout.in_canary``
  at the effective percent, decided in the reader (``warehouse.store.lookup``): the Redis override when set, else the
  configured percent, and 0 while the challenger has no run in Redis (the canary is inactive, everyone champion).
- ``follow``: hand the reader the routes of a snapshot (at start and on reload).
- ``describe``: the ``rollout`` object of a model in ``/v1/models``; ``gauges``: the rollout gauges of ``/metrics``.
- ``abort``: the rollout override 0 written to Redis (``ScoreStore.set_rollout_override``, in a thread), so every
  reader stops the canary (and the shadow reads) on its next pointer read, and applied to this process at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from online.errors import NoRollout, StoreUnavailable
from warehouse.errors import RegistryError, StoreUnavailableError
from warehouse.model_config import ModelSpec
from warehouse.registry import Registry
from warehouse.store import AsyncScoreReader, RolloutView, Route, ScoreStore

if TYPE_CHECKING:
    from online.snapshot import ModelRuntime, Snapshot

log = logging.getLogger("prescore.online")

CANARY, SHADOW, INACTIVE, ABORTED, UNKNOWN = "canary", "shadow", "inactive", "aborted", "unknown"


def check(name: str, spec: ModelSpec, registry: Registry) -> str | None:
    """Why the rollout of model ``name`` cannot be served (naming the field), or None when it can (or there is none)."""
    rollout = spec.rollout
    if rollout is None:
        return None
    where = f"models.{name}.rollout.challenger"
    try:
        challengers = registry.challengers(name)
        production = registry.production_version(name, "primary")
    except (RegistryError, ValueError, KeyError) as exc:
        return f"{where}: the registry's versions of {name!r} cannot be read ({exc}); fix the registry, then reload"
    if rollout.challenger in challengers or rollout.challenger == production:
        return None
    return (
        f"{where}: {rollout.challenger!r} is neither a challenger of {name!r} (registered challengers: "
        f"{', '.join(challengers) or 'none'}) nor its production version ({production or 'none'}); register it with "
        "`prescore register --challenger` or `prescore train --challenger`, or name one of those"
    )


def route(spec: ModelSpec) -> Route | None:
    """What the score reader follows for the model's rollout (None: no rollout, the champion only)."""
    rollout = spec.rollout
    if rollout is None:
        return None
    return Route(rollout.challenger, rollout.percent, rollout.mode == "shadow")


def follow(store: AsyncScoreReader | None, old: Snapshot | None, new: Snapshot) -> None:
    """Make ``store`` follow the rollouts of ``new`` (and stop following the models only ``old`` had); a snapshot
    with problems is not served, so nothing changes."""
    if store is None or new.problems:
        return
    for name in set(old.models if old else ()) - set(new.models):
        store.set_route(name, None)
    for name, m in new.models.items():
        store.set_route(name, m.route)


def gauges(store: AsyncScoreReader, names: list[str]) -> dict[str, tuple[str, float, int]]:
    """Model → (challenger version, effective canary percent, challenger run loaded 0/1), as last read."""
    out = {}
    for name in names:
        view = store.view(name)
        if view is not None:
            out[name] = (view.route.challenger, view.percent, int(view.challenger_run is not None))
    return out


def describe(spec: ModelSpec, view: RolloutView | None, now: float | None) -> dict[str, Any] | None:
    """The ``rollout`` object of ``/v1/models`` (None: no rollout). ``view`` is what the reader read from Redis
    (None with ``now`` None: Redis did not answer, so what it serves is ``unknown``); ``now`` is epoch seconds."""
    rollout = spec.rollout
    if rollout is None:
        return None
    out: dict[str, Any] = {"challenger": rollout.challenger, "mode": rollout.mode, "percent": rollout.percent,
                           "effective_percent": None, "override": None, "challenger_loaded": None,
                           "challenger_run_id": None, "challenger_as_of": None, "challenger_state": None,
                           "state": UNKNOWN, "reason": "Redis is unavailable"}  # fmt: skip
    if view is None or now is None:
        return out
    run = view.challenger_run
    out.update(effective_percent=view.percent, override=view.override, challenger_loaded=run is not None,
               challenger_run_id=run.run_id if run else view.challenger_run_id)  # fmt: skip
    if run is not None:
        age = max(0.0, now - run.as_of.timestamp())
        out.update(challenger_as_of=run.as_of, challenger_state=spec.staleness.freshness(age))
    state, reason = _state(rollout.mode, view)
    out.update(state=state, reason=reason)
    return out


def _state(mode: str, view: RolloutView) -> tuple[str, str | None]:
    version = view.route.challenger
    if view.challenger_run is None:
        named = f" (its pointer names run {view.challenger_run_id!r}, which is gone)" if view.challenger_run_id else ""
        return INACTIVE, f"no run of challenger {version} in Redis{named}: every answer from the champion"
    if view.override == 0.0:
        return ABORTED, "the rollout override in Redis is 0 (aborted): every answer from the champion"
    if mode == SHADOW:
        return SHADOW, None
    if view.percent <= 0:
        return INACTIVE, "canary percent 0: every answer from the champion"
    return CANARY, None


def write_override(url: str, model: str, percent: float, timeout_s: float, clock: Callable[[], float]) -> None:
    """Set ``model``'s rollout override in Redis (every reader obeys it on its next pointer read); blocking.
    ``StoreUnavailableError`` when Redis does not answer."""
    with ScoreStore.from_url(url, socket_timeout=timeout_s, clock=clock) as store:
        store.set_rollout_override(model, percent)


async def abort(
    m: ModelRuntime, store: AsyncScoreReader, url: str, timeout_s: float, clock: Callable[[], float]
) -> dict[str, Any]:
    """Stop ``m``'s canary and shadow reads on every reader: the override 0 in Redis, applied to ``store`` at once.
    ``NoRollout`` for a model without one; ``StoreUnavailable`` when Redis was not written (this process stops
    anyway, until its next pointer read reaches Redis)."""
    if m.spec.rollout is None:
        raise NoRollout(f"model {m.name!r} has no rollout in the models file; nothing to abort")
    try:
        await asyncio.to_thread(write_override, url, m.name, 0.0, timeout_s, clock)
    except StoreUnavailableError:
        store.pin_override(m.name, 0.0)
        log.error("rollout of %s: the abort could not be written to Redis; stopped on this replica only", m.name)
        raise StoreUnavailable(
            f"Redis is unavailable: the rollout of {m.name} is stopped on this replica only, until it reads Redis "
            "again; retry the abort so that every replica stops"
        ) from None
    store.pin_override(m.name, 0.0)
    log.warning("rollout of %s aborted: every answer from the champion", m.name)
    return {"status": "aborted", "model": m.name, "rollout": describe(m.spec, store.view(m.name), clock())}
