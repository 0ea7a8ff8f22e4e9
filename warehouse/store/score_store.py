"""The Redis precomputed-score store: create, write, verify, publish, roll back, clean up, and read runs.

Contract (the jobs layer and the online reader use only this):

- A run ``(model, run_id)`` lives in its own namespace (``warehouse.store.layout``) and moves through
  ``loading → loaded → published → retired``; ``create_run`` → ``RunWriter.write_batch`` (from any number of
  processes at once) → ``finalize_run`` (counts) → ``sample_check`` → ``publish``.
- ``publish`` is one atomic pointer change; readers see the old run or the new one, never a mix. The current run
  and the ``keep_runs`` previously published runs stay loaded for an instant ``rollback``; ``cleanup`` removes older
  runs, runs of crashed loaders, and leftovers of interrupted cleanups.
- Readers (``ScoreReader``, ``AsyncScoreReader``) live in ``warehouse.store.readers``, the writer (``RunWriter``) in
  ``warehouse.store.writer``, both re-exported here; bulk commands go through ``warehouse.store.pipeline``.
- Redis Cluster (``PRESCORE_REDIS_URL`` with ``?cluster=true``, see ``warehouse.store.connection``) keeps every
  guarantee above: create, finalize, publish, rollback and cleanup are WATCH/MULTI transactions on the one node that
  owns the model's ``{model}`` hash tag; bulk writes (HSET/RESTORE) and counts (HLEN) are grouped by the node of each
  bucket key and pipelined to every node at once (commands redirected by a moving slot are resent after the slot
  map is refreshed, a few times, then ``StoreUnavailableError``); Lua runs on the node of its one key; cleanup
  scans every primary node.
- Recovery after Redis lost data (``jobs.restore``): ``reopen_run`` lets a verified run's lost buckets be written
  again (same scores), ``purge_run_keys`` drops the buckets of a run whose metadata is gone, ``restore_pointer``
  flips the pointer back only while it is still what the caller saw, ``lock`` keeps one restore of a model at a time.
- Refusals raise ``StoreError`` (what, where, what to do); lost connections and timeouts raise
  ``StoreUnavailableError`` (retry later; ``create_run``, ``write_batch``, ``finalize_run``, ``publish`` and
  ``rollback(to_run=...)`` are safe to retry).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
import redis.asyncio

from warehouse.errors import OlderRunError, PointerMovedError, StoreError, StoreUnavailableError
from warehouse.store.connection import SyncClient, connect
from warehouse.store.connection import text as _text
from warehouse.store.connection import unavailable as _unavailable
from warehouse.store.layout import (
    RunInfo,
    RunState,
    StoredScore,
    assemble,
    bucket_count,
    encode_score,
    id_array,
    plan_lookup,
    run_of_bucket_key,
    score_array,
    store_key,
    to_utc,
    validate_name,
)
from warehouse.store.pipeline import BulkPipeline, raise_first_error
from warehouse.store.readers import AsyncScoreReader, ScoreLookup, ScoreReader  # re-exported: one import for both
from warehouse.store.wire import resp
from warehouse.store.writer import IdsLike, RunWriter, ScoresLike

__all__ = [
    "AsyncScoreReader",
    "CleanupReport",
    "Mismatch",
    "Publication",
    "RunInfo",
    "RunState",
    "RunWriter",
    "ScoreLookup",
    "ScoreReader",
    "ScoreStore",
    "StoredScore",
    "connect",
]

SCAN_COUNT = 1000  # keys per SCAN step and per UNLINK
# A run's as_of may lead this host's clock by this much (skew between hosts); beyond it create_run refuses the
# run: future scores would count as fresh for too long, and block every correct later run as "older".
MAX_FUTURE_AS_OF_S = 300.0

# Bump loaded_rows and the heartbeat only while the run's metadata exists (a cleaned-up run is not resurrected).
_ACCOUNT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HINCRBY', KEYS[1], 'loaded_rows', ARGV[1])
redis.call('HSET', KEYS[1], 'heartbeat', ARGV[2])
return redis.call('HGET', KEYS[1], 'state')
"""

# Delete a lock only while it still holds the caller's token (an expired lock taken by another holder stays).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _epoch(as_of: datetime | float) -> float:
    if isinstance(as_of, datetime):
        if as_of.tzinfo is None:
            raise StoreError(f"as_of {as_of.isoformat()} has no time zone: pass an aware datetime (UTC)")
        return as_of.timestamp()
    return float(as_of)


@dataclass(frozen=True)
class Publication:
    """The outcome of ``publish`` or ``rollback``: which run was current before and which is now (``at`` UTC)."""

    model: str
    run_id: str
    previous_run_id: str | None
    at: datetime
    already_current: bool = False


@dataclass(frozen=True)
class Mismatch:
    """A sampled entity whose stored score differs from the expected one (``actual`` None: missing)."""

    entity_id: str
    expected: float
    actual: float | None


@dataclass(frozen=True)
class CleanupReport:
    """Runs removed by ``cleanup`` (run id → reason) and how many keys were unlinked."""

    model: str
    removed: dict[str, str] = field(default_factory=dict)
    keys_deleted: int = 0


class ScoreStore:
    """Run lifecycle (create, verify, publish, rollback, cleanup) and status of the score store.

    Give it a ``redis.Redis`` or a ``redis.cluster.RedisCluster`` (``ScoreStore.from_url`` builds either, with
    timeouts, from the URL). Thread-safe as the client is.
    """

    def __init__(self, client: SyncClient, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock  # epoch seconds: the "future as_of" check, publish/retire stamps, retention ages
        self.bulk = BulkPipeline(client)
        self._account = client.register_script(_ACCOUNT)
        self._release = client.register_script(_RELEASE)
        self._listpack_entries: int | None = None

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
        validate_name("model", model)
        validate_name("run id", run_id)
        with _unavailable(f"reading run {run_id} of model {model}"):
            meta = self.client.hgetall(store_key(model, "meta", run_id))
        return RunInfo.from_meta(meta) if meta else None

    def list_runs(self, model: str) -> list[RunInfo]:
        """Every known run of ``model``, newest first."""
        validate_name("model", model)
        with _unavailable(f"listing runs of model {model}"):
            run_ids = [_text(r) for r in self.client.zrange(store_key(model, "runs"), 0, -1, desc=True)]
            with self.client.pipeline(transaction=False) as pipe:
                for run_id in run_ids:
                    pipe.hgetall(store_key(model, "meta", str(run_id)))
                metas = pipe.execute()
        return [RunInfo.from_meta(m) for m in metas if m]

    def current_run(self, model: str) -> RunInfo | None:
        """The published run of ``model``, or None before the first publish."""
        validate_name("model", model)
        with _unavailable(f"reading the current run of model {model}"):
            current = _text(self.client.get(store_key(model, "current")))
        return self.get_run(model, current) if current else None

    def _require(self, model: str, run_id: str) -> RunInfo:
        info = self.get_run(model, run_id)
        if info is None:
            raise StoreError(f"unknown run {run_id!r} of model {model!r}: create it with create_run (or check the id)")
        return info

    # ------------------------------------------------------------ loading

    def _listpack_limit(self) -> int:
        if self._listpack_entries is None:
            name = "hash-max-listpack-entries"
            try:
                if isinstance(self.client, redis.Redis):
                    self._listpack_entries = int(self.client.config_get(name).get(name) or 128)
                else:  # buckets land on every primary: size them for the strictest one
                    nodes = [self.client.get_redis_connection(n) for n in self.client.get_primaries()]
                    self._listpack_entries = min(int(node.config_get(name).get(name) or 128) for node in nodes)
            except redis.ResponseError:  # CONFIG disabled (managed Redis): assume the default
                self._listpack_entries = 128
        return self._listpack_entries

    def create_run(
        self, model: str, run_id: str, model_version: str, as_of: datetime | float, expected_rows: int
    ) -> RunInfo:
        """Register a run in state ``loading`` with its bucket count sized for ``expected_rows``.

        Retrying with the same arguments returns the existing run; a different run under the same id is refused,
        and so is an ``as_of`` more than ``MAX_FUTURE_AS_OF_S`` ahead of this host's clock.
        """
        validate_name("model", model)
        validate_name("run id", run_id)
        epoch, expected = _epoch(as_of), int(expected_rows)
        if expected < 0:
            raise StoreError(f"expected_rows must be >= 0, got {expected_rows}")
        ahead = epoch - self.clock()
        if ahead > MAX_FUTURE_AS_OF_S:
            when = to_utc(epoch).isoformat() if epoch < 253_402_300_800 else f"{epoch:.0f} (epoch s, after 9999)"
            raise StoreError(
                f"run {run_id!r} of model {model!r} has as_of {when}, {ahead:.0f}s in the future (at most "
                f"{MAX_FUTURE_AS_OF_S:.0f}s of clock skew is tolerated): check the clock of the host that produced "
                "it and the partition's as_of column (seconds, UTC), then load it again"
            )
        meta_key = store_key(model, "meta", run_id)
        with _unavailable(f"creating run {run_id} of model {model}"), self._out_of_memory(model, run_id, False):
            now = self.clock()
            fields: dict[Any, Any] = {
                "model": model, "run_id": run_id, "model_version": model_version, "as_of": repr(epoch),
                "state": RunState.LOADING.value, "expected_rows": expected, "loaded_rows": 0,
                "n_buckets": bucket_count(expected, self._listpack_limit()), "created_at": repr(now),
                "heartbeat": repr(now),
            }  # fmt: skip
            with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(meta_key)
                        existing = pipe.hgetall(meta_key)
                        if existing:
                            info = RunInfo.from_meta(existing)
                            same = (info.model_version, info.as_of.timestamp(), info.expected_rows) == (
                                model_version, epoch, expected)  # fmt: skip
                            if same and info.state is RunState.LOADING:
                                return info
                            raise StoreError(
                                f"run {run_id!r} of model {model!r} already exists (state {info.state.value}, "
                                f"as_of {info.as_of.isoformat()}): pick a new run id"
                            )
                        pipe.multi()
                        pipe.hset(meta_key, mapping=fields)
                        pipe.zadd(store_key(model, "runs"), {run_id: now})
                        pipe.execute()
                        break
                    except redis.WatchError:
                        continue
        return self._require(model, run_id)

    def writer(self, model: str, run_id: str, *, entities_per_round_trip: int = 5000) -> RunWriter:
        """A writer for a run in state ``loading`` (one per process or thread; each may have its own client)."""
        info = self._require(model, run_id)
        if info.state is not RunState.LOADING:
            raise StoreError(
                f"run {run_id!r} of model {model!r} is {info.state.value}, not loading: only a loading run accepts "
                "writes; create a new run to rescore"
            )
        return RunWriter(self, info, entities_per_round_trip)

    def write_batch(self, model: str, run_id: str, entity_ids: IdsLike, scores: ScoresLike) -> int:
        """Shortcut for ``writer(model, run_id).write_batch(...)``."""
        return self.writer(model, run_id).write_batch(entity_ids, scores)

    def heartbeat(self, model: str, run_id: str) -> None:
        """Tell ``cleanup`` the loader of this run is alive (``write_batch`` does it on every batch)."""
        self._bump(model, run_id, 0)

    def _bump(self, model: str, run_id: str, added: int) -> None:
        with _unavailable(f"updating run {run_id} of model {model}"):
            state = self._account(keys=[store_key(model, "meta", run_id)], args=[added, repr(self.clock())])
        if state is None:
            raise StoreError(
                f"run {run_id!r} of model {model!r} was removed while loading (cleanup judged it abandoned, or "
                "it was aborted): rerun the load under a new run id"
            )
        if _text(state) != RunState.LOADING.value:
            raise StoreError(f"run {run_id!r} of model {model!r} is {_text(state)}: it no longer accepts writes")

    @contextmanager
    def _out_of_memory(self, model: str, run_id: str, abort: bool) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.OutOfMemoryError as exc:
            if abort:
                try:
                    self.abort_run(model, run_id)
                    outcome = "the partial run was deleted"
                except (redis.RedisError, StoreError, StoreUnavailableError):
                    outcome = "deleting the partial run failed too (cleanup will remove it)"
            else:
                outcome = "nothing was written"
            raise StoreError(
                f"loading run {run_id!r} of model {model!r} failed: Redis is out of memory (maxmemory reached); "
                f"{outcome} and the published run is untouched. Free memory (cleanup, lower keep_runs) or raise "
                "maxmemory, then rerun the load"
            ) from exc

    def count_rows(self, model: str, run_id: str) -> int:
        """The rows the run's buckets hold in Redis now (one HLEN per bucket, pipelined to every node)."""
        info = self._require(model, run_id)
        keys = [store_key(model, "bucket", run_id, b).encode() for b in range(info.n_buckets)]

        def encode(positions: list[int] | None) -> list[tuple[bytes, int]]:
            chosen = keys if positions is None else [keys[k] for k in positions]
            return [
                (b"".join(resp(b"HLEN", k) for k in chosen[i : i + 5000]), len(chosen[i : i + 5000]))
                for i in range(0, len(chosen), 5000)
            ]

        replies = self.bulk.send(keys, encode, f"counting rows of run {run_id} of model {model}")
        raise_first_error(replies)
        return int(sum(replies))

    def finalize_run(self, model: str, run_id: str) -> RunInfo:
        """Count the run's rows in Redis; equal to ``expected_rows`` → state ``loaded`` (a reopened run: the state it
        had, see ``reopen_run``), else ``StoreError`` with both numbers (the run stays loading). Idempotent for runs
        already verified."""
        info = self._require(model, run_id)
        if info.state is not RunState.LOADING:
            return info
        counted = self.count_rows(model, run_id)
        if counted != info.expected_rows:
            raise StoreError(
                f"run {run_id!r} of model {model!r} holds {counted} rows in Redis but {info.expected_rows} were "
                f"expected (loaders reported {info.loaded_rows}); it stays loading: load the missing rows, or "
                "create a new run with the right expected_rows"
            )
        meta_key = store_key(model, "meta", run_id)
        with _unavailable(f"finalizing run {run_id} of model {model}"), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(meta_key)
                    if _text(pipe.hget(meta_key, "state")) != RunState.LOADING.value:
                        break
                    state = (info.reopened_from or RunState.LOADED).value
                    pipe.multi()
                    pipe.hset(meta_key, mapping={"state": state, "loaded_rows": counted})
                    pipe.hdel(meta_key, "reopened_from")
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        return self._require(model, run_id)

    def sample_check(self, model: str, run_id: str, entity_ids: IdsLike, expected_scores: ScoresLike) -> list[Mismatch]:
        """Read back ``entity_ids`` from this run (whatever its state) and compare with ``expected_scores`` as float32,
        bit for bit. Returns the mismatches (empty list: all equal)."""
        info = self._require(model, run_id)
        ids = id_array(entity_ids)
        expected = score_array(expected_scores, ids)
        raw_ids = [x.as_py() for x in ids]
        plan = plan_lookup(info, raw_ids)
        with _unavailable(f"sampling run {run_id} of model {model}"), self.client.pipeline(False) as pipe:
            for key, fields in zip(plan.keys, plan.fields, strict=True):
                pipe.hmget(key, fields)
            found = assemble(info, plan, pipe.execute())
        return [
            Mismatch(raw.decode(), float(want), None if hit is None else hit.score)
            for raw, want, hit in zip(raw_ids, expected.tolist(), found, strict=True)
            if hit is None or encode_score(hit.score) != encode_score(want)
        ]

    # ------------------------------------------------------------ publish / rollback

    def publish(self, model: str, run_id: str, *, force: bool = False) -> Publication:
        """Make a verified run current with one atomic pointer change and push it on the published history.

        Refuses unknown runs, runs not verified (state must be loaded, or retired and still retained), and runs whose
        ``as_of`` is older than the current run's unless ``force``. Republishing the current run is a no-op that
        returns ``already_current=True`` (a retry after a lost reply is safe).
        """
        validate_name("model", model)
        validate_name("run id", run_id)
        current_key, history_key = store_key(model, "current"), store_key(model, "history")
        meta_key = store_key(model, "meta", run_id)
        with _unavailable(f"publishing run {run_id} of model {model}"), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(current_key, history_key, meta_key)
                    current = _text(pipe.get(current_key))
                    if current == run_id:
                        history = [_text(r) for r in pipe.lrange(history_key, 0, 1)]
                        info = RunInfo.from_meta(pipe.hgetall(meta_key))
                        pipe.unwatch()
                        previous = history[1] if len(history) > 1 else None
                        at = info.published_at or to_utc(self.clock())
                        return Publication(model, run_id, previous, at, already_current=True)
                    meta = pipe.hgetall(meta_key)
                    if not meta:
                        raise StoreError(f"cannot publish unknown run {run_id!r} of model {model!r}")
                    info = RunInfo.from_meta(meta)
                    if info.state not in (RunState.LOADED, RunState.RETIRED):
                        raise StoreError(
                            f"cannot publish run {run_id!r} of model {model!r}: it is {info.state.value}, not "
                            "verified; finish the load and call finalize_run first"
                        )
                    if current:
                        pipe.watch(store_key(model, "meta", current))
                        cur = pipe.hgetall(store_key(model, "meta", current))
                        cur_as_of = RunInfo.from_meta(cur).as_of if cur else None
                        if cur_as_of and info.as_of < cur_as_of and not force:
                            raise OlderRunError(
                                f"run {run_id!r} of model {model!r} has as_of {info.as_of.isoformat()}, older than "
                                f"the current run {current!r} ({cur_as_of.isoformat()}): refusing to publish older "
                                "scores over newer ones; pass force=True if that is intended"
                            )
                    now = self.clock()
                    pipe.multi()
                    pipe.set(current_key, run_id)
                    pipe.lrem(history_key, 0, run_id)
                    pipe.lpush(history_key, run_id)
                    pipe.hset(meta_key, mapping={"state": RunState.PUBLISHED.value, "published_at": repr(now)})
                    pipe.hdel(meta_key, "retired_at")
                    if current:
                        retired: dict[Any, Any] = {"state": RunState.RETIRED.value, "retired_at": repr(now)}
                        pipe.hset(store_key(model, "meta", current), mapping=retired)
                    pipe.execute()
                    return Publication(model, run_id, current, to_utc(now))
                except redis.WatchError:
                    continue

    def rollback(self, model: str, to_run: str | None = None) -> Publication:
        """Point ``model`` back at the previously published run (or at ``to_run``, which must be a retained
        published run); runs published after it leave the history and become retired. Instant: a pointer change.

        ``rollback(model, to_run=X)`` is idempotent; ``rollback(model)`` rolls back one more step each call.
        """
        validate_name("model", model)
        if to_run is not None:
            validate_name("run id", to_run)
        current_key, history_key = store_key(model, "current"), store_key(model, "history")
        with _unavailable(f"rolling back model {model}"), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(current_key, history_key)
                    current = _text(pipe.get(current_key))
                    history = [str(_text(r)) for r in pipe.lrange(history_key, 0, -1)]
                    if to_run is not None and to_run == current:
                        pipe.unwatch()
                        return Publication(model, to_run, current, to_utc(self.clock()), already_current=True)
                    target = to_run if to_run is not None else (history[1] if len(history) > 1 else None)
                    if target is None:
                        raise StoreError(f"no previous run to roll back to for model {model!r}")
                    meta_key = store_key(model, "meta", target)
                    pipe.watch(meta_key)
                    if target not in history or not pipe.exists(meta_key):
                        raise StoreError(
                            f"cannot roll model {model!r} back to run {target!r}: it is not a retained published "
                            f"run (retained: {', '.join(history) or 'none'})"
                        )
                    now = self.clock()
                    pipe.multi()
                    pipe.set(current_key, target)
                    pipe.ltrim(history_key, history.index(target), -1)
                    pipe.hset(meta_key, mapping={"state": RunState.PUBLISHED.value, "published_at": repr(now)})
                    pipe.hdel(meta_key, "retired_at")
                    for dropped in history[: history.index(target)]:
                        retired: dict[Any, Any] = {"state": RunState.RETIRED.value, "retired_at": repr(now)}
                        pipe.hset(store_key(model, "meta", dropped), mapping=retired)
                    pipe.execute()
                    return Publication(model, target, current, to_utc(now))
                except redis.WatchError:
                    continue

    # ------------------------------------------------------------ recovery (Redis lost data; see jobs.restore)

    def reopen_run(self, model: str, run_id: str) -> RunInfo:
        """Put a verified run (loaded, published or retired) back to ``loading`` so that buckets Redis lost can be
        written again from its Parquet: the same scores, so readers of a current run keep reading it and see each
        missing score come back. ``finalize_run`` then counts it and gives it back the state it had. A publish or
        rollback meanwhile retires it, and the rewrite then stops (``StoreError``). Idempotent."""
        meta_key = store_key(model, "meta", run_id)
        with _unavailable(f"reopening run {run_id} of model {model}"), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(meta_key)
                    meta = pipe.hgetall(meta_key)
                    if not meta:
                        raise StoreError(f"cannot reopen unknown run {run_id!r} of model {model!r}")
                    info = RunInfo.from_meta(meta)
                    if info.state is RunState.LOADING:
                        pipe.unwatch()
                        return info
                    pipe.multi()
                    pipe.hset(meta_key, mapping={"state": RunState.LOADING.value, "reopened_from": info.state.value,
                                                 "heartbeat": repr(self.clock())})  # fmt: skip
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        return self._require(model, run_id)

    def restore_pointer(self, model: str, run_id: str, *, seen: str | None, history: Sequence[str] = ()) -> Publication:
        """Make the verified run ``run_id`` current again after Redis lost the model's pointer (``seen``: the pointer
        the caller found, None or a run judged lost), with the published history ``[run_id, *history]`` (of
        ``history``, the runs Redis holds verified become retired rollback targets; the others are left out).

        One WATCH/MULTI transaction applied only while the pointer is still ``seen`` or already ``run_id``: a publish
        or rollback that moved it meanwhile wins (``PointerMovedError``), so readers see the old run or the new one,
        never a mix. ``publish``'s as_of rule does not apply (the catalog decided which run is live). Calling it
        again is a no-op (``already_current``)."""
        validate_name("model", model)
        validate_name("run id", run_id)
        current_key, history_key = store_key(model, "current"), store_key(model, "history")
        meta_key = store_key(model, "meta", run_id)
        with _unavailable(f"restoring run {run_id} of model {model}"), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(current_key, history_key, meta_key)
                    current = _text(pipe.get(current_key))
                    if current not in (seen, run_id):
                        raise PointerMovedError(
                            f"model {model!r} now serves run {current!r} (a publish or rollback happened during the "
                            f"restore of run {run_id!r}): it stays; nothing was restored over it"
                        )
                    meta = pipe.hgetall(meta_key)
                    info = RunInfo.from_meta(meta) if meta else None
                    if info is None or info.state is RunState.LOADING:
                        raise StoreError(f"cannot restore run {run_id!r} of model {model!r}: it is not loaded and "
                                         "verified in Redis; load it first")  # fmt: skip
                    targets = []
                    for other in dict.fromkeys(h for h in history if h != run_id):
                        pipe.watch(store_key(model, "meta", other))
                        other_meta = pipe.hgetall(store_key(model, "meta", other))
                        if other_meta and RunInfo.from_meta(other_meta).state in (RunState.LOADED, RunState.RETIRED):
                            targets.append(other)
                    old = [_text(r) for r in pipe.lrange(history_key, 0, -1)]
                    if current == run_id and info.state is RunState.PUBLISHED and old == [run_id, *targets]:
                        pipe.unwatch()
                        return Publication(model, run_id, current, info.published_at or to_utc(self.clock()), True)
                    now = self.clock()
                    pipe.multi()
                    pipe.set(current_key, run_id)
                    pipe.delete(history_key)
                    pipe.rpush(history_key, run_id, *targets)
                    if current != run_id or info.state is not RunState.PUBLISHED:
                        pipe.hset(meta_key, mapping={"state": RunState.PUBLISHED.value, "published_at": repr(now)})
                    pipe.hdel(meta_key, "retired_at")
                    for other in targets:
                        retired: dict[Any, Any] = {"state": RunState.RETIRED.value, "retired_at": repr(now)}
                        pipe.hset(store_key(model, "meta", other), mapping=retired)
                    pipe.execute()
                    at = to_utc(now) if current != run_id or info.published_at is None else info.published_at
                    return Publication(model, run_id, current, at, already_current=current == run_id)
                except redis.WatchError:
                    continue

    def purge_run_keys(self, model: str, run_id: str) -> int:
        """Unlink the bucket keys of a run whose metadata Redis lost while some buckets survived (a replaced cluster
        node, an eviction), so it can be loaded afresh. Refuses a run whose metadata exists. Returns the keys
        deleted (SCAN MATCH + UNLINK over every primary)."""
        validate_name("model", model)
        validate_name("run id", run_id)
        with _unavailable(f"removing leftover keys of run {run_id} of model {model}"):
            if self.client.exists(store_key(model, "meta", run_id)):
                raise StoreError(f"run {run_id!r} of model {model!r} has its metadata: use abort_run")
            return self._unlink_matching(store_key(model, "bucket", run_id, "*"), lambda _: True)

    @contextmanager
    def lock(self, model: str, name: str, ttl_s: float) -> Iterator[bool]:
        """Hold the lock ``name`` of ``model`` (``SET NX PX``, released only by its holder) while the block runs; yields
        False, holding nothing, when another holder has it. A holder that dies leaves it to expire after ``ttl_s``."""
        key, token = store_key(model, "lock", name), uuid.uuid4().hex
        with _unavailable(f"taking the {name} lock of model {model}"):
            held = bool(self.client.set(key, token, nx=True, px=int(ttl_s * 1000)))
        try:
            yield held
        finally:
            if held:
                try:
                    with _unavailable(f"releasing the {name} lock of model {model}"):
                        self._release(keys=[key], args=[token])
                except StoreUnavailableError:
                    pass  # Redis went away meanwhile: the lock expires after ttl_s (and may be gone with the data)

    # ------------------------------------------------------------ retention

    def abort_run(self, model: str, run_id: str) -> int:
        """Delete a run that is not current (metadata first, then its buckets). Returns the keys deleted."""
        validate_name("model", model)
        validate_name("run id", run_id)
        with _unavailable(f"deleting run {run_id} of model {model}"):
            if _text(self.client.get(store_key(model, "current"))) == run_id:
                raise StoreError(f"run {run_id!r} is the current run of model {model!r}: publish or roll back first")
            # no transaction: Redis refuses MULTI blocks when out of memory, and cleanup finishes a partial abort
            with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(store_key(model, "meta", run_id))
                pipe.zrem(store_key(model, "runs"), run_id)
                pipe.lrem(store_key(model, "history"), 0, run_id)
                pipe.execute()
            return self._unlink_matching(store_key(model, "bucket", run_id, "*"), lambda _: True)

    def cleanup(
        self, model: str, keep_runs: int = 2, orphan_after_s: float = 3600.0, grace_s: float = 5.0
    ) -> CleanupReport:
        """Remove runs outside retention: keep the current run, the ``keep_runs`` runs published before it (the
        rollback targets), verified runs never published, and loading runs whose heartbeat is younger than
        ``orphan_after_s``. Removed: retired runs beyond that window (once retired for ``grace_s``, longer than any
        reader's pointer cache), loading runs of crashed loaders, and bucket keys of runs with no metadata left
        (interrupted cleanups). Keys go by SCAN MATCH + UNLINK, at most 1000 per command."""
        validate_name("model", model)
        if keep_runs < 0:
            raise StoreError(f"keep_runs must be >= 0, got {keep_runs}")
        runs_key, current_key, history_key = (store_key(model, k) for k in ("runs", "current", "history"))
        report = CleanupReport(model)
        with _unavailable(f"cleaning up model {model}"):
            with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(current_key, history_key, runs_key)
                        now = self.clock()
                        current = _text(pipe.get(current_key))
                        keep = {current, *(_text(r) for r in pipe.lrange(history_key, 0, keep_runs))}
                        victims: dict[str, str] = {}
                        for raw in pipe.zrange(runs_key, 0, -1):
                            run_id = str(_text(raw))
                            meta = pipe.hgetall(store_key(model, "meta", run_id))
                            reason = _victim_reason(run_id, meta, keep, now, orphan_after_s, grace_s)
                            if reason:
                                victims[run_id] = reason
                        pipe.multi()
                        for run_id in victims:
                            pipe.delete(store_key(model, "meta", run_id))
                            pipe.zrem(runs_key, run_id)
                            pipe.lrem(history_key, 0, run_id)
                        pipe.execute()
                        break
                    except redis.WatchError:
                        continue
            report.removed.update(victims)
            alive = {str(run_id): True for run_id in keep if run_id}

            def doomed(key: bytes) -> bool:
                run_id = run_of_bucket_key(key)
                if run_id in victims:
                    return True
                if run_id not in alive:  # meta is written before any bucket: no meta → deleted run
                    alive[run_id] = bool(self.client.exists(store_key(model, "meta", run_id)))
                    if not alive[run_id]:
                        report.removed.setdefault(run_id, "leftover keys of a deleted run")
                return not alive[run_id]

            deleted = self._unlink_matching(store_key(model, "bucket", "*", "*"), doomed)
        return CleanupReport(model, report.removed, deleted)

    def _unlink_matching(self, pattern: str, doomed: Any) -> int:
        deleted, batch = 0, []
        for key in self.client.scan_iter(match=pattern, count=SCAN_COUNT):
            if doomed(key):
                batch.append(key)
            if len(batch) >= SCAN_COUNT:
                deleted += int(self.client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(self.client.unlink(*batch))
        return deleted


def _victim_reason(
    run_id: str, meta: dict[Any, Any], keep: set[str | None], now: float, orphan_after_s: float, grace_s: float
) -> str | None:
    if run_id in keep:
        return None
    if not meta:
        return "metadata missing"
    info = RunInfo.from_meta(meta)
    if info.state is RunState.LOADING:
        beat = (info.heartbeat_at or info.created_at).timestamp()
        return f"abandoned loader (no heartbeat for {now - beat:.0f}s)" if now - beat > orphan_after_s else None
    if info.state in (RunState.RETIRED, RunState.PUBLISHED):
        retired = info.retired_at.timestamp() if info.retired_at else 0.0
        return "beyond retention" if now - retired > grace_s else None
    return None
