"""Writing the scores of one run into the Redis score store (``ScoreStore.writer``).

A batch of ids and scores is validated, grouped by bucket (``warehouse.store.layout``) and sent as one HSET per
bucket — or, for a writer that owns whole buckets, as RESTOREs of payloads built client-side — pipelined through
``warehouse.store.pipeline``. Each call adds the rows it wrote to the run's ``loaded_rows`` with a heartbeat, so
``finalize_run`` can verify the count and ``cleanup`` can tell a live loader from an abandoned one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import pyarrow as pa
import redis

from warehouse.store.layout import RunInfo, crc32s, id_array, score_array, store_key
from warehouse.store.pipeline import raise_first_error
from warehouse.store.wire import (
    BucketedBatch,
    bucketize,
    has_duplicates,
    hset_commands,
    restore_commands,
    restore_payloads,
    select_buckets,
)

if TYPE_CHECKING:
    from warehouse.store.score_store import ScoreStore

IdsLike: TypeAlias = Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray
ScoresLike: TypeAlias = Sequence[float] | np.ndarray | pa.Array


class RunWriter:
    """Writes the scores of one run in state ``loading``.

    Any number of writers (threads, or processes each with its own ``ScoreStore.from_url``) may write the same run at
    once: a batch is grouped by bucket and sent as one HSET per bucket, pipelined without a transaction, ~5000
    entities per round trip. Writing an id twice keeps the last score. ``write_batch`` returns the rows it added and
    adds them to the run's ``loaded_rows`` (HINCRBY) with a heartbeat. Redis out of memory → ``StoreError``; the
    partial run is deleted and the published run is untouched.
    """

    def __init__(self, store: ScoreStore, info: RunInfo, entities_per_round_trip: int = 5000) -> None:
        self.store, self.info, self.per_round_trip = store, info, entities_per_round_trip
        self._bucket_keys: list[bytes] | None = None

    def _keys(self, batch: BucketedBatch) -> list[bytes]:
        if self._bucket_keys is None:
            model, run_id = self.info.model, self.info.run_id
            self._bucket_keys = [store_key(model, "bucket", run_id, b).encode() for b in range(self.info.n_buckets)]
        keys = self._bucket_keys
        return [keys[b] for b in batch.bucket_ids]

    def _what(self) -> str:
        return f"writing run {self.info.run_id} of model {self.info.model}"

    def write_batch(self, entity_ids: IdsLike, scores: ScoresLike) -> int:
        """Write one batch (ids validated first: ``StoreError`` names a bad id). Returns the rows added."""
        ids = id_array(entity_ids)
        batch = bucketize(ids, score_array(scores, ids), self.info.n_buckets)
        added = self._write(batch)
        self.store._bump(self.info.model, self.info.run_id, added)
        return added

    def _write(self, batch: BucketedBatch) -> int:
        if not batch.bucket_ids:
            return 0
        keys, per = self._keys(batch), self.per_round_trip

        def encode(positions: list[int] | None) -> list[tuple[bytes, int]]:
            if positions is None:
                return hset_commands(batch, keys, per)
            return hset_commands(select_buckets(batch, positions), [keys[k] for k in positions], per)

        with self.store._out_of_memory(self.info.model, self.info.run_id, True):
            replies = self.store.bulk.send(keys, encode, self._what())
            raise_first_error(replies)
            return int(sum(replies))

    def write_buckets(self, entity_ids: IdsLike, scores: ScoresLike) -> int:
        """Faster path for a writer that owns whole buckets: each bucket is built client-side and sent with
        ``RESTORE``. Contract: this call holds every entity of each bucket it touches and no other writer writes
        those buckets (partition rows by ``score_layout.buckets(ids, n_buckets)``). Buckets that already exist or
        that the server refuses (other payload version) fall back to HSET, so the result is the same either way."""
        ids = id_array(entity_ids)
        values = score_array(scores, ids)
        crc = crc32s(ids)
        if has_duplicates(ids, crc):
            return self.write_batch(ids, values)
        batch = bucketize(ids, values, self.info.n_buckets, crc)
        if not batch.bucket_ids:
            return self.write_batch(ids, values)
        sizes = np.diff(batch.starts).tolist()
        keys, per = self._keys(batch), self.per_round_trip
        payloads = restore_payloads(batch)

        def encode(positions: list[int] | None) -> list[tuple[bytes, int]]:
            if positions is None:
                return restore_commands(keys, payloads, sizes, per)
            pick = positions
            return restore_commands([keys[k] for k in pick], [payloads[k] for k in pick], [sizes[k] for k in pick], per)

        with self.store._out_of_memory(self.info.model, self.info.run_id, True):
            replies = self.store.bulk.send(keys, encode, self._what())
            raise_first_error([r for r in replies if isinstance(r, redis.exceptions.OutOfMemoryError)])
        refused = [k for k, r in enumerate(replies) if isinstance(r, Exception)]
        added = sum(sizes) - sum(sizes[k] for k in refused)
        if refused:
            added += self._write(select_buckets(batch, refused))
        self.store._bump(self.info.model, self.info.run_id, added)
        return added
