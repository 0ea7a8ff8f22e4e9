"""The pure core of a score reader: the current-run pointer cache and, for each lookup, the commands to send and
how their replies become results. No I/O: ``ScoreReader`` and ``AsyncScoreReader`` (``warehouse.store.readers``)
send what ``LookupState`` asks for and hand the replies back, so both share every decision made here.

Pointer cache, per model: younger than ``refresh_s``, the cached run is used as is; up to ``max_stale_s``, it is
used and the pointer is re-read in the same round trip as the lookup; older (or never read), the pointer is read
first. A pointer naming a run not cached costs one more read, of that run's metadata.

A lookup is one round trip: one ``HMGET`` per bucket of the run (``plan_lookup``), and ``GET`` of the pointer in
the same pipeline unless the cache is fresh and one bucket answers every id (then the ``HMGET`` goes alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from warehouse.store.ids import bucket_of, encode_entity_id
from warehouse.store.keys import RunInfo, StoredScore, decode_score, store_key, validate_name


@dataclass(slots=True)
class LookupPlan:
    """The commands of one lookup in ``run``: ``HMGET keys[k] *fields[k]`` answers the ids at ``rows[k]``, then
    ``GET pointer`` when ``pointer`` is set (all in one pipeline). With ``pointer`` None at most one ``HMGET`` is
    sent, as a plain command; no ``run`` (nothing published) means every id is a miss."""

    run: RunInfo | None
    keys: list[bytes]
    fields: list[list[bytes]]
    rows: list[list[int]]
    size: int
    pointer: str | None = None

    def answer(self, replies: Sequence[Sequence[Any]]) -> list[StoredScore | None]:
        """One result per requested id from the replies of the ``HMGET``s (in ``keys`` order, without the reply of
        ``GET pointer``)."""
        return assemble(self, replies) if self.run is not None else [None] * self.size


def plan_lookup(run: RunInfo, raw_ids: list[bytes], pointer: str | None = None) -> LookupPlan:
    """Group ids (UTF-8 bytes) by bucket of ``run``: one HMGET per bucket."""
    by_bucket: dict[int, tuple[list[bytes], list[int]]] = {}
    for row, raw in enumerate(raw_ids):
        fields, rows = by_bucket.setdefault(bucket_of(raw, run.n_buckets), ([], []))
        fields.append(raw)
        rows.append(row)
    keys = [store_key(run.model, "bucket", run.run_id, b).encode() for b in by_bucket]
    fields_of, rows_of = [f for f, _ in by_bucket.values()], [r for _, r in by_bucket.values()]
    return LookupPlan(run, keys, fields_of, rows_of, len(raw_ids), pointer)


def assemble(plan: LookupPlan, replies: Sequence[Sequence[Any]]) -> list[StoredScore | None]:
    """One result per requested id of ``plan`` (which has a run), in request order: ``None`` for a miss, else the
    score and its run."""
    run = plan.run
    assert run is not None
    out: list[StoredScore | None] = [None] * plan.size
    for rows, values in zip(plan.rows, replies, strict=True):
        for row, raw in zip(rows, values, strict=True):
            if raw is not None:
                out[row] = StoredScore(decode_score(raw), run.run_id, run.model_version, run.as_of)
    return out


def hit(run: RunInfo, value: Any) -> StoredScore | None:
    """The result of an ``HGET`` reply of ``run``'s bucket: None for a miss."""
    return None if value is None else StoredScore(decode_score(value), run.run_id, run.model_version, run.as_of)


def pointer_key(model: str) -> str:
    """The key of ``model``'s current-run pointer (what ``GET`` reads before or with a lookup)."""
    return store_key(model, "current")


@dataclass
class Pointer:
    """A cached read of a model's pointer: the run it named (None: nothing published) and when it was read."""

    run: RunInfo | None
    fetched: float


class LookupState:
    """The state of one reader (the pointer cache) and its transitions. ``now`` and ``fetched`` are
    ``time.monotonic()`` seconds, passed in by the reader."""

    def __init__(self, refresh_s: float, max_stale_s: float) -> None:
        self.refresh_s, self.max_stale_s = refresh_s, max_stale_s
        self.entries: dict[str, Pointer] = {}

    def _state(self, model: str, now: float) -> tuple[Pointer | None, bool]:
        """The usable cache entry (None: read the pointer first) and whether to re-read the pointer with the lookup."""
        entry = self.entries.get(model)
        if entry is None or now - entry.fetched > self.max_stale_s:
            return None, False
        return entry, now - entry.fetched > self.refresh_s

    def entry(self, model: str, now: float) -> Pointer | None:
        """The cached pointer usable at ``now``, or None when the pointer must be read first."""
        return self._state(model, now)[0]

    def run(self, model: str) -> RunInfo | None:
        """The run cached for ``model`` (after ``pointer_read``/``meta_read``)."""
        entry = self.entries.get(model)
        return entry.run if entry is not None else None

    def pointer_read(self, model: str, reply: Any, fetched: float) -> str | None:
        """Record the reply of ``GET pointer_key(model)``. Returns the metadata key to ``HGETALL`` when the pointer
        names a run that is not cached (pass its reply to ``meta_read``), else None."""
        run_id = reply.decode() if isinstance(reply, bytes) else reply
        entry = self.entries.get(model)
        if run_id is None or (entry is not None and entry.run is not None and entry.run.run_id == run_id):
            self.entries[model] = Pointer(entry.run if (entry and run_id) else None, fetched)
            return None
        return store_key(model, "meta", str(run_id))

    def meta_read(self, model: str, meta: Any, fetched: float) -> None:
        """Record the reply of the ``HGETALL`` asked for by ``pointer_read`` (empty: the run is gone)."""
        self.entries[model] = Pointer(RunInfo.from_meta(meta) if meta else None, fetched)

    def query(self, model: str, entity_ids: Sequence[str]) -> list[bytes]:
        """The UTF-8 bytes of every id of a ``get_many`` (``StoreError`` for a bad model name or id)."""
        validate_name("model", model)
        return [encode_entity_id(e) for e in entity_ids]

    def plan(self, model: str, raw_ids: list[bytes], now: float) -> LookupPlan | None:
        """What to send for a ``get_many`` of ``raw_ids`` (from ``query``) at ``now``; None: read the pointer first
        (``pointer_read``), then plan again."""
        entry, piggyback = self._state(model, now)
        if entry is None:
            return None
        run = entry.run
        if run is None:
            return LookupPlan(None, [], [], [], len(raw_ids), pointer_key(model) if piggyback else None)
        plan = plan_lookup(run, raw_ids)
        if piggyback or len(plan.keys) != 1:
            plan.pointer = pointer_key(model)
        return plan

    def single(self, model: str, entity_id: str, now: float) -> tuple[RunInfo, str, bytes] | None:
        """The one ``HGET`` of a ``get`` served from a fresh cache: ``(run, bucket key, field)``; pass its reply to
        ``hit``. None: answer with a ``get_many`` of the one id (cache stale or cold, or nothing published)."""
        entry, piggyback = self._state(model, now)
        if entry is None or entry.run is None or piggyback:
            return None
        run = entry.run
        raw = encode_entity_id(entity_id)
        return run, store_key(run.model, "bucket", run.run_id, bucket_of(raw, run.n_buckets)), raw
