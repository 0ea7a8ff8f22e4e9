"""Retention of the score store: which runs ``cleanup`` removes, and removing keys by pattern.

``Cleanup.cleanup`` keeps a model's current run, its rollback targets, each challenger's run, verified runs never
published and live loaders, and removes the rest: the metadata in one WATCH/MULTI transaction on the node of the
``{model}`` hash tag (``warehouse.store.transaction``), then the bucket keys by SCAN MATCH + UNLINK over every
primary, including leftovers of runs whose metadata is gone (an interrupted cleanup or abort). ``purge_run_keys``
removes such leftovers of one run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from warehouse.errors import StoreError
from warehouse.store.connection import SyncClient
from warehouse.store.connection import text as _text
from warehouse.store.connection import unavailable as _unavailable
from warehouse.store.keys import RunInfo, RunState, run_of_bucket_key, store_key, validate_name
from warehouse.store.transaction import transact

SCAN_COUNT = 1000  # keys per SCAN step and per UNLINK


@dataclass(frozen=True)
class CleanupReport:
    """Runs removed by ``cleanup`` (run id → reason) and how many keys were unlinked."""

    model: str
    removed: dict[str, str] = field(default_factory=dict)
    keys_deleted: int = 0


def unlink_matching(client: SyncClient, pattern: str, doomed: Callable[[bytes], bool]) -> int:
    """UNLINK every key matching ``pattern`` (SCAN MATCH) for which ``doomed(key)``, ``SCAN_COUNT`` per command.
    Returns the keys deleted."""
    deleted, batch = 0, []
    for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
        if doomed(key):
            batch.append(key)
        if len(batch) >= SCAN_COUNT:
            deleted += int(client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


def victim_reason(
    run_id: str, meta: dict[Any, Any], keep: set[str | None], now: float, orphan_after_s: float, grace_s: float
) -> str | None:
    """Why ``cleanup`` removes a run (its metadata ``meta``) at ``now`` (epoch s), or None when the run stays."""
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


class Cleanup:
    """Retention of every model on one client; ``clock`` gives epoch seconds (retention ages). ``ScoreStore``
    exposes these methods with their contracts."""

    def __init__(self, client: SyncClient, clock: Callable[[], float]) -> None:
        self.client, self.clock = client, clock

    def cleanup(self, model: str, keep_runs: int, orphan_after_s: float, grace_s: float) -> CleanupReport:
        validate_name("model", model)
        if keep_runs < 0:
            raise StoreError(f"keep_runs must be >= 0, got {keep_runs}")
        runs_key, current_key, history_key = (store_key(model, k) for k in ("runs", "current", "history"))
        report = CleanupReport(model)

        def remove(pipe: Any) -> tuple[set[str | None], dict[str, str]]:
            pipe.watch(current_key, history_key, runs_key)
            now = self.clock()
            pipe.watch(store_key(model, "challengers"))
            current = _text(pipe.get(current_key))
            keep = {current, *(_text(r) for r in pipe.lrange(history_key, 0, keep_runs))}
            for version in pipe.smembers(store_key(model, "challengers")):  # each challenger's run stays
                slot_key = store_key(model, "challenger", str(_text(version)))
                pipe.watch(slot_key)
                keep.add(_text(pipe.get(slot_key)))
            victims: dict[str, str] = {}
            for raw in pipe.zrange(runs_key, 0, -1):
                run_id = str(_text(raw))
                meta = pipe.hgetall(store_key(model, "meta", run_id))
                reason = victim_reason(run_id, meta, keep, now, orphan_after_s, grace_s)
                if reason:
                    victims[run_id] = reason
            pipe.multi()
            for run_id in victims:
                pipe.delete(store_key(model, "meta", run_id))
                pipe.zrem(runs_key, run_id)
                pipe.lrem(history_key, 0, run_id)
            pipe.execute()
            return keep, victims

        with _unavailable(f"cleaning up model {model}"):
            keep, victims = transact(self.client, remove)
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

            deleted = unlink_matching(self.client, store_key(model, "bucket", "*", "*"), doomed)
        return CleanupReport(model, report.removed, deleted)

    def purge_run_keys(self, model: str, run_id: str) -> int:
        validate_name("model", model)
        validate_name("run id", run_id)
        with _unavailable(f"removing leftover keys of run {run_id} of model {model}"):
            if self.client.exists(store_key(model, "meta", run_id)):
                raise StoreError(f"run {run_id!r} of model {model!r} has its metadata: use abort_run")
            return unlink_matching(self.client, store_key(model, "bucket", run_id, "*"), lambda _: True)
