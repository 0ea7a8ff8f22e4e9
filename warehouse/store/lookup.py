"""The pure core of a score reader: the pointer cache and, for each lookup, the commands to send and how their
replies become results. No I/O: ``ScoreReader`` and ``AsyncScoreReader`` (``warehouse.store.readers``) send what
``LookupState`` asks for and hand the replies back, so both share every decision made here.

Pointer cache, per model: younger than ``refresh_s``, the cached state is used as is; up to ``max_stale_s``, it is
used and the pointers are re-read in the same round trip as the lookup; older (or never read), they are read first.
A pointer naming a run not cached costs one more read, of that run's metadata. The pointers of a model are the
champion's ``current``; for a model with a ``Route`` (a rollout, ``warehouse.rollout``) also the followed challenger
version's pointer and the rollout override (``HGET rollout percent``), all in the one pipeline of a refresh (the
keys share the ``{model}`` hash tag: one node of a Redis Cluster).

A lookup is one round trip: one ``HMGET`` per bucket of each run it reads (``plan_lookup``), with the pointer reads
in the same pipeline when the cache is aging; a lone ``HMGET`` goes as a plain command. A routed lookup
(``LookupState.plan_routed``) decides each id's variant first: a canary (``Route.shadow`` false) answers an id from
the challenger's run when ``warehouse.rollout.in_canary`` says so at the effective percent (``Pointer.percent``:
the override, else the route's percent; 0 while the challenger has no loaded run), from the champion's otherwise,
so each id costs what its variant needs; a shadow reads every id from both runs (the challenger's scores are
returned apart, never served).

With a read cache (``warehouse.store.read_cache.ReadCache``, handed to ``LookupState``), every plan first looks each
id up by the run it is about to read (the champion's, the canary variant's or the shadow's challenger run, as the
pointer cache names it now): the ids found are answered from it and left out of the ``HMGET``s, the replies of the
others are stored in it as they are assembled. A lookup whose ids were all found sends nothing (but the pointer
reads of an aging cache). Keys carry the run, so a pointer change moves every later lookup to new keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from warehouse.rollout import CHALLENGER, CHAMPION, in_canary
from warehouse.store.ids import bucket_of, encode_entity_id
from warehouse.store.keys import RunInfo, StoredScore, decode_score, store_key, validate_name
from warehouse.store.overlay import LayerInfo, entry_result, generation_key, layer_key, parse_layer_pointer
from warehouse.store.read_cache import ABSENT, Cached, ReadCache

OVERRIDE_FIELD = "percent"  # the field of ``ps:{m}:rollout`` that overrides the canary percent


@dataclass(frozen=True, slots=True)
class Route:
    """A model's rollout as a reader follows it: the pointer of challenger version ``challenger`` is read with the
    champion's; ``percent`` (0-100) is the canary's configured share (an override in Redis replaces it);
    ``shadow``: every id is served from the champion and the challenger's score is read alongside."""

    challenger: str
    percent: float = 0.0
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class Refresh:
    """The pointer reads of one model, sent in one pipeline: ``GET current``; with a route also ``GET challenger``
    and ``HGET rollout percent``; then ``GET layer`` (the overlay layer, ``warehouse.store.overlay``). ``replies``
    says how many replies they add."""

    current: str
    challenger: str | None = None
    rollout: str | None = None
    layer: str | None = None

    @property
    def replies(self) -> int:
        return (1 if self.challenger is None else 3) + (self.layer is not None)


@dataclass(slots=True)
class LookupPlan:
    """The commands of one lookup in ``run``: ``HMGET keys[k] *fields[k]`` answers the ids at positions
    ``rows[k]`` of the request, then the pointer reads of ``refresh`` when it is set (all in one pipeline). With
    ``refresh`` None a lone ``HMGET`` is sent as a plain command; no ``run`` (nothing published) means every id is a
    miss. With a ``cache`` (``warehouse.store.read_cache``), ``cached`` holds the ``(position, result)`` of the ids
    it answered (they are in no ``HMGET``), and the replies are stored in it as they are assembled."""

    run: RunInfo | None
    keys: list[bytes]
    fields: list[list[bytes]]
    rows: list[list[int]]
    size: int
    refresh: Refresh | None = None
    cached: list[tuple[int, StoredScore | None]] = field(default_factory=list)
    cache: ReadCache | None = None
    layer: LayerInfo | None = None
    n_base: int = -1  # keys[:n_base] read the run's buckets, the rest its layer's (-1: no layer keys)
    layered: set[int] | None = None  # positions of the ids read from the layer too (never cached)

    def answer(self, replies: Sequence[Sequence[Any]]) -> list[StoredScore | None]:
        """One result per requested id from the replies of the ``HMGET``s (in ``keys`` order, without the replies
        of the pointer reads)."""
        return assemble(self, replies) if self.run is not None else [None] * self.size


def plan_lookup(
    run: RunInfo,
    raw_ids: Sequence[bytes],
    positions: Sequence[int] | None = None,
    size: int | None = None,
    cache: ReadCache | None = None,
    layer: LayerInfo | None = None,
) -> LookupPlan:
    """Group ids (UTF-8 bytes) by bucket of ``run``: one HMGET per bucket. For a plan that answers part of a
    request of ``size`` ids, ``positions[i]`` is the place of ``raw_ids[i]`` in it (default: ``i``). With a
    ``cache``, the ids it holds for ``run`` are answered from it and left out of the HMGETs. With the run's
    ``layer``, the ids its filter may hold are read from the run's bucket and from the layer's, in the same
    pipeline (the layer's entry wins), and are never cached; the others are read as without a layer."""
    by_bucket: dict[int, tuple[list[bytes], list[int]]] = {}
    by_layer: dict[str, tuple[list[bytes], list[int]]] = {}
    cached: list[tuple[int, StoredScore | None]] = []
    n_buckets = run.n_buckets
    for row, raw in zip(range(len(raw_ids)) if positions is None else positions, raw_ids, strict=True):
        if layer is not None and layer.may_hold(raw):
            fields, rows = by_layer.setdefault(layer.bucket_key(raw), ([], []))
            fields.append(raw)
            rows.append(row)
            continue
        if cache is not None:
            found = cache.get(run, raw)
            if found is not ABSENT:
                cached.append((row, found))
                continue
        fields, rows = by_bucket.setdefault(bucket_of(raw, n_buckets), ([], []))
        fields.append(raw)
        rows.append(row)
    layered: set[int] | None = None
    for fields, rows in by_layer.values():  # the run's bucket too: the filter may be wrong, or the id not rescored
        if layered is None:
            layered = set()
        layered.update(rows)
        for raw, row in zip(fields, rows, strict=True):
            base_fields, base_rows = by_bucket.setdefault(bucket_of(raw, n_buckets), ([], []))
            base_fields.append(raw)
            base_rows.append(row)
    keys = [store_key(run.model, "bucket", run.run_id, b).encode() for b in by_bucket]
    fields_of, rows_of = [f for f, _ in by_bucket.values()], [r for _, r in by_bucket.values()]
    plan = LookupPlan(run, keys, fields_of, rows_of, len(raw_ids) if size is None else size, None, cached, cache)
    if by_layer:
        plan.layer, plan.n_base, plan.layered = layer, len(keys), layered
        keys.extend(k.encode() for k in by_layer)
        fields_of.extend(f for f, _ in by_layer.values())
        rows_of.extend(r for _, r in by_layer.values())
    return plan


def bucket_key(run: RunInfo, raw_id: bytes) -> str:
    """The key of the bucket of ``run`` that holds entity ``raw_id`` (UTF-8 bytes)."""
    return store_key(run.model, "bucket", run.run_id, bucket_of(raw_id, run.n_buckets))


def assemble(
    plan: LookupPlan, replies: Sequence[Sequence[Any]], out: list[StoredScore | None] | None = None
) -> list[StoredScore | None]:
    """One result per requested id of ``plan`` (which has a run), in request order: ``None`` for a miss, else the
    score and its run. With ``out`` the results are written into it (at the plan's positions) and it is returned.
    The plan's cached results are written too, and with a cache each reply is stored in it."""
    run = plan.run
    assert run is not None
    if out is None:
        out = [None] * plan.size
    for row, found in plan.cached:
        out[row] = found
    cache, n_base = plan.cache, plan.n_base
    if n_base >= 0:
        base_rows, base_replies = plan.rows[:n_base], replies[:n_base]
    else:
        base_rows, base_replies = plan.rows, replies
    if cache is None:
        for rows, values in zip(base_rows, base_replies, strict=True):
            for row, raw in zip(rows, values, strict=True):
                if raw is not None:
                    out[row] = StoredScore(decode_score(raw), run.run_id, run.model_version, run.as_of)
    else:
        layered = plan.layered or ()
        base_fields = plan.fields[:n_base] if n_base >= 0 else plan.fields
        for rows, fields, values in zip(base_rows, base_fields, base_replies, strict=True):
            for row, raw_id, raw in zip(rows, fields, values, strict=True):
                result = None if raw is None else StoredScore(decode_score(raw), run.run_id, run.model_version,
                                                              run.as_of)  # fmt: skip
                out[row] = result
                if row not in layered:
                    cache.put(run, raw_id, result)
    if n_base >= 0:
        for rows, values in zip(plan.rows[n_base:], replies[n_base:], strict=True):
            for row, entry in zip(rows, values, strict=True):
                if entry is not None:
                    out[row] = entry_result(entry, run.run_id, run.model_version, run.as_of)
    return out


def layered_hit(run: RunInfo, entry: Any, value: Any) -> StoredScore | None:
    """The result of one id of ``run`` read from its layer's bucket (``entry``) and the run's (``value``), the
    replies of the two ``HGET``s of a layered single lookup: the layer's entry wins."""
    return entry_result(entry, run.run_id, run.model_version, run.as_of) if entry is not None else hit(run, value)


def hit(run: RunInfo, value: Any) -> StoredScore | None:
    """The result of an ``HGET`` reply of ``run``'s bucket: None for a miss."""
    return None if value is None else StoredScore(decode_score(value), run.run_id, run.model_version, run.as_of)


def pointer_key(model: str) -> str:
    """The key of ``model``'s current-run pointer (what ``GET`` reads before or with a lookup)."""
    return store_key(model, "current")


@dataclass(slots=True)
class Routed:
    """The results of one routed lookup, one entry per requested id in request order: the variant each id is
    answered from (``CHAMPION`` or ``CHALLENGER``) and that variant's stored score (None: a miss); with shadow reads,
    ``shadow`` holds the challenger's score of every id and ``shadow_run`` the run they were read from.
    ``from_cache``: every result came from the read cache and the lookup sent nothing to Redis."""

    variants: list[str]
    scores: list[StoredScore | None]
    shadow: list[StoredScore | None] | None = None
    shadow_run: RunInfo | None = None
    from_cache: bool = False


@dataclass(slots=True)
class RoutedPlan:
    """The commands of one routed lookup: the ``HMGET``s of ``parts`` (each a ``LookupPlan`` of one run, its keys in
    order; ``True`` beside a part: it fills the shadow results), then the pointer reads of ``refresh`` when set.
    ``pointers_read``: the reader read the pointers before this plan (a round trip to Redis all the same, so its
    answer is not ``from_cache`` even when the read cache held every id)."""

    variants: list[str]
    parts: list[tuple[LookupPlan, bool]]
    keys: list[bytes]
    fields: list[list[bytes]]
    size: int
    refresh: Refresh | None
    shadow_run: RunInfo | None
    pointers_read: bool = False

    def answer(self, replies: Sequence[Sequence[Any]]) -> Routed:
        """The results from the replies of the ``HMGET``s (in ``keys`` order, without the pointer reads')."""
        scores: list[StoredScore | None] = [None] * self.size
        shadow: list[StoredScore | None] | None = [None] * self.size if self.shadow_run is not None else None
        start = 0
        for plan, is_shadow in self.parts:
            end = start + len(plan.keys)
            target = shadow if is_shadow else scores
            assert target is not None
            assemble(plan, replies[start:end], target)
            start = end
        from_cache = bool(self.parts) and not self.keys and self.refresh is None and not self.pointers_read
        return Routed(self.variants, scores, shadow, self.shadow_run, from_cache)


@dataclass(frozen=True, slots=True)
class RolloutView:
    """What a reader knows of a model's rollout (``LookupState.view``): the challenger's run (None: its pointer is
    missing or names a run whose metadata is gone; ``challenger_run_id`` is what the pointer names), the override
    read from Redis (None: the route's percent applies), the effective canary ``percent`` and whether the challenger
    is read in shadow."""

    route: Route
    challenger_run: RunInfo | None
    challenger_run_id: str | None
    override: float | None
    percent: float
    shadow: bool


@dataclass
class Pointer:
    """A cached read of a model's pointers, and when it was read: the champion's run (None: nothing published) and,
    for a model with a route, the challenger's run (``challenger_id``: the run its pointer names) and the override."""

    run: RunInfo | None
    fetched: float
    challenger: RunInfo | None = None
    challenger_id: str | None = None
    override: float | None = None
    layer: LayerInfo | None = None  # the champion run's overlay layer (None: none live)

    def percent(self, route: Route | None) -> float:
        """The canary's effective percent: 0 without a canary route or a loaded challenger run; else the override
        when one is set, else the route's percent."""
        if route is None or route.shadow or self.challenger is None:
            return 0.0
        return route.percent if self.override is None else self.override

    def shadowing(self, route: Route | None) -> bool:
        """Whether the challenger is read in shadow: a shadow route, a loaded challenger run, and no override of 0
        (an abort takes the challenger off the request path in either mode)."""
        return route is not None and route.shadow and self.challenger is not None and self.override != 0.0


@dataclass(slots=True)
class Reading:
    """The replies of one refresh of ``model``, waiting for the metadata of the runs in ``missing`` (read
    ``meta_keys`` with ``HGETALL`` and pass the replies to ``LookupState.meta_read``)."""

    model: str
    run_id: str | None
    challenger_id: str | None
    override: float | None
    fetched: float
    known: dict[str, RunInfo]
    missing: list[str] = field(default_factory=list)
    layer: LayerInfo | None = None  # the live layer of ``run_id``, when cached
    layer_missing: tuple[str, int] | None = None  # the live layer (base, generation), when its record is to be read

    @property
    def meta_keys(self) -> list[str]:
        keys = [store_key(self.model, "meta", run_id) for run_id in self.missing]
        if self.layer_missing is not None:
            keys.append(generation_key(self.model, *self.layer_missing))
        return keys


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def parse_override(value: Any) -> float | None:
    """The override percent of an ``HGET rollout percent`` reply: None when absent; a value that is not a number
    in 0-100 counts as 0 (the safe side: every answer from the champion)."""
    text = _text(value)
    if text is None:
        return None
    try:
        percent = float(text)
    except ValueError:
        return 0.0
    return percent if math.isfinite(percent) and 0.0 <= percent <= 100.0 else 0.0


class LookupState:
    """The state of one reader (the pointer cache, the routes it follows, local overrides, the read cache) and its
    transitions. ``now`` and ``fetched`` are ``time.monotonic()`` seconds, passed in by the reader. With a ``cache``
    every plan answers the ids it holds for the run it reads (``plan_lookup``), and ``one`` / ``one_routed`` say
    what it holds for their one id (the reader hands a reply it had to read to ``remember``)."""

    def __init__(self, refresh_s: float, max_stale_s: float, cache: ReadCache | None = None) -> None:
        self.refresh_s, self.max_stale_s = refresh_s, max_stale_s
        self.cache = cache
        self.entries: dict[str, Pointer] = {}
        self.routes: dict[str, Route] = {}
        self.pins: dict[str, tuple[float, float]] = {}  # model → (override, monotonic time it was set here)

    # ---------------------------------------------------------------- routes and overrides

    def set_route(self, model: str, route: Route | None) -> None:
        """Follow ``route`` for ``model`` (None: champion only). A new challenger version drops the cached pointers,
        so the next lookup reads the new challenger's pointer first."""
        validate_name("model", model)
        old = self.routes.get(model)
        if route is None:
            self.routes.pop(model, None)
        else:
            validate_name("version", route.challenger)
            self.routes[model] = route
        if (old.challenger if old else None) != (route.challenger if route else None):
            self.entries.pop(model, None)
            self.pins.pop(model, None)

    def pin_override(self, model: str, percent: float, since: float) -> None:
        """Apply an override set through this process at once (``since``: when Redis was written, or found
        unreachable). Refreshes sent before ``since`` may still carry the value Redis had before: they keep the
        pinned one; the first refresh sent after it reads what Redis holds, and the pin goes."""
        self.pins[model] = (percent, since)
        entry = self.entries.get(model)
        if entry is not None:
            entry.override = percent

    def view(self, model: str) -> RolloutView | None:
        """The rollout of ``model`` as last read (any age), or None when it has no route."""
        route = self.routes.get(model)
        if route is None:
            return None
        entry = self.entries.get(model)
        if entry is None:
            pin = self.pins.get(model)
            return RolloutView(route, None, None, pin[0] if pin else None, 0.0, False)
        return RolloutView(route, entry.challenger, entry.challenger_id, entry.override, entry.percent(route),
                           entry.shadowing(route))  # fmt: skip

    def variants(self, model: str, entity_ids: Sequence[str]) -> list[str]:
        """The variant of each id by the last state read (any age; never read: the champion), without I/O: what
        an answer says when Redis could not be asked."""
        entry = self.entries.get(model)
        percent = entry.percent(self.routes.get(model)) if entry is not None else 0.0
        if percent <= 0:
            return [CHAMPION] * len(entity_ids)
        return [CHALLENGER if in_canary(model, e, percent) else CHAMPION for e in entity_ids]

    # ---------------------------------------------------------------- pointer cache

    def _state(self, model: str, now: float) -> tuple[Pointer | None, bool]:
        """The usable cache entry (None: read the pointers first) and whether to re-read them with the lookup."""
        entry = self.entries.get(model)
        if entry is None or now - entry.fetched > self.max_stale_s:
            return None, False
        return entry, now - entry.fetched > self.refresh_s

    def entry(self, model: str, now: float) -> Pointer | None:
        """The cached pointers usable at ``now``, or None when they must be read first."""
        return self._state(model, now)[0]

    def run(self, model: str) -> RunInfo | None:
        """The champion run cached for ``model`` (after ``pointer_read``/``meta_read``)."""
        entry = self.entries.get(model)
        return entry.run if entry is not None else None

    def layer(self, model: str) -> LayerInfo | None:
        """The overlay layer of the champion run cached for ``model`` (None: none live)."""
        entry = self.entries.get(model)
        return entry.layer if entry is not None else None

    def refresh(self, model: str) -> Refresh:
        """The pointer reads of ``model``: the champion's pointer, and its route's challenger pointer and override."""
        route = self.routes.get(model)
        if route is None:
            return Refresh(pointer_key(model), layer=layer_key(model))
        challenger = store_key(model, "challenger", route.challenger)
        return Refresh(pointer_key(model), challenger, store_key(model, "rollout"), layer_key(model))

    def pointer_read(self, model: str, replies: Sequence[Any], fetched: float) -> Reading | None:
        """Record the replies of the reads of ``refresh(model)`` (sent at ``fetched``). Returns a ``Reading`` when a
        pointer names a run that is not cached (read its ``meta_keys``, then ``meta_read``), else None."""
        run_id = _text(replies[0])
        routed = len(replies) >= 3
        challenger_id = _text(replies[1]) if routed else None
        override = parse_override(replies[2]) if routed else None
        live_layer = parse_layer_pointer(replies[-1]) if len(replies) in (2, 4) else None
        entry = self.entries.get(model)
        known = {}
        if entry is not None:
            known = {r.run_id: r for r in (entry.run, entry.challenger) if r is not None}
        reading = Reading(model, run_id, challenger_id, override, fetched, known)
        for rid in (run_id, challenger_id):
            if rid is not None and rid not in known and rid not in reading.missing:
                reading.missing.append(rid)
        if live_layer is not None and live_layer[0] == run_id:  # a layer of another run is stale: not served
            cached = entry.layer if entry is not None else None
            if cached is not None and (cached.base, cached.generation) == live_layer:
                reading.layer = cached
            else:
                reading.layer_missing = live_layer
        if reading.missing or reading.layer_missing is not None:
            return reading
        self._record(reading, known)
        return None

    def meta_read(self, reading: Reading, metas: Sequence[Any]) -> None:
        """Record the ``HGETALL`` replies of ``reading.meta_keys`` (an empty one: that run is gone)."""
        runs = dict(reading.known)
        for run_id, meta in zip(reading.missing, metas[: len(reading.missing)], strict=True):
            if meta:
                runs[run_id] = RunInfo.from_meta(meta)
        if reading.layer_missing is not None:
            record = metas[len(reading.missing)]
            reading.layer = LayerInfo.from_record(record) if record else None  # gone: a newer one replaced it
        self._record(reading, runs)

    def _record(self, reading: Reading, runs: dict[str, RunInfo]) -> None:
        model = reading.model
        entry = self.entries.get(model)
        if entry is not None and reading.fetched < entry.fetched:
            return  # a refresh sent before the one recorded (concurrent lookups): never step back
        override = reading.override
        pin = self.pins.get(model)
        if pin is not None:
            if reading.fetched < pin[1]:
                override = pin[0]  # sent before the override was set here: Redis may not have had it yet
            else:
                del self.pins[model]
        run = runs.get(reading.run_id) if reading.run_id is not None else None
        challenger = runs.get(reading.challenger_id) if reading.challenger_id is not None else None
        layer = reading.layer if run is not None and reading.layer is not None else None
        self.entries[model] = Pointer(run, reading.fetched, challenger, reading.challenger_id, override, layer)

    # ---------------------------------------------------------------- lookups

    def query(self, model: str, entity_ids: Sequence[str]) -> list[bytes]:
        """The UTF-8 bytes of every id of a ``get_many`` (``StoreError`` for a bad model name or id)."""
        validate_name("model", model)
        return [encode_entity_id(e) for e in entity_ids]

    def plan(self, model: str, raw_ids: list[bytes], now: float) -> LookupPlan | None:
        """What to send for a champion ``get_many`` of ``raw_ids`` (from ``query``) at ``now``; None: read the
        pointers first (``pointer_read``), then plan again."""
        entry, piggyback = self._state(model, now)
        if entry is None:
            return None
        refresh = self.refresh(model) if piggyback else None
        run = entry.run
        if run is None:
            return LookupPlan(None, [], [], [], len(raw_ids), refresh)
        plan = plan_lookup(run, raw_ids, cache=self.cache, layer=entry.layer)
        plan.refresh = refresh
        return plan

    def plan_routed(self, model: str, entity_ids: Sequence[str], raw_ids: list[bytes], now: float) -> RoutedPlan | None:
        """What to send for a routed lookup of ``entity_ids`` (``raw_ids`` from ``query``) at ``now``: each id's
        variant decided, the HMGETs of the runs they need; None: read the pointers first, then plan again."""
        entry, piggyback = self._state(model, now)
        if entry is None:
            return None
        route = self.routes.get(model)
        refresh = self.refresh(model) if piggyback else None
        run, challenger, size, cache = entry.run, entry.challenger, len(raw_ids), self.cache
        parts: list[tuple[LookupPlan, bool]] = []
        percent = entry.percent(route)
        shadow_run = challenger if entry.shadowing(route) else None
        if percent > 0:
            assert challenger is not None
            variants = [CHAMPION] * size
            rows: tuple[list[int], list[int]] = ([], [])  # positions of the champion's ids, of the challenger's
            for i, entity_id in enumerate(entity_ids):
                if in_canary(model, entity_id, percent):
                    variants[i] = CHALLENGER
                    rows[1].append(i)
                else:
                    rows[0].append(i)
            for part_run, part_rows, layer in ((run, rows[0], entry.layer), (challenger, rows[1], None)):
                if part_run is not None and part_rows:
                    part = plan_lookup(part_run, [raw_ids[i] for i in part_rows], part_rows, size, cache, layer)
                    parts.append((part, False))
        else:
            variants = [CHAMPION] * size
            if run is not None:
                parts.append((plan_lookup(run, raw_ids, cache=cache, layer=entry.layer), False))
            if shadow_run is not None:
                parts.append((plan_lookup(shadow_run, raw_ids, cache=cache), True))
        keys = [k for plan, _ in parts for k in plan.keys]
        fields = [f for plan, _ in parts for f in plan.fields]
        return RoutedPlan(variants, parts, keys, fields, size, refresh, shadow_run)

    def one(self, model: str, entity_id: str, now: float) -> tuple[RunInfo, bytes, Cached | LayerInfo] | None:
        """A champion ``get`` of one id served from a fresh pointer cache: ``(run, raw, cached)``, the id's UTF-8
        bytes and what the read cache holds for it in ``run`` (``ABSENT``: not cached, or no cache): else send the
        one ``HGET`` of ``bucket_key(run, raw)`` and pass ``hit``'s result to ``remember``. The run's layer in
        place of ``cached``: its filter may hold the id; send the ``HGET``s of ``layer.bucket_key(raw)`` and
        ``bucket_key(run, raw)`` in one pipeline and answer ``layered_hit`` (never cached). None: answer with a
        ``get_many`` of the one id (pointer cache aging or cold, or nothing published)."""
        entry, piggyback = self._state(model, now)
        if entry is None or entry.run is None or piggyback:
            return None
        run, raw, layer = entry.run, encode_entity_id(entity_id), entry.layer
        if layer is not None and layer.may_hold(raw):
            return run, raw, layer
        return run, raw, ABSENT if self.cache is None else self.cache.get(run, raw)

    def remember(self, run: RunInfo, raw: bytes, score: StoredScore | None) -> StoredScore | None:
        """Keep what ``run`` holds for ``raw`` in the read cache (when there is one); returns ``score``."""
        if self.cache is not None:
            self.cache.put(run, raw, score)
        return score

    def one_routed(
        self, model: str, entity_id: str, now: float
    ) -> tuple[str, RunInfo, bytes, Cached | LayerInfo] | None:
        """A routed lookup of one id from a fresh pointer cache: ``(variant, run, raw, cached)``, as ``one`` says
        for the variant's run (the champion's layer in place of ``cached`` as there). None: answer with
        ``plan_routed`` (pointer cache aging or cold, nothing to read, or a shadow read: two runs)."""
        entry, piggyback = self._state(model, now)
        if entry is None or piggyback:
            return None
        route = self.routes.get(model)
        variant, run = CHAMPION, entry.run
        if route is not None:
            if entry.shadowing(route):
                return None
            percent = entry.percent(route)
            if percent > 0 and in_canary(model, entity_id, percent):
                variant, run = CHALLENGER, entry.challenger
        if run is None:
            return None
        raw, layer = encode_entity_id(entity_id), entry.layer
        if variant == CHAMPION and layer is not None and layer.may_hold(raw):
            return variant, run, raw, layer
        return variant, run, raw, ABSENT if self.cache is None else self.cache.get(run, raw)
