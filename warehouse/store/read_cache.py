"""A bounded in-process cache of looked-up scores, keyed by run: ``ReadCache``.

A published run never changes (a run is complete before any pointer names it, and a run id is never reused for
other scores), so ``(model, run id, entity id)`` → the score read from that run stays right for as long as the
process lives. The readers (``warehouse.store.readers``) take the run from the pointer cache at the lookup (the
champion's run, a canary variant's run, or the challenger's run read in shadow) and look each id up here first;
only the ids not found go to Redis, and their replies are stored on the way back. A publish, a rollback, a restore
of the pointer, a promotion or a canary change moves the next lookups to another run, hence to other keys: the
cache is invalidated by construction, never told. The entries of runs no longer read are evicted first.

Misses are cached too (``None``: the id has no score in that run), bounded the same way. Both bounds hold at all
times: at most ``max_entries`` entries and at most ``max_bytes`` of their approximate size (``entry_bytes``: what
one entry holds in CPython, measured with ``tracemalloc``, plus the id's length); the least recently used entry of
the run least recently written to goes first (LRU within a run: ``ReadCache``), and each one evicted is counted.
``clear`` empties it: what a reader does when Redis may have lost part of a run (cached misses of a run restored
under the same id would otherwise outlive the restore).

An entry is the id's bytes (the key, in its run's ``OrderedDict``) and the score alone (a float, or None), never a
``StoredScore``: neither is tracked by the garbage collector, so a full cache adds nothing to the collector's passes
(100k tracked objects would add milliseconds to every full one, paid by the requests in flight); a hit builds the
``StoredScore`` from the run. Per run rather than keyed by (model, run id, id): a miss builds no key tuple, and an
entry takes 129 bytes instead of 193 (a 13-byte id), ~20 % less time to store and evict (measured).

No I/O, no locks: one event loop (or one thread) per reader, like the pointer cache. ``hits`` / ``misses`` count the
ids found / not found, ``evictions`` the entries dropped for room (``clear`` is not counted).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final, Literal

from warehouse.store.keys import RunInfo, StoredScore

# Accounted bytes of one entry besides the id's own bytes: the id's bytes object, its run's OrderedDict slot and
# link, the score's float (the model and run id strings are shared with the run's metadata). tracemalloc: 129 bytes
# per entry of a 13-byte id over 100k entries (CPython 3.11); 160 leaves room for the dicts' growth steps, so the
# bound is an upper bound of the real size.
ENTRY_OVERHEAD: Final = 160


class Absent(enum.Enum):
    """The type of ``ABSENT``: what ``ReadCache.get`` returns for an id it does not hold (``None`` is a cached miss)."""

    ABSENT = 0


ABSENT: Final = Absent.ABSENT
Cached = StoredScore | None | Literal[Absent.ABSENT]


def entry_bytes(raw_id: bytes) -> int:
    """The accounted size of one entry of an entity id of ``raw_id`` (its UTF-8 bytes)."""
    return ENTRY_OVERHEAD + len(raw_id)


class ReadCache:
    """See the module docstring. ``max_entries`` >= 1 and ``max_bytes`` >= one entry's size.

    Entries are kept per run, each run's in LRU order (``OrderedDict`` keyed by the id's bytes: no key object is
    built per lookup), the runs in the order they were last written to: eviction takes the least recently used entry
    of the run least recently written to, so the entries of runs no longer read go first."""

    __slots__ = ("_last", "_models", "_order", "_size", "bytes", "evictions", "hits", "max_bytes", "max_entries",
                 "misses")  # fmt: skip

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 64 << 20) -> None:
        if max_entries < 1 or max_bytes < entry_bytes(b"x"):
            raise ValueError(f"a read cache needs max_entries >= 1 and max_bytes >= {entry_bytes(b'x')}")
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._models: dict[str, dict[str, OrderedDict[bytes, float | None]]] = {}  # model → run id → entries
        self._order: OrderedDict[tuple[str, str], OrderedDict[bytes, float | None]] = OrderedDict()  # by last write
        self._last: OrderedDict[bytes, float | None] | None = None  # the entries written to last
        self._size = self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return self._size

    def get(self, run: RunInfo, raw_id: bytes) -> Cached:
        """The cached result of ``raw_id`` (UTF-8 bytes) in ``run`` (``None``: a cached miss), or ``ABSENT``."""
        runs = self._models.get(run.model)
        entries = runs.get(run.run_id) if runs is not None else None
        found = entries.get(raw_id, ABSENT) if entries is not None else ABSENT
        if found is ABSENT:
            self.misses += 1
            return ABSENT
        try:  # noqa: SIM105 (contextlib.suppress costs a context manager on every hit)
            entries.move_to_end(raw_id)  # type: ignore[union-attr]
        except KeyError:  # evicted meanwhile by another thread sharing a blocking reader: still a right answer
            pass
        self.hits += 1
        return None if found is None else StoredScore(found, run.run_id, run.model_version, run.as_of)

    def put(self, run: RunInfo, raw_id: bytes, value: StoredScore | None) -> None:
        """Store what ``run`` holds for ``raw_id`` (``None``: no score), evicting the least recently used entries
        beyond either bound."""
        runs = self._models.get(run.model)
        entries = runs.get(run.run_id) if runs is not None else None
        if entries is None or entries is not self._last:
            entries = self._entries(run)
        if raw_id in entries:  # two lookups of one id raced to Redis: the run's value is the same
            return
        size = ENTRY_OVERHEAD + len(raw_id)
        if size > self.max_bytes:
            return
        entries[raw_id] = None if value is None else value.score
        self._size += 1
        self.bytes += size
        if self._size > self.max_entries or self.bytes > self.max_bytes:
            self._evict()

    def _entries(self, run: RunInfo) -> OrderedDict[bytes, float | None]:
        """The entries of ``run`` (created when new), made the most recently written run."""
        key = (run.model, run.run_id)
        entries = self._order.get(key)
        if entries is None:
            entries = self._order[key] = self._models.setdefault(run.model, {})[run.run_id] = OrderedDict()
        else:
            self._order.move_to_end(key)
        self._last = entries
        return entries

    def _evict(self) -> None:
        order = self._order
        while self._size > self.max_entries or self.bytes > self.max_bytes:
            (model, run_id), entries = next(iter(order.items()))
            raw_id, _ = entries.popitem(last=False)
            self._size -= 1
            self.bytes -= ENTRY_OVERHEAD + len(raw_id)
            self.evictions += 1
            if not entries:
                del order[(model, run_id)]
                runs = self._models[model]
                del runs[run_id]
                if not runs:
                    del self._models[model]
                if self._last is entries:
                    self._last = None

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        self._models.clear()
        self._order.clear()
        self._last = None
        self._size = self.bytes = 0
