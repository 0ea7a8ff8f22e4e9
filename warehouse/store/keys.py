"""Key layout and records of the Redis score store: names, key formats, run states and metadata, score values.

No I/O. Layout of one model ``m`` (names built only by ``store_key``):

- ``ps:{m}:current``   string, the published run id (the pointer readers follow)
- ``ps:{m}:history``   list of published run ids, newest first; its head is the current run
- ``ps:{m}:runs``      sorted set of every known run id (score = created_at)
- ``ps:{m}:run:<id>``  hash, the run's metadata (see ``RunInfo``)
- ``ps:{m}:lock:<name>`` string, a lock with a TTL (``ScoreStore.lock``: one restore of a model at a time)
- ``ps:{m}:challenger:<v>`` string, the run of challenger version ``<v>`` (shadow-scored; never the live pointer)
- ``ps:{m}:challengers`` set of the versions that have a challenger pointer
- ``ps:{m}:rollout``   hash, a rollout override the readers obey (``percent`` "0" after ``prescore rollout abort``)
- ``ps:{m}:layer``, ``ps:{m}:layerseq``, ``ps:{m}:layer:<id>:<g>``, ``ps:{m}:ov:<id>:<g>:<b>``: the overlay layer of
  run ``<id>`` (delta runs and invalidations between nightly runs; see ``warehouse.store.overlay``)
- ``ps:s:<m>:<id>:<b>`` hash bucket ``b`` of run ``<id>``: field = entity id (UTF-8), value = float32 little-endian

The per-model keys share the hash tag ``{m}`` (one cluster slot, so create, publish, rollback and cleanup can each
be one WATCH/MULTI transaction on one node); bucket keys carry no tag, so a run's buckets spread over all slots and
every node of a Redis Cluster (writes, counts and lookups are grouped per node by the store). Which bucket holds an
entity is decided in ``warehouse.store.ids``.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from warehouse.errors import StoreError
from warehouse.lazy import lazy_module

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = lazy_module("pyarrow")

TARGET_FIELDS_PER_BUCKET = 64  # half of the default hash-max-listpack-entries: Poisson tails stay < 128
SCORE_BYTES = 4
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class RunState(StrEnum):
    LOADING = "loading"  # being written; heartbeat shows the loader is alive
    LOADED = "loaded"  # counts verified by finalize_run; may be published
    PUBLISHED = "published"  # the current run (exactly one per model)
    RETIRED = "retired"  # was current; kept for rollback until cleanup removes it


def validate_name(kind: str, value: str) -> str:
    """A model name or run id: 1-64 chars of ``[A-Za-z0-9_.-]``, starting alphanumeric (no glob/tag characters)."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise StoreError(
            f"invalid {kind} {value!r}: use 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return value


def store_key(model: str, kind: str, run_id: str = "", bucket: int | str = "") -> str:
    """The one place key names are built. ``kind``: current, history, runs, meta, bucket (``bucket="*"`` → pattern),
    lock (``run_id`` is the lock's name), challenger (``run_id`` is the challenger's model version), challengers,
    rollout, layer, layerseq, generation (``bucket`` is the generation), overlay (``bucket`` is
    ``<generation>:<bucket>``)."""
    if kind == "bucket":
        return f"ps:s:{model}:{run_id}:{bucket}"
    if kind == "meta":
        return f"ps:{{{model}}}:run:{run_id}"
    if kind == "lock":
        return f"ps:{{{model}}}:lock:{run_id}"
    if kind == "challenger":
        return f"ps:{{{model}}}:challenger:{run_id}"
    if kind == "generation":
        return f"ps:{{{model}}}:layer:{run_id}:{bucket}"
    if kind == "overlay":
        return f"ps:{{{model}}}:ov:{run_id}:{bucket}"
    if kind in ("current", "history", "runs", "challengers", "rollout", "layer", "layerseq"):
        return f"ps:{{{model}}}:{kind}"
    raise ValueError(f"unknown key kind {kind!r}")


def run_of_bucket_key(key: bytes | str) -> str:
    """Run id of a bucket key built by ``store_key(..., "bucket", ...)``."""
    text = key.decode() if isinstance(key, bytes) else key
    return text.split(":")[3]


def bucket_count(expected_rows: int, max_listpack_entries: int = 128) -> int:
    """Buckets for a run: ~64 fields each on average, so the fullest bucket stays listpack-encoded."""
    fill = max(1, min(TARGET_FIELDS_PER_BUCKET, max_listpack_entries // 2))
    return max(1, math.ceil(max(0, expected_rows) / fill))


# ---------------------------------------------------------------- values


def score_array(scores: Sequence[float] | np.ndarray | pa.Array, ids: pa.Array) -> np.ndarray:
    """Scores as float32 (one per id of the ``id_array`` ``ids``), or ``StoreError`` for a length mismatch or a
    non-finite score."""
    values = np.asarray(scores.to_numpy(zero_copy_only=False) if isinstance(scores, pa.Array) else scores)
    values = values.astype(np.float32)
    if values.shape != (len(ids),):
        raise StoreError(f"got {len(ids)} entity ids but scores of shape {values.shape}: pass one score per id")
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        raise StoreError(
            f"score of entity {ids[row].as_py().decode()!r} (row {row}) is {values[row]}: scores must be finite"
        )
    return values


def encode_score(score: float) -> bytes:
    return struct.pack("<f", score)


def decode_score(raw: bytes) -> float:
    return float(struct.unpack("<f", raw)[0])


def to_utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


@dataclass(frozen=True, slots=True)
class StoredScore:
    """A hit: the score and the run it came from. ``as_of`` is UTC. ``overlay``: the entity's entry in the run's
    overlay layer (a delta run rescored it: its own ``as_of``; or it was invalidated: ``invalid`` holds the reason
    and ``score`` is NaN, never to be served)."""

    score: float
    run_id: str
    model_version: str
    as_of: datetime
    overlay: bool = False
    invalid: str | None = None


@dataclass(frozen=True)
class RunInfo:
    """Metadata of one run (all timestamps UTC; ``None`` where the event has not happened)."""

    model: str
    run_id: str
    model_version: str
    as_of: datetime
    state: RunState
    expected_rows: int
    loaded_rows: int
    n_buckets: int
    created_at: datetime
    heartbeat_at: datetime | None
    published_at: datetime | None
    retired_at: datetime | None
    reopened_from: RunState | None = None  # a verified run put back to loading to rewrite lost buckets (restore)

    @classmethod
    def from_meta(cls, meta: Mapping[Any, Any]) -> RunInfo:
        text = {k.decode(): v.decode() for k, v in meta.items()}

        def when(name: str) -> datetime | None:
            return to_utc(float(text[name])) if text.get(name) else None

        return cls(
            model=text["model"],
            run_id=text["run_id"],
            model_version=text["model_version"],
            as_of=to_utc(float(text["as_of"])),
            state=RunState(text["state"]),
            expected_rows=int(text["expected_rows"]),
            loaded_rows=int(text.get("loaded_rows", "0")),
            n_buckets=int(text["n_buckets"]),
            created_at=to_utc(float(text["created_at"])),
            heartbeat_at=when("heartbeat"),
            published_at=when("published_at"),
            retired_at=when("retired_at"),
            reopened_from=RunState(text["reopened_from"]) if text.get("reopened_from") else None,
        )


def older_than_live(run_id: str, as_of: datetime, live: RunInfo | None) -> str | None:
    """Why run ``run_id`` (scores as of ``as_of``) must not replace the live run, or None when it may: history
    never overwrites the live store. The one home of that rule: ``ScoreStore.publish`` applies it inside its
    pointer transaction, ``jobs.publish.publish_run`` before it loads anything into Redis."""
    if live is None or live.run_id == run_id or as_of >= live.as_of:
        return None
    return (
        f"run {run_id!r} has scores as of {as_of.isoformat()}, older than the live run {live.run_id!r} "
        f"({live.as_of.isoformat()}): history never replaces the live run (force it if that is intended)"
    )
