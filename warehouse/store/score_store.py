"""``ScoreStore``, the write side of the Redis score store: one object over the run lifecycle, publication,
retention and locks.

Contract (the jobs layer uses only this):

- A run ``(model, run_id)`` lives in its own namespace (``warehouse.store.keys``) and moves through
  ``loading → loaded → published → retired``; ``create_run`` → ``RunWriter.write_batch`` (from any number of
  processes at once) → ``finalize_run`` (counts) → ``sample_check`` → ``publish``.
- ``publish`` is one atomic pointer change; readers see the old run or the new one, never a mix. The current run
  and the ``keep_runs`` runs published before it stay loaded for an instant ``rollback``; ``cleanup`` removes older
  runs, runs of crashed loaders, and leftovers of interrupted cleanups.
- Redis Cluster (``PRESCORE_REDIS_URL`` with ``?cluster=true``, see ``warehouse.store.connection``) keeps every
  guarantee above: create, finalize, publish, rollback and cleanup are WATCH/MULTI transactions on the one node that
  owns the model's ``{model}`` hash tag; bulk writes (HSET) and counts (HLEN) are grouped by the node of each bucket
  key and pipelined to every node at once (commands redirected by a moving slot are resent after the slot map is
  refreshed, a few times, then ``StoreUnavailableError``); Lua runs on the node of its one key; cleanup scans every
  primary node.
- Between nightly runs, ``overlays`` (``warehouse.store.overlays.Overlays``) publishes delta runs and
  invalidations over the live run as one overlay layer in generations; a publish or rollback drops it.
- Recovery after Redis lost data (``jobs.restore``): ``reopen_run`` lets a verified run's lost buckets be written
  again (same scores), ``purge_run_keys`` drops the buckets of a run whose metadata is gone, ``restore_pointer``
  flips the pointer back only while it is still what the caller saw, ``lock`` keeps one restore of a model at a time.
- Refusals raise ``StoreError`` (what, where, what to do); lost connections and timeouts raise
  ``StoreUnavailableError`` (retry later; ``create_run``, ``write_batch``, ``finalize_run``, ``publish`` and
  ``rollback(to_run=...)`` are safe to retry).

The work is done by the parts ``ScoreStore`` is composed of: ``warehouse.store.runs`` (lifecycle),
``warehouse.store.publication`` (pointer changes), ``warehouse.store.cleanup`` (retention) and
``warehouse.store.locks``; ``writer`` hands out a ``warehouse.store.writer.RunWriter``. Lookups go through the
readers of ``warehouse.store.readers``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from warehouse.store.cleanup import Cleanup, CleanupReport
from warehouse.store.connection import SyncClient, connect
from warehouse.store.keys import RunInfo
from warehouse.store.locks import Locks
from warehouse.store.overlays import Overlays
from warehouse.store.pipeline import BulkPipeline
from warehouse.store.publication import Publication, Publisher
from warehouse.store.runs import Mismatch, Runs
from warehouse.store.writer import IdsLike, RunWriter, ScoresLike

__all__ = ["ScoreStore"]


class ScoreStore:
    """Run lifecycle (create, verify, publish, rollback, cleanup) and status of the score store.

    Give it a ``redis.Redis`` or a ``redis.cluster.RedisCluster`` (``ScoreStore.from_url`` builds either, with
    timeouts, from the URL). ``clock`` (epoch seconds) is the only time it reads: the "future as_of" check,
    publish/retire stamps, heartbeats and retention ages. Thread-safe as the client is.
    """

    def __init__(self, client: SyncClient, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock
        self.bulk = BulkPipeline(client)
        self._runs = Runs(client, self.bulk, self._now)
        self._publisher = Publisher(client, self._now)
        self._cleanup = Cleanup(client, self._now)
        self._locks = Locks(client)
        self.overlays = Overlays(client, self._now)

    def _now(self) -> float:
        return self.clock()

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 5.0, clock: Callable[[], float] = time.time) -> ScoreStore:
        return cls(connect(url, socket_timeout=socket_timeout), clock=clock)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ status

    def get_run(self, model: str, run_id: str) -> RunInfo | None:
        """Metadata of one run, or None when the run is unknown."""
        return self._runs.get_run(model, run_id)

    def list_runs(self, model: str) -> list[RunInfo]:
        """Every known run of ``model``, newest first."""
        return self._runs.list_runs(model)

    def current_run(self, model: str) -> RunInfo | None:
        """The published run of ``model``, or None before the first publish."""
        return self._runs.current_run(model)

    # ------------------------------------------------------------ loading

    def create_run(
        self, model: str, run_id: str, model_version: str, as_of: datetime | float, expected_rows: int
    ) -> RunInfo:
        """Register a run in state ``loading`` with its bucket count sized for ``expected_rows``.

        Retrying with the same arguments returns the existing run; a different run under the same id is refused,
        and so is an ``as_of`` more than ``MAX_FUTURE_AS_OF_S`` ahead of the store's clock.
        """
        return self._runs.create_run(model, run_id, model_version, as_of, expected_rows)

    def writer(self, model: str, run_id: str, *, entities_per_round_trip: int = 5000) -> RunWriter:
        """A writer for a run in state ``loading`` (one per process or thread; each may have its own client)."""
        return self._runs.writer(model, run_id, entities_per_round_trip=entities_per_round_trip)

    def heartbeat(self, model: str, run_id: str) -> None:
        """Tell ``cleanup`` the loader of this run is alive (``write_batch`` does it on every batch)."""
        self._runs.account(model, run_id, 0)

    def count_rows(self, model: str, run_id: str) -> int:
        """The rows the run's buckets hold in Redis now (one HLEN per bucket, pipelined to every node)."""
        return self._runs.count_rows(model, run_id)

    def finalize_run(self, model: str, run_id: str) -> RunInfo:
        """Count the run's rows in Redis; equal to ``expected_rows`` → state ``loaded`` (a reopened run: the state it
        had, see ``reopen_run``), else ``StoreError`` with both numbers (the run stays loading). Idempotent for runs
        already verified."""
        return self._runs.finalize_run(model, run_id)

    def sample_check(self, model: str, run_id: str, entity_ids: IdsLike, expected_scores: ScoresLike) -> list[Mismatch]:
        """Read back ``entity_ids`` from this run (whatever its state) and compare with ``expected_scores`` as float32,
        bit for bit. Returns the mismatches (empty list: all equal)."""
        return self._runs.sample_check(model, run_id, entity_ids, expected_scores)

    # ------------------------------------------------------------ publish / rollback

    def publish(self, model: str, run_id: str, *, force: bool = False, challenger: str | None = None) -> Publication:
        """Make a verified run current with one atomic pointer change and push it on the published history.
        ``challenger``: promotion of that challenger version, whose pointer must still name ``run_id`` (else
        ``PointerMovedError``); the challenger pointer is removed in the same transaction.

        Refuses unknown runs and runs not verified (state must be loaded, or retired and still retained). A run whose
        ``as_of`` is older than the current run's changes nothing unless ``force``: the result's ``declined`` says
        why (``older_than_live``). Republishing the current run is a no-op that returns ``already_current=True`` (a
        retry after a lost reply is safe).
        """
        return self._publisher.publish(model, run_id, force=force, challenger=challenger)

    # ------------------------------------------------------------ challengers (warehouse.rollout)

    def publish_challenger(self, model: str, version: str, run_id: str, *, force: bool = False) -> Publication:
        """Point challenger ``version``'s pointer at a verified run of that version (state loaded): one WATCH/MULTI
        transaction; readers of the canary see the old run or the new one. The live pointer never moves. The run the
        pointer named before is retired (cleanup removes it after its grace). A run older than the challenger's
        current one changes nothing unless ``force`` (``declined``); publishing the same run again is a no-op."""
        return self._publisher.publish_challenger(model, version, run_id, force=force)

    def drop_challenger(self, model: str, version: str) -> str | None:
        """Remove challenger ``version``'s pointer (its run is retired); returns the run it named."""
        return self._publisher.drop_challenger(model, version)

    def challengers(self, model: str) -> dict[str, str]:
        """Challenger version → run id of every challenger pointer of ``model``."""
        return self._publisher.challengers(model)

    def set_rollout_override(self, model: str, percent: float) -> None:
        """Override the canary percent for every reader (``prescore rollout abort``: 0) until cleared."""
        self._publisher.set_rollout_override(model, percent)

    def clear_rollout_override(self, model: str) -> None:
        self._publisher.clear_rollout_override(model)

    def rollout_override(self, model: str) -> float | None:
        """The canary percent override, or None."""
        return self._publisher.rollout_override(model)

    def rollback(self, model: str, to_run: str | None = None) -> Publication:
        """Point ``model`` back at the run published before the current one (or at ``to_run``, which must be a
        retained published run); runs published after it leave the history and become retired. Instant: a pointer
        change.

        ``rollback(model, to_run=X)`` is idempotent; ``rollback(model)`` rolls back one more step each call.
        """
        return self._publisher.rollback(model, to_run)

    # ------------------------------------------------------------ recovery (Redis lost data; see jobs.restore)

    def reopen_run(self, model: str, run_id: str) -> RunInfo:
        """Put a verified run (loaded, published or retired) back to ``loading`` so that buckets Redis lost can be
        written again from its Parquet: the same scores, so readers of a current run keep reading it and see each
        missing score come back. ``finalize_run`` then counts it and gives it back the state it had. A publish or
        rollback meanwhile retires it, and the rewrite then stops (``StoreError``). Idempotent."""
        return self._runs.reopen_run(model, run_id)

    def restore_pointer(self, model: str, run_id: str, *, seen: str | None, history: Sequence[str] = ()) -> Publication:
        """Make the verified run ``run_id`` current again after Redis lost the model's pointer (``seen``: the pointer
        the caller found, None or a run judged lost), with the published history ``[run_id, *history]`` (of
        ``history``, the runs Redis holds verified become retired rollback targets; the others are left out).

        One WATCH/MULTI transaction applied only while the pointer is still ``seen`` or already ``run_id``: a publish
        or rollback that moved it meanwhile wins (``PointerMovedError``), so readers see the old run or the new one,
        never a mix. ``publish``'s as_of rule does not apply (the catalog decided which run is live). Calling it
        again is a no-op (``already_current``)."""
        return self._publisher.restore_pointer(model, run_id, seen=seen, history=history)

    def purge_run_keys(self, model: str, run_id: str) -> int:
        """Unlink the bucket keys of a run whose metadata Redis lost while some buckets survived (a replaced cluster
        node, an eviction), so it can be loaded afresh. Refuses a run whose metadata exists. Returns the keys
        deleted (SCAN MATCH + UNLINK over every primary)."""
        return self._cleanup.purge_run_keys(model, run_id)

    @contextmanager
    def lock(self, model: str, name: str, ttl_s: float) -> Iterator[bool]:
        """Hold the lock ``name`` of ``model`` (``SET NX PX``, released only by its holder) while the block runs; yields
        False, holding nothing, when another holder has it. A holder that dies leaves it to expire after ``ttl_s``."""
        with self._locks.lock(model, name, ttl_s) as held:
            yield held

    # ------------------------------------------------------------ retention

    def abort_run(self, model: str, run_id: str) -> int:
        """Delete a run that is not current (metadata first, then its buckets). Returns the keys deleted."""
        return self._runs.abort_run(model, run_id)

    def cleanup(
        self, model: str, keep_runs: int = 2, orphan_after_s: float = 3600.0, grace_s: float = 5.0
    ) -> CleanupReport:
        """Remove runs outside retention: keep the current run, the ``keep_runs`` runs published before it (the
        rollback targets), verified runs never published, and loading runs whose heartbeat is younger than
        ``orphan_after_s``. Removed: retired runs beyond that window (once retired for ``grace_s``, longer than any
        reader's pointer cache), loading runs of crashed loaders, and bucket keys of runs with no metadata left
        (interrupted cleanups), and overlay generations no reader can reach (``Overlays.sweep``). Keys go by SCAN
        MATCH + UNLINK, at most 1000 per command."""
        report = self._cleanup.cleanup(model, keep_runs, orphan_after_s, grace_s)
        swept = self.overlays.sweep(model, orphan_after_s)
        return CleanupReport(report.model, report.removed, report.keys_deleted + swept)
