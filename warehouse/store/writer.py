"""Writing the scores of one run into the Redis score store (``ScoreStore.writer`` builds a ``RunWriter``).

A batch of ids and scores is validated (``warehouse.store.ids``), grouped by bucket and encoded as one HSET per
bucket (``warehouse.store.wire``), and sent pipelined through ``warehouse.store.pipeline``. Each call reports the
rows it wrote to the ``account`` callback the writer was built with (the run's ``loaded_rows`` and heartbeat, so
``finalize_run`` can verify the count and ``cleanup`` can tell a live loader from an abandoned one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeAlias

import numpy as np
import pyarrow as pa

from warehouse.store.ids import id_array
from warehouse.store.keys import RunInfo, score_array, store_key
from warehouse.store.pipeline import BulkPipeline, raise_first_error
from warehouse.store.wire import BucketedBatch, bucketize, hset_commands, select_buckets

IdsLike: TypeAlias = Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray
ScoresLike: TypeAlias = Sequence[float] | np.ndarray | pa.Array


class RunWriter:
    """Writes the scores of one run in state ``loading``.

    Any number of writers (threads, or processes each with its own ``ScoreStore.from_url``) may write the same run at
    once: a batch is grouped by bucket and sent as one HSET per bucket, pipelined without a transaction, ~5000
    entities per round trip. Writing an id twice keeps the last score. ``write_batch`` returns the rows it added and
    passes them to ``account`` (which adds them to the run's ``loaded_rows`` with a heartbeat, and raises
    ``StoreError`` when the run no longer accepts writes). The sends run inside ``out_of_memory()``, the context that
    turns Redis out of memory into ``StoreError`` (and deletes the partial run).
    """

    def __init__(
        self,
        bulk: BulkPipeline,
        info: RunInfo,
        *,
        account: Callable[[int], None],
        out_of_memory: Callable[[], AbstractContextManager[None]],
        entities_per_round_trip: int = 5000,
    ) -> None:
        self.bulk, self.info, self.per_round_trip = bulk, info, entities_per_round_trip
        self._account, self._out_of_memory = account, out_of_memory
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
        self._account(added)
        return added

    def _write(self, batch: BucketedBatch) -> int:
        if not batch.bucket_ids:
            return 0
        keys, per = self._keys(batch), self.per_round_trip

        def encode(positions: list[int] | None) -> list[tuple[bytes, int]]:
            if positions is None:
                return hset_commands(batch, keys, per)
            return hset_commands(select_buckets(batch, positions), [keys[k] for k in positions], per)

        with self._out_of_memory():
            replies = self.bulk.send(keys, encode, self._what())
            raise_first_error(replies)
            return int(sum(replies))
