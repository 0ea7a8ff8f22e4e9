"""The overlay layer of a live run, as readers and writers both see it: its keys, values, membership filter and
record. No I/O (the write side is ``warehouse.store.overlays``, the read side ``warehouse.store.lookup``).

Between two nightly runs, delta runs (rescored and new entities) and invalidations (entities whose score is known
to be wrong) change a few entities of the live run. They are kept in one merged **layer** per base run, in
**generations**: each publish of a delta or an invalidation writes a whole new generation (the entries of the one
before merged with the new ones) and then flips the layer pointer, so a reader sees the base with every overlay up
to some generation, never half of one, and the lookup cost does not grow with the number of overlays (1 or 10
deltas: one generation). Keys of model ``m`` (all under the ``{m}`` hash tag: one node of a Redis Cluster, so the
flip is one WATCH/MULTI transaction with the champion pointer):

- ``ps:{m}:layer``                  string ``<base run>:<generation>``, the live layer (absent: none). Applies only
  while ``<base run>`` is the current run; every pointer change (publish, rollback, restore) deletes it.
- ``ps:{m}:layerseq``               counter of generations (never reused, so a crashed writer's leftovers never mix in)
- ``ps:{m}:layer:<base>:<g>``       hash, the generation's record (``LayerInfo``) and its membership ``filter``
- ``ps:{m}:ov:<base>:<g>:<b>``      hash bucket ``b`` of generation ``g``: field = entity id, value = an entry

An entry is 12 bytes for a rescored entity (float32 score, float64 ``as_of`` epoch seconds, little-endian: the
entity's own ``as_of``) or ``!`` + a reason (UTF-8) for an invalidated one. The filter is a Bloom filter over the
generation's ids: a reader reads the layer's bucket only for ids it may hold, so an id outside the layer costs a
filter check (~1.5 µs) more than without one, and about 0.6 % of them read the layer's bucket for nothing.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from warehouse.errors import StoreError
from warehouse.store.ids import bucket_of
from warehouse.store.keys import StoredScore, store_key, to_utc

RESCORED = struct.Struct("<fd")  # score, as_of epoch seconds
INVALID = b"!"
MAX_REASON_BYTES = 200
FILTER_BITS_PER_ID = 12  # with FILTER_HASHES: ~0.8 % of the ids outside the layer read its bucket too
FILTER_HASHES = 4
# Fields per layer bucket: a hash this large is hashtable-encoded (about 70 bytes an entry instead of a listpack's
# 25: 70 MB at the 1M-entity bound), and expiring one blocks Redis for a few milliseconds; in exchange a batch's
# layered ids cost one or two extra HMGETs (BENCHMARKS.md, "Overlay layer").
LAYER_FIELDS_PER_BUCKET = 65_536


def layer_key(model: str) -> str:
    return store_key(model, "layer")


def generation_key(model: str, base: str, generation: int | str) -> str:
    return store_key(model, "generation", base, generation)


def overlay_bucket_key(model: str, base: str, generation: int | str, bucket: int | str) -> str:
    return store_key(model, "overlay", base, f"{generation}:{bucket}")


def parse_layer_pointer(value: Any) -> tuple[str, int] | None:
    """``(base run, generation)`` of a ``GET ps:{m}:layer`` reply (None: no layer, or a value it cannot be)."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    base, _, generation = text.rpartition(":")
    return (base, int(generation)) if base and generation.isdigit() else None


def overlay_buckets(entities: int) -> int:
    """Buckets of a generation of ``entities``: few and large (``LAYER_FIELDS_PER_BUCKET``), so the ids of one batch
    that the layer may hold are read with one or two extra ``HMGET``s, not one per id."""
    return max(1, math.ceil(entities / LAYER_FIELDS_PER_BUCKET))


# ---------------------------------------------------------------- entries


def rescored(score: float, as_of: float) -> bytes:
    return RESCORED.pack(score, as_of)


def invalidated(reason: str) -> bytes:
    """The entry of an invalidated entity; ``StoreError`` for a reason that is too long."""
    raw = reason.encode()
    if len(raw) > MAX_REASON_BYTES:
        raise StoreError(f"invalidation reason is {len(raw)} bytes: keep it to {MAX_REASON_BYTES}")
    return INVALID + raw


def is_invalid(entry: bytes) -> bool:
    return entry[:1] == INVALID and len(entry) != RESCORED.size


def entry_result(entry: bytes, run_id: str, model_version: str, as_of: datetime) -> StoredScore:
    """The lookup result of a layer entry of base run ``run_id``: the rescored score with its own ``as_of``, or an
    invalidated result (score NaN, ``invalid`` = the reason, ``as_of`` the base run's)."""
    if len(entry) == RESCORED.size:
        score, at = RESCORED.unpack(entry)
        return StoredScore(score, run_id, model_version, to_utc(at), overlay=True)
    reason = entry[1:].decode() or "invalidated"
    return StoredScore(math.nan, run_id, model_version, as_of, overlay=True, invalid=reason)


# ---------------------------------------------------------------- membership filter


def _hashes(raw_id: bytes) -> tuple[int, int]:
    """Two 32-bit hashes of an id for double hashing: ``zlib.crc32`` (C, ~0.1 µs) and a multiplicative mix of it
    (a murmur3-style finaliser), odd so that every probe differs."""
    h1 = zlib.crc32(raw_id)
    h2 = ((h1 ^ (h1 >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    h2 = ((h2 ^ (h2 >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    return h1, (h2 ^ (h2 >> 16)) | 1


def build_filter(raw_ids: Iterable[bytes], count: int) -> bytes:
    """A Bloom filter of ``count`` ids (``FILTER_BITS_PER_ID`` bits each, at least 64)."""
    bits = bytearray((max(64, count * FILTER_BITS_PER_ID) + 7) // 8)
    n_bits = len(bits) * 8  # what a reader takes: the filter's length in bits
    for raw in raw_ids:
        h1, h2 = _hashes(raw)
        for i in range(FILTER_HASHES):
            pos = (h1 + i * h2) % n_bits
            bits[pos >> 3] |= 1 << (pos & 7)
    return bytes(bits)


def may_hold(bits: bytes, raw_id: bytes) -> bool:
    """Whether the filter ``bits`` may hold ``raw_id`` (False: it surely does not). About 1 µs: on every lookup of
    a model with a layer."""
    h1, h2 = _hashes(raw_id)
    n_bits = len(bits) << 3
    pos = h1 % n_bits
    if not bits[pos >> 3] >> (pos & 7) & 1:
        return False
    for i in range(1, FILTER_HASHES):
        pos = (h1 + i * h2) % n_bits
        if not bits[pos >> 3] >> (pos & 7) & 1:
            return False
    return True


# ---------------------------------------------------------------- the record of one generation


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """One generation of a model's layer: its base run, number, bucket count, membership filter and what it
    holds (``rescored`` entities from ``overlays`` delta runs, the newest of them as of ``newest_as_of``;
    ``invalidated`` entities), when it was written (UTC) and the delta runs it holds, oldest first."""

    model: str
    base: str
    generation: int
    n_buckets: int
    filter: bytes
    rescored: int
    invalidated: int
    overlays: int
    newest_as_of: datetime | None
    created_at: datetime
    deltas: tuple[str, ...] = ()

    @property
    def entities(self) -> int:
        return self.rescored + self.invalidated

    def bucket_key(self, raw_id: bytes) -> str:
        return overlay_bucket_key(self.model, self.base, self.generation, bucket_of(raw_id, self.n_buckets))

    def may_hold(self, raw_id: bytes) -> bool:
        return may_hold(self.filter, raw_id)

    def describe(self) -> dict[str, Any]:
        """What ``prescore status`` and ``/v1/models`` show of the layer (times as ISO text)."""
        return {
            "generation": self.generation, "overlays": self.overlays, "deltas": list(self.deltas),
            "newest_as_of": self.newest_as_of.isoformat() if self.newest_as_of else None,
            "entities": self.entities, "rescored": self.rescored, "invalidated": self.invalidated,
            "published_at": self.created_at.isoformat(),
        }  # fmt: skip

    def record(self) -> dict[str, bytes | str]:
        """The fields of the generation's hash."""
        return {
            "model": self.model,
            "base": self.base,
            "generation": str(self.generation),
            "n_buckets": str(self.n_buckets),
            "filter": self.filter,
            "rescored": str(self.rescored),
            "invalidated": str(self.invalidated),
            "overlays": str(self.overlays),
            "newest_as_of": repr(self.newest_as_of.timestamp()) if self.newest_as_of else "",
            "created_at": repr(self.created_at.timestamp()),
            "deltas": ",".join(self.deltas),
        }

    @classmethod
    def from_record(cls, meta: Mapping[Any, Any]) -> LayerInfo:
        raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in meta.items()}
        text = {k: (v.decode() if isinstance(v, bytes) and k != "filter" else v) for k, v in raw.items()}
        newest = text.get("newest_as_of") or ""
        return cls(
            model=text["model"],
            base=text["base"],
            generation=int(text["generation"]),
            n_buckets=int(text["n_buckets"]),
            filter=bytes(raw["filter"]),
            rescored=int(text["rescored"]),
            invalidated=int(text["invalidated"]),
            overlays=int(text["overlays"]),
            newest_as_of=to_utc(float(newest)) if newest else None,
            created_at=to_utc(float(text["created_at"])),
            deltas=tuple(d for d in text.get("deltas", "").split(",") if d),
        )
