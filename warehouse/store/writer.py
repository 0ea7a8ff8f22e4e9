"""Writing the scores of one run into the Redis score store (``ScoreStore.writer`` builds a ``RunWriter``).

A batch of ids and scores is validated (``warehouse.store.ids``), grouped by bucket (``warehouse.store.wire``) and
sent pipelined through ``warehouse.store.pipeline``, each bucket one of two ways:

- ``RESTORE key 0 payload`` (``warehouse.store.listpack``: the DUMP payload Redis itself would produce for the
  bucket) when the batch creates the bucket: Redis loads a whole listpack in one step, several times faster than
  it executes ``HSET`` s of the same fields;
- ``HSET key id score ...`` (``warehouse.store.wire``) into a bucket that exists already (written by an earlier
  batch or another loader), a bucket Redis would not keep as a listpack (more fields than
  ``hash-max-listpack-entries``, an id longer than ``hash-max-listpack-value``), or when ``restore`` is off or
  refused.

A bucket is never half-written: ``RESTORE`` (without ``REPLACE``) creates the whole key or nothing, and answers
``BUSYKEY`` when the key exists, which sends that bucket as ``HSET`` instead (merging into what is there, as ever).
So a retried batch, concurrent loaders of one run, and batches that each hold part of a bucket all end with every
field written once, last score kept. Which buckets exist is known for the ones this writer wrote; for the others, a
batch first asks ``EXISTS`` of a sample of them: mostly present (the run's later parts, when every part spreads over
all buckets) sends the batch as ``HSET``, mostly absent sends ``RESTORE`` with the ``BUSYKEY`` fallback. A load
reaches the ``RESTORE`` rate when each batch holds its buckets' whole content (a loader that owns a range of
buckets, or one batch per run); otherwise only a bucket's first batch is restored and the rest is ``HSET``, at the
``HSET`` rate. A big batch is cut into parts of whole buckets (``wire.bucket_ranges``), and each part is encoded
~``ENCODE_ENTITIES`` at a time as the pipeline sends it, so encoding overlaps with Redis executing the last chunk.

``RESTORE`` is refused by managed Redis that disables it (unknown command, ACL), by a server older than Redis 7.0
(RDB version < 10, no listpack hashes) or a node whose RDB version differs: the writer then sends ``HSET`` for that
batch and every later one. The RDB version is the server's own, read once per writer from ``DUMP`` of the run's
metadata key (the 2 bytes before its CRC), so the payload matches the server it loads into. Out of memory stays
out of memory whichever command hit it.

Each part reports the rows it wrote (new fields: a restored bucket's fields, ``HSET`` 's added count) to the
``account`` callback the writer was built with (the run's ``loaded_rows`` and heartbeat, so ``finalize_run`` can
verify the count and ``cleanup`` can tell a live loader from an abandoned one).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import redis

from warehouse.lazy import lazy_module
from warehouse.store.connection import unavailable
from warehouse.store.ids import id_array
from warehouse.store.keys import RunInfo, score_array, store_key
from warehouse.store.listpack import MIN_RDB_VERSION, dedupe, listpack_fits, restore_commands
from warehouse.store.pipeline import BulkPipeline, raise_first_error
from warehouse.store.wire import (
    BucketedBatch,
    bucket_ranges,
    bucketize,
    hset_commands,
    resp,
    select_buckets,
    slice_buckets,
)

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = lazy_module("pyarrow")

IdsLike: TypeAlias = "Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray"  # strings: pyarrow stays unimported
ScoresLike: TypeAlias = "Sequence[float] | np.ndarray | pa.Array"

log = logging.getLogger(__name__)

DEFAULT_LISTPACK_LIMITS = (128, 64)  # Redis's hash-max-listpack-entries, hash-max-listpack-value
SPLIT_ENTITIES = 131072  # a bigger batch is written in parts of whole buckets (each bucketized on its own)
ENCODE_ENTITIES = 65536  # entities encoded at a time (cache-sized; the next slice encodes while Redis runs this one)
PROBE_BUCKETS = 32  # buckets of a batch asked EXISTS before choosing RESTORE or HSET for the others


def busy_key(reply: Any) -> bool:
    """A ``RESTORE`` reply saying the key exists already."""
    return isinstance(reply, redis.ResponseError) and str(reply).startswith(("BUSYKEY", "Target key name already"))


class RunWriter:
    """Writes the scores of one run in state ``loading``.

    Any number of writers (threads, or processes each with its own ``ScoreStore.from_url``) may write the same run at
    once: a batch is grouped by bucket and each bucket sent as one ``RESTORE`` (a bucket the batch creates) or one
    ``HSET``, pipelined without a transaction, ~5000 entities per round trip. Writing an id twice keeps the last
    score. ``write_batch`` returns the rows it added and passes them to ``account`` (which adds them to the run's
    ``loaded_rows`` with a heartbeat, and raises ``StoreError`` when the run no longer accepts writes). The sends run
    inside ``out_of_memory()``, the context that turns Redis out of memory into ``StoreError`` (and deletes the
    partial run). ``restore = False`` sends every bucket as ``HSET``.
    """

    def __init__(
        self,
        bulk: BulkPipeline,
        info: RunInfo,
        *,
        account: Callable[[int], None],
        out_of_memory: Callable[[], AbstractContextManager[None]],
        entities_per_round_trip: int = 5000,
        listpack_limits: Callable[[], tuple[int, int]] = lambda: DEFAULT_LISTPACK_LIMITS,
        restore: bool = True,
    ) -> None:
        self.bulk, self.info, self.per_round_trip = bulk, info, entities_per_round_trip
        self._account, self._out_of_memory = account, out_of_memory
        self._listpack_limits = listpack_limits
        self.restore = restore
        self._bucket_keys: list[bytes] | None = None
        self._rdb_version: int | None = None  # 0: RESTORE is not used with this server
        self._written = np.zeros(info.n_buckets, dtype=bool)  # buckets this writer wrote (they exist)

    def _keys(self, batch: BucketedBatch) -> list[bytes]:
        if self._bucket_keys is None:
            # store_key's name with the bucket number left as %d (names never hold "%": validate_name)
            template = store_key(self.info.model, "bucket", self.info.run_id, "%d").encode()
            self._bucket_keys = [template % b for b in range(self.info.n_buckets)]
        keys = self._bucket_keys
        return [keys[b] for b in batch.bucket_ids]

    def _what(self) -> str:
        return f"writing run {self.info.run_id} of model {self.info.model}"

    def write_batch(self, entity_ids: IdsLike, scores: ScoresLike) -> int:
        """Write one batch (ids validated first: ``StoreError`` names a bad id). Returns the rows added.

        A batch of more than ``SPLIT_ENTITIES`` is written in parts of whole buckets, each accounted when written:
        hand a loader's whole share of a run (all rows of the buckets it owns) to one call, and every bucket is
        restored whole."""
        ids = id_array(entity_ids)
        values, n = score_array(scores, ids), self.info.n_buckets
        total = 0
        for part_ids, part_scores, crc in bucket_ranges(ids, values, n, SPLIT_ENTITIES):
            added = self._write(bucketize(part_ids, part_scores, n, crc))
            self._account(added)
            total += added
        return total

    # ------------------------------------------------------------ choosing RESTORE or HSET

    def _server_rdb_version(self) -> int:
        """The server's RDB version (``DUMP`` of the run's metadata key), or 0 when RESTORE is not to be used."""
        if self._rdb_version is None:
            meta_key = store_key(self.info.model, "meta", self.info.run_id)
            try:
                with unavailable(self._what()):
                    dump = self.bulk.client.dump(meta_key)
            except redis.ResponseError as exc:  # DUMP renamed or denied: RESTORE will be too
                log.info("run %s of model %s: DUMP refused (%s); loading with HSET", self.info.run_id,
                         self.info.model, exc)  # fmt: skip
                self._rdb_version = 0
                return 0
            if not isinstance(dump, bytes) or len(dump) < 10:
                return 0  # metadata gone (the run was removed: accounting will say so); ask again next batch
            version = int.from_bytes(dump[-10:-8], "little")
            self._rdb_version = version if version >= MIN_RDB_VERSION else 0
        return self._rdb_version

    def _refuse_restore(self, reply: Exception) -> None:
        if self._rdb_version != 0:
            log.warning(
                "run %s of model %s: Redis refused RESTORE (%s); loading with HSET", self.info.run_id,
                self.info.model, reply,
            )  # fmt: skip
        self._rdb_version = 0

    def _absent(self, keys: list[bytes], positions: np.ndarray) -> bool:
        """Whether most buckets at ``positions`` are absent, by ``EXISTS`` of up to ``PROBE_BUCKETS`` of them."""
        sample = positions[np.linspace(0, len(positions) - 1, min(PROBE_BUCKETS, len(positions))).astype(np.int64)]
        probe = [keys[k] for k in np.unique(sample).tolist()]

        def encode(chosen: list[int] | None) -> list[tuple[bytes, int]]:
            picked = probe if chosen is None else [probe[k] for k in chosen]
            return [(b"".join(resp(b"EXISTS", k) for k in picked), len(picked))]

        replies = self.bulk.send(probe, encode, self._what())
        raise_first_error(replies)
        return 2 * int(sum(replies)) < len(probe)

    def _plan(self, batch: BucketedBatch, keys: list[bytes]) -> tuple[BucketedBatch, np.ndarray]:
        """The batch to send (deduplicated when some of it is restored) and which of its buckets to RESTORE."""
        none = np.zeros(len(batch.bucket_ids), dtype=bool)
        if not self.restore or not self._server_rdb_version():
            return batch, none
        batch = dedupe(batch)
        entries, value = self._listpack_limits()
        restore = listpack_fits(batch, entries, value) & ~self._written[np.asarray(batch.bucket_ids)]
        candidates = np.flatnonzero(restore)
        if len(candidates) and not self._absent(keys, candidates):
            return batch, none  # another batch created these buckets: add to them
        return batch, restore

    # ------------------------------------------------------------ sending

    def _write(self, batch: BucketedBatch) -> int:
        if not batch.bucket_ids:
            return 0
        keys = self._keys(batch)
        with self._out_of_memory():
            batch, restore = self._plan(batch, keys)
            restored = np.flatnonzero(restore).tolist()
            hset = np.flatnonzero(~restore).tolist()
            order = restored + hset
            sizes = np.diff(np.asarray(batch.starts, dtype=np.int64))
            rows = self._send(batch, keys, order, len(restored))
            added, again = 0, []
            for k, reply in zip(order[: len(restored)], rows[: len(restored)], strict=True):
                if reply == b"OK" or reply == "OK":
                    added += int(sizes[k])
                elif isinstance(reply, redis.exceptions.OutOfMemoryError):
                    raise reply
                elif busy_key(reply):
                    again.append(k)  # created meanwhile (another loader, or this batch's earlier try)
                else:
                    self._refuse_restore(reply)
                    again.append(k)
            raise_first_error(rows[len(restored) :])
            added += int(sum(rows[len(restored) :]))
            if again:
                replies = self._send(batch, keys, again, 0)
                raise_first_error(replies)
                added += int(sum(replies))
            self._written[np.asarray(batch.bucket_ids)] = True
            return added

    def _send(self, batch: BucketedBatch, keys: list[bytes], order: list[int], n_restore: int) -> list[Any]:
        """Replies of one command per bucket ``order[i]`` of ``batch``: RESTORE for the first ``n_restore``, HSET for
        the others. Encoded lazily, ~``ENCODE_ENTITIES`` at a time, as the pipeline sends them."""
        per = self.per_round_trip
        version = self._rdb_version or 0

        def encode(positions: list[int] | None) -> Iterator[tuple[bytes, int]]:
            if positions is None:
                runs = [(True, order[:n_restore]), (False, order[n_restore:])]
            else:
                runs = [(r, [order[i] for i in g]) for r, g in itertools.groupby(positions, lambda i: i < n_restore)]
            for restoring, ks in runs:
                if not ks:
                    continue
                # ks ascends (``order`` is two ascending lists, and positions ascend): all of them is the whole batch
                sub = batch if len(ks) == len(batch.bucket_ids) else select_buckets(batch, ks)
                sub_keys = [keys[k] for k in ks]
                ends = np.cumsum(np.diff(np.asarray(sub.starts, dtype=np.int64)))
                cuts = np.searchsorted(ends, np.arange(ENCODE_ENTITIES, int(ends[-1]), ENCODE_ENTITIES)) + 1
                for lo, hi in itertools.pairwise(sorted({0, *cuts.tolist(), len(ks)})):
                    piece = slice_buckets(sub, lo, hi)
                    if restoring:
                        yield from restore_commands(piece, sub_keys[lo:hi], version, per)
                    else:
                        yield from hset_commands(piece, sub_keys[lo:hi], per)

        return self.bulk.send([keys[k] for k in order], encode, self._what())
