"""The run lifecycle of the score store: create, write, count, verify, heartbeat, reopen and abort one run.

A run ``(model, run_id)`` moves through ``loading → loaded`` here (``create_run`` → ``RunWriter.write_batch`` from
any number of processes → ``finalize_run`` counts → ``sample_check``); ``warehouse.store.publication`` takes it on
to ``published`` and ``retired``. Metadata changes are WATCH/MULTI transactions (``warehouse.store.transaction``) on
the node of the model's ``{model}`` hash tag; counts (HLEN per bucket) are pipelined to every node. Refusals raise
``StoreError``; a load that runs Redis out of memory raises ``StoreError`` and deletes the partial run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import redis

from warehouse.errors import StoreError, StoreUnavailableError
from warehouse.store.cleanup import unlink_matching
from warehouse.store.connection import SyncClient
from warehouse.store.connection import text as _text
from warehouse.store.connection import unavailable as _unavailable
from warehouse.store.ids import id_array
from warehouse.store.keys import (
    RunInfo,
    RunState,
    bucket_count,
    encode_score,
    score_array,
    store_key,
    to_utc,
    validate_name,
)
from warehouse.store.lookup import assemble, plan_lookup
from warehouse.store.pipeline import BulkPipeline, raise_first_error
from warehouse.store.transaction import transact
from warehouse.store.wire import resp
from warehouse.store.writer import DEFAULT_LISTPACK_LIMITS, IdsLike, RunWriter, ScoresLike

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


def _epoch(as_of: datetime | float) -> float:
    if isinstance(as_of, datetime):
        if as_of.tzinfo is None:
            raise StoreError(f"as_of {as_of.isoformat()} has no time zone: pass an aware datetime (UTC)")
        return as_of.timestamp()
    return float(as_of)


@dataclass(frozen=True)
class Mismatch:
    """A sampled entity whose stored score differs from the expected one (``actual`` None: missing)."""

    entity_id: str
    expected: float
    actual: float | None


class Runs:
    """The runs of every model on one client; ``clock`` gives epoch seconds (the future-``as_of`` check, heartbeats).
    ``ScoreStore`` exposes these methods with their contracts."""

    def __init__(self, client: SyncClient, bulk: BulkPipeline, clock: Callable[[], float]) -> None:
        self.client, self.bulk, self.clock = client, bulk, clock
        self._account = client.register_script(_ACCOUNT)
        self._listpack: tuple[int, int] | None = None

    # ------------------------------------------------------------ status

    def get_run(self, model: str, run_id: str) -> RunInfo | None:
        validate_name("model", model)
        validate_name("run id", run_id)
        with _unavailable(f"reading run {run_id} of model {model}"):
            meta = self.client.hgetall(store_key(model, "meta", run_id))
        return RunInfo.from_meta(meta) if meta else None

    def list_runs(self, model: str) -> list[RunInfo]:
        validate_name("model", model)
        with _unavailable(f"listing runs of model {model}"):
            run_ids = [_text(r) for r in self.client.zrange(store_key(model, "runs"), 0, -1, desc=True)]
            with self.client.pipeline(transaction=False) as pipe:
                for run_id in run_ids:
                    pipe.hgetall(store_key(model, "meta", str(run_id)))
                metas = pipe.execute()
        return [RunInfo.from_meta(m) for m in metas if m]

    def current_run(self, model: str) -> RunInfo | None:
        validate_name("model", model)
        with _unavailable(f"reading the current run of model {model}"):
            current = _text(self.client.get(store_key(model, "current")))
        return self.get_run(model, current) if current else None

    def require(self, model: str, run_id: str) -> RunInfo:
        """The run's metadata, or ``StoreError`` when the run is unknown."""
        info = self.get_run(model, run_id)
        if info is None:
            raise StoreError(f"unknown run {run_id!r} of model {model!r}: create it with create_run (or check the id)")
        return info

    # ------------------------------------------------------------ loading

    def _listpack_limit(self) -> int:
        return self._listpack_limits()[0]

    def _listpack_limits(self) -> tuple[int, int]:
        """``hash-max-listpack-entries`` and ``hash-max-listpack-value`` (the strictest primary's on a cluster;
        Redis's defaults when CONFIG is refused)."""
        if self._listpack is None:
            pattern = "hash-max-listpack-*"
            default = DEFAULT_LISTPACK_LIMITS
            try:
                if isinstance(self.client, redis.Redis):
                    configs = [self.client.config_get(pattern)]
                else:  # buckets land on every primary: size them for the strictest one
                    nodes = [self.client.get_redis_connection(n) for n in self.client.get_primaries()]
                    configs = [node.config_get(pattern) for node in nodes]
                self._listpack = (
                    min(int(c.get("hash-max-listpack-entries") or default[0]) for c in configs),
                    min(int(c.get("hash-max-listpack-value") or default[1]) for c in configs),
                )
            except redis.ResponseError:  # CONFIG disabled (managed Redis): assume the defaults
                self._listpack = default
        return self._listpack

    def create_run(
        self, model: str, run_id: str, model_version: str, as_of: datetime | float, expected_rows: int
    ) -> RunInfo:
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
        with _unavailable(f"creating run {run_id} of model {model}"), self.out_of_memory(model, run_id, False):
            now = self.clock()
            fields: dict[Any, Any] = {
                "model": model, "run_id": run_id, "model_version": model_version, "as_of": repr(epoch),
                "state": RunState.LOADING.value, "expected_rows": expected, "loaded_rows": 0,
                "n_buckets": bucket_count(expected, self._listpack_limit()), "created_at": repr(now),
                "heartbeat": repr(now),
            }  # fmt: skip

            def create(pipe: Any) -> RunInfo | None:
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
                return None

            existing = transact(self.client, create)
            if existing is not None:
                return existing
        return self.require(model, run_id)

    def writer(self, model: str, run_id: str, *, entities_per_round_trip: int = 5000) -> RunWriter:
        info = self.require(model, run_id)
        if info.state is not RunState.LOADING:
            raise StoreError(
                f"run {run_id!r} of model {model!r} is {info.state.value}, not loading: only a loading run accepts "
                "writes; create a new run to rescore"
            )
        return RunWriter(
            self.bulk,
            info,
            account=partial(self.account, model, run_id),
            out_of_memory=partial(self.out_of_memory, model, run_id, True),
            entities_per_round_trip=entities_per_round_trip,
            listpack_limits=self._listpack_limits,
        )

    def account(self, model: str, run_id: str, added: int) -> None:
        """Add ``added`` rows to the run's ``loaded_rows`` and beat its heartbeat; ``StoreError`` when the run is gone
        or no longer loading."""
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
    def out_of_memory(self, model: str, run_id: str, abort: bool) -> Iterator[None]:
        """Turn Redis out of memory inside the block into ``StoreError``; ``abort``: delete the partial run first."""
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

    # ------------------------------------------------------------ verifying

    def count_rows(self, model: str, run_id: str) -> int:
        info = self.require(model, run_id)
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
        info = self.require(model, run_id)
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

        def finalize(pipe: Any) -> None:
            pipe.watch(meta_key)
            if _text(pipe.hget(meta_key, "state")) != RunState.LOADING.value:
                return
            state = (info.reopened_from or RunState.LOADED).value
            pipe.multi()
            pipe.hset(meta_key, mapping={"state": state, "loaded_rows": counted})
            pipe.hdel(meta_key, "reopened_from")
            pipe.execute()

        with _unavailable(f"finalizing run {run_id} of model {model}"):
            transact(self.client, finalize)
        return self.require(model, run_id)

    def sample_check(self, model: str, run_id: str, entity_ids: IdsLike, expected_scores: ScoresLike) -> list[Mismatch]:
        info = self.require(model, run_id)
        ids = id_array(entity_ids)
        expected = score_array(expected_scores, ids)
        raw_ids = [x.as_py() for x in ids]
        plan = plan_lookup(info, raw_ids)
        with _unavailable(f"sampling run {run_id} of model {model}"), self.client.pipeline(False) as pipe:
            for key, fields in zip(plan.keys, plan.fields, strict=True):
                pipe.hmget(key, fields)
            found = assemble(plan, pipe.execute())
        return [
            Mismatch(raw.decode(), float(want), None if hit is None else hit.score)
            for raw, want, hit in zip(raw_ids, expected.tolist(), found, strict=True)
            if hit is None or encode_score(hit.score) != encode_score(want)
        ]

    # ------------------------------------------------------------ reopening and aborting

    def reopen_run(self, model: str, run_id: str) -> RunInfo:
        meta_key = store_key(model, "meta", run_id)

        def reopen(pipe: Any) -> RunInfo | None:
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
            return None

        with _unavailable(f"reopening run {run_id} of model {model}"):
            loading = transact(self.client, reopen)
        return loading if loading is not None else self.require(model, run_id)

    def abort_run(self, model: str, run_id: str) -> int:
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
            return unlink_matching(self.client, store_key(model, "bucket", run_id, "*"), lambda _: True)
