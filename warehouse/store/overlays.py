"""Write side of the overlay layer (``warehouse.store.overlay``): publishing delta runs and invalidations over the
live run, and removing what no reader can reach any more.

Every change writes a whole new generation, then flips the layer pointer in one WATCH/MULTI transaction that also
watches the champion pointer (``warehouse.store.transaction``):

1. read the champion pointer and the layer pointer; the change's base must be the live run (else
   ``BaseNotLiveError``: nothing is written);
2. read the live generation's entries, merge the new ones (a rescored entity replaces an invalidation and the
   other way round), check the bounds (``OverlayBoundError``: nothing is written);
3. take a fresh generation number (``INCR layerseq``), write its record, then its buckets;
4. flip: while the champion pointer still names the base and the layer pointer is what step 1 read, point the
   layer at the new generation and give the old one ``grace_s`` to live (readers whose pointer cache still names it
   finish their lookups). A publish or rollback meanwhile refuses the change (its keys are removed); another layer
   change meanwhile makes this one start again from step 1, so neither is lost.

A writer killed before the flip leaves a generation no pointer names: readers never see it, ``sweep`` removes it
once it is older than ``orphan_after_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from warehouse.errors import StoreError
from warehouse.store.cleanup import unlink_matching
from warehouse.store.connection import SyncClient
from warehouse.store.connection import text as _text
from warehouse.store.connection import unavailable as _unavailable
from warehouse.store.ids import bucket_of, encode_entity_id
from warehouse.store.keys import RunInfo, store_key, to_utc, validate_name
from warehouse.store.lookup import plan_lookup
from warehouse.store.overlay import (
    LayerInfo,
    build_filter,
    generation_key,
    invalidated,
    is_invalid,
    layer_key,
    overlay_bucket_key,
    overlay_buckets,
    parse_layer_pointer,
    rescored,
)
from warehouse.store.transaction import transact

__all__ = ["BaseNotLiveError", "Invalidation", "OverlayBoundError", "Overlays", "TooManyIdsError"]

MAX_ATTEMPTS = 20  # other layer changes won this many times in a row
FIELDS_PER_ROUND_TRIP = 5000


class BaseNotLiveError(StoreError):
    """The change's base run is not (or no longer) the model's live run: nothing was published."""


class OverlayBoundError(StoreError):
    """The change would take the layer beyond one of its bounds: nothing was published."""


class TooManyIdsError(OverlayBoundError):
    """One invalidation names more ids than a call takes (refused before anything is read or written)."""


@dataclass(frozen=True)
class Invalidation:
    """What ``Overlays.invalidate`` did: ids marked invalid, ids the live run does not hold (counted, skipped),
    and the generation served from now (None: nothing was marked)."""

    model: str
    base: str
    invalidated: int
    unknown: int
    layer: LayerInfo | None


class Overlays:
    """The overlay layers of every model on one client. ``clock`` gives epoch seconds (generation stamps, sweep
    ages). Bounds: ``max_entities`` entities in one layer, ``max_overlays`` delta runs over one base run (beyond
    either, a change is refused: the next nightly run folds them into its base); ``grace_s``: how long a replaced
    generation stays readable (longer than any reader's pointer cache, ``max_stale_s``)."""

    def __init__(
        self,
        client: SyncClient,
        clock: Callable[[], float] = time.time,
        *,
        max_entities: int = 1_000_000,
        max_overlays: int = 200,
        grace_s: float = 60.0,
    ) -> None:
        if max_entities < 1 or max_overlays < 1 or grace_s <= 0:
            raise ValueError("max_entities and max_overlays must be >= 1 and grace_s > 0")
        self.client, self.clock = client, clock
        self.max_entities, self.max_overlays, self.grace_s = max_entities, max_overlays, grace_s

    # ---------------------------------------------------------------- reading

    def live(self, model: str) -> tuple[str | None, LayerInfo | None]:
        """The live run of ``model`` and its layer (None: no run, or no layer)."""
        validate_name("model", model)
        with _unavailable(f"reading the overlay layer of model {model}"):
            current, pointer = (_text(v) for v in self.client.mget([store_key(model, "current"), layer_key(model)]))
            live = parse_layer_pointer(pointer)
            if current is None or live is None or live[0] != current:
                return current, None
            record = self.client.hgetall(generation_key(model, *live))
        return current, LayerInfo.from_record(record) if record else None

    def entries(self, layer: LayerInfo) -> dict[bytes, bytes]:
        """Every entry of one generation (entity id → entry)."""
        keys = [overlay_bucket_key(layer.model, layer.base, layer.generation, b) for b in range(layer.n_buckets)]
        out: dict[bytes, bytes] = {}
        for key in keys:  # a bucket per reply: at most LAYER_FIELDS_PER_BUCKET entries
            out.update(self.client.hgetall(key))  # type: ignore[arg-type]
        return out

    # ---------------------------------------------------------------- changes

    def publish_delta(
        self, model: str, base: str, delta_run: str, entity_ids: Sequence[str], scores: Sequence[float],
        as_of: Sequence[float],
    ) -> LayerInfo:  # fmt: skip
        """Publish delta run ``delta_run`` of base run ``base``: ``entity_ids[i]`` is served ``scores[i]`` as of
        ``as_of[i]`` (epoch seconds) from the flip on. Publishing a delta run already in the layer changes nothing
        (a retry after a lost reply is safe)."""
        validate_name("run id", delta_run)
        if not len(entity_ids) == len(scores) == len(as_of):
            raise StoreError(f"delta run {delta_run}: {len(entity_ids)} ids, {len(scores)} scores, {len(as_of)} as_of")
        rows = zip(entity_ids, scores, as_of, strict=True)
        new = {encode_entity_id(e): rescored(float(s), float(t)) for e, s, t in rows}
        newest = max((float(t) for t in as_of), default=None)

        def build(old: LayerInfo | None, _: Mapping[bytes, bytes]) -> dict[bytes, bytes] | None:
            if old is not None and delta_run in old.deltas:
                return None
            if old is not None and old.overlays + 1 > self.max_overlays:
                raise OverlayBoundError(
                    f"model {model!r} has {old.overlays} delta runs over run {base!r}, the most one base run takes "
                    f"(max_overlays {self.max_overlays}, PRESCORE_OVERLAY_MAX_DELTAS): delta run {delta_run} was not "
                    "published; run the nightly job (prescore score) to fold them into a new base"
                )
            return new

        layer = self._change(model, base, build, delta_run, newest)[0]
        assert layer is not None  # build returns None only for a delta run the live layer holds
        return layer

    def invalidate(
        self, model: str, entity_ids: Iterable[str], reason: str = "invalidated", max_ids: int | None = None
    ) -> Invalidation:
        """Mark the ids the live run holds (in its base or its layer) invalid, atomically; ids it does not hold are
        counted in ``unknown``. Until a later run rescores them, lookups return them as invalidated. More than
        ``max_ids`` ids: ``TooManyIdsError`` before any I/O."""
        validate_name("model", model)
        marker = invalidated(reason or "invalidated")
        raw_ids = list(dict.fromkeys(encode_entity_id(e) for e in entity_ids))
        if max_ids is not None and len(raw_ids) > max_ids:
            raise TooManyIdsError(
                f"{len(raw_ids)} ids in one invalidation of model {model!r}; at most {max_ids} per call "
                "(PRESCORE_INVALIDATE_MAX_IDS): nothing was invalidated; split the list"
            )
        with _unavailable(f"reading the live run of model {model}"):
            current = _text(self.client.get(store_key(model, "current")))
            meta = self.client.hgetall(store_key(model, "meta", current)) if current else None
        if not current or not meta:
            raise StoreError(f"model {model!r} has no live run: there is nothing to invalidate")
        run = RunInfo.from_meta(meta)
        in_base = self._held(run, raw_ids)
        counts = {"unknown": 0}

        def build(_: LayerInfo | None, existing: Mapping[bytes, bytes]) -> dict[bytes, bytes] | None:
            marked = {raw: marker for raw in raw_ids if raw in in_base or raw in existing}
            counts["unknown"] = len(raw_ids) - len(marked)
            return marked or None

        layer, changed = self._change(model, run.run_id, build, None, None)
        n = len(raw_ids) - counts["unknown"]
        return Invalidation(model, run.run_id, n, counts["unknown"], layer if changed else None)

    def _held(self, run: RunInfo, raw_ids: Sequence[bytes]) -> set[bytes]:
        """The ids of ``raw_ids`` that run ``run``'s buckets hold (the lookup's HMGET per bucket, ``plan_lookup``,
        pipelined 500 at a time)."""
        plan = plan_lookup(run, raw_ids)
        groups = list(zip(plan.keys, plan.fields, strict=True))
        held: set[bytes] = set()
        with _unavailable(f"reading run {run.run_id} of model {run.model}"):
            for start in range(0, len(groups), 500):
                chunk = groups[start : start + 500]
                with self.client.pipeline(transaction=False) as pipe:
                    for key, fields in chunk:
                        pipe.hmget(key, fields)
                    replies = pipe.execute()
                for (_, fields), values in zip(chunk, replies, strict=True):
                    held.update(f for f, v in zip(fields, values, strict=True) if v is not None)
        return held

    def _change(
        self,
        model: str,
        base: str,
        build: Callable[[LayerInfo | None, Mapping[bytes, bytes]], dict[bytes, bytes] | None],
        delta_run: str | None,
        newest: float | None,
    ) -> tuple[LayerInfo | None, bool]:
        """One layer change (see the module docstring): ``build(old layer, its entries)`` returns the entries to
        set (None: nothing to change). Returns the layer served from now and whether this call changed it."""
        validate_name("model", model)
        validate_name("run id", base)
        current_key, pointer_key = store_key(model, "current"), layer_key(model)
        with _unavailable(f"publishing the overlay layer of model {model}"):
            for _ in range(MAX_ATTEMPTS):
                current, seen = (_text(v) for v in self.client.mget([current_key, pointer_key]))
                if current != base:
                    raise BaseNotLiveError(_not_live(model, base, current))
                live = parse_layer_pointer(seen)
                old: LayerInfo | None = None
                if live is not None and live[0] == base:
                    record = self.client.hgetall(generation_key(model, *live))
                    old = LayerInfo.from_record(record) if record else None
                existing = self.entries(old) if old is not None else {}
                new = build(old, existing)
                if new is None:
                    return old, False
                merged = {**existing, **new}
                if len(merged) > self.max_entities:
                    raise OverlayBoundError(
                        f"the overlay layer of model {model!r} would hold {len(merged)} entities, more than "
                        f"max_entities {self.max_entities} (PRESCORE_OVERLAY_MAX_ENTITIES): nothing was published; "
                        "run the nightly job (prescore score) to fold the changes into a new base"
                    )
                layer = self._write(model, base, merged, old, delta_run, newest)
                if self._flip(model, base, seen, layer, old):
                    return layer, True
            raise StoreError(
                f"gave up publishing the overlay layer of model {model!r} after {MAX_ATTEMPTS} attempts: other "
                "changes of the layer won each time; retry"
            )

    def _write(
        self, model: str, base: str, merged: dict[bytes, bytes], old: LayerInfo | None, delta_run: str | None,
        newest: float | None,
    ) -> LayerInfo:  # fmt: skip
        generation = int(self.client.incr(store_key(model, "layerseq")))
        n_buckets = overlay_buckets(len(merged))
        n_invalid = sum(1 for v in merged.values() if is_invalid(v))
        deltas = (*(old.deltas if old is not None else ()), *((delta_run,) if delta_run else ()))
        newest_as_of = old.newest_as_of if old is not None else None
        if newest is not None and (newest_as_of is None or newest > newest_as_of.timestamp()):
            newest_as_of = to_utc(newest)
        layer = LayerInfo(
            model, base, generation, n_buckets, build_filter(merged, len(merged)), len(merged) - n_invalid,
            n_invalid, len(deltas), newest_as_of, to_utc(self.clock()), tuple(deltas),
        )  # fmt: skip
        self.client.hset(generation_key(model, base, generation), mapping=layer.record())  # type: ignore[arg-type]  # first: sweep's clock
        by_bucket: dict[int, dict[bytes, bytes]] = {}
        for raw, entry in merged.items():
            by_bucket.setdefault(bucket_of(raw, n_buckets), {})[raw] = entry
        for b, mapping in by_bucket.items():  # HSETs of FIELDS_PER_ROUND_TRIP fields, a few per round trip
            key, items = overlay_bucket_key(model, base, generation, b), list(mapping.items())
            for start in range(0, len(items), 4 * FIELDS_PER_ROUND_TRIP):
                with self.client.pipeline(transaction=False) as pipe:
                    for at in range(start, min(len(items), start + 4 * FIELDS_PER_ROUND_TRIP), FIELDS_PER_ROUND_TRIP):
                        pipe.hset(key, mapping=dict(items[at : at + FIELDS_PER_ROUND_TRIP]))
                    pipe.execute()
        return layer

    def _flip(self, model: str, base: str, seen: str | None, layer: LayerInfo, old: LayerInfo | None) -> bool:
        """Point the layer at ``layer`` while the champion pointer names ``base`` and the layer pointer is still
        ``seen``; False: another layer change won (start again). ``BaseNotLiveError`` when the live run changed."""
        current_key, pointer_key = store_key(model, "current"), layer_key(model)
        outcome: dict[str, Any] = {}

        def flip(pipe: Any) -> None:
            pipe.watch(current_key, pointer_key)
            current, now_seen = _text(pipe.get(current_key)), _text(pipe.get(pointer_key))
            if current != base or now_seen != seen:
                pipe.unwatch()
                outcome["lost"] = current
                return
            pipe.multi()
            pipe.set(pointer_key, f"{base}:{layer.generation}")
            if old is not None:
                ms = int(self.grace_s * 1000)
                pipe.pexpire(generation_key(model, base, old.generation), ms)
                for b in range(old.n_buckets):
                    pipe.pexpire(overlay_bucket_key(model, base, old.generation, b), ms)
            pipe.execute()

        transact(self.client, flip)
        if "lost" not in outcome:
            return True
        self._drop(layer)
        if outcome["lost"] != base:
            raise BaseNotLiveError(_not_live(model, base, outcome["lost"]))
        return False

    def _drop(self, layer: LayerInfo) -> None:
        keys = [overlay_bucket_key(layer.model, layer.base, layer.generation, b) for b in range(layer.n_buckets)]
        for start in range(0, len(keys), 1000):
            self.client.unlink(*keys[start : start + 1000])
        self.client.unlink(generation_key(layer.model, layer.base, layer.generation))

    # ---------------------------------------------------------------- retention

    def sweep(self, model: str, orphan_after_s: float) -> int:
        """Remove the generations no reader can reach: not the live one, not expiring (a replaced generation has its
        grace), written more than ``orphan_after_s`` ago (younger ones may be a writer's, before its flip); that is,
        those of crashed writers and of base runs no longer live. Returns the keys deleted."""
        validate_name("model", model)
        with _unavailable(f"removing unreachable overlay generations of model {model}"):
            live = parse_layer_pointer(self.client.get(layer_key(model)))
            now, verdicts = self.clock(), {}

            def doomed(key: bytes) -> bool:
                parts = key.decode().split(":")  # ps:{m}:ov:<base>:<g>:<b> or ps:{m}:layer:<base>:<g>
                ref = (parts[3], int(parts[4]))
                if ref == live:
                    return False
                if ref not in verdicts:
                    record_key = generation_key(model, *ref)
                    created = self.client.hget(record_key, "created_at")
                    ttl = int(self.client.pttl(record_key))
                    verdicts[ref] = ttl < 0 and (created is None or now - float(created) > orphan_after_s)
                return bool(verdicts[ref]) and int(self.client.pttl(key)) < 0

            deleted = unlink_matching(self.client, overlay_bucket_key(model, "*", "*", "*"), doomed)
            deleted += unlink_matching(self.client, generation_key(model, "*", "*"), doomed)
        return deleted


def _not_live(model: str, base: str, current: str | None) -> str:
    return (
        f"run {base!r} of model {model!r} is not the live run (the live run is {current!r}): nothing was published "
        "over it; a delta is published over the run it was scored against, so score the drop again against the live run"
    )
