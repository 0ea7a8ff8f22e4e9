"""Publication of the score store: which run of a model readers are served, and the history of published runs.

``publish`` makes a verified run current, ``rollback`` points back at a retained published run, ``restore_pointer``
puts a verified run back after Redis lost the pointer. ``publish_challenger`` points a challenger version's pointer
(``ps:{m}:challenger:<version>``, never the live one) at a verified run, ``drop_challenger`` removes it, and
``publish(..., challenger=version)`` promotes: the live pointer moves to the challenger's run and the challenger
pointer goes, in one transaction. Each is one pointer change in one WATCH/MULTI transaction
(``warehouse.store.transaction``) on the node of the model's ``{model}`` hash tag: readers see the old run or the
new one, never a mix. The run that stops being current becomes ``retired`` and stays a rollback target until
``cleanup`` removes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from warehouse.errors import PointerMovedError, StoreError
from warehouse.store.connection import SyncClient
from warehouse.store.connection import text as _text
from warehouse.store.connection import unavailable as _unavailable
from warehouse.store.keys import RunInfo, RunState, older_than_live, store_key, to_utc, validate_name
from warehouse.store.transaction import transact


@dataclass(frozen=True)
class Publication:
    """The outcome of ``publish`` or ``rollback``: which run was current before and which is now (``at`` UTC).
    ``declined`` says why nothing changed when the run is older than the live one (``keys.older_than_live``)."""

    model: str
    run_id: str
    previous_run_id: str | None
    at: datetime
    already_current: bool = False
    declined: str | None = None


def _retire(pipe: Any, model: str, run_id: str, now: float) -> None:
    retired: dict[Any, Any] = {"state": RunState.RETIRED.value, "retired_at": repr(now)}
    pipe.hset(store_key(model, "meta", run_id), mapping=retired)


def _pointer_keys(model: str, run_id: str) -> tuple[str, str, str]:
    """The keys a pointer change to ``run_id`` watches: the pointer, the published history, the run's record."""
    validate_name("model", model)
    validate_name("run id", run_id)
    return store_key(model, "current"), store_key(model, "history"), store_key(model, "meta", run_id)


class Publisher:
    """Pointer changes of every model on one client; ``clock`` gives epoch seconds (publish and retire stamps).
    ``ScoreStore`` exposes these methods with their contracts."""

    def __init__(self, client: SyncClient, clock: Callable[[], float]) -> None:
        self.client, self.clock = client, clock

    def publish(self, model: str, run_id: str, *, force: bool = False, challenger: str | None = None) -> Publication:
        current_key, history_key, meta_key = _pointer_keys(model, run_id)
        slot_key = store_key(model, "challenger", validate_name("version", challenger)) if challenger else None

        def flip(pipe: Any) -> Publication:
            pipe.watch(current_key, history_key, meta_key)
            current = _text(pipe.get(current_key))
            if slot_key is not None:
                pipe.watch(slot_key)
                named = _text(pipe.get(slot_key))
                if named != run_id and current != run_id:
                    raise PointerMovedError(
                        f"challenger {challenger} of model {model!r} now names run {named!r}, not {run_id!r} (a "
                        "nightly run replaced it meanwhile): nothing was promoted; promote again"
                    )
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
            if current and not force:
                pipe.watch(store_key(model, "meta", current))
                cur = pipe.hgetall(store_key(model, "meta", current))
                declined = older_than_live(run_id, info.as_of, RunInfo.from_meta(cur) if cur else None)
                if declined:
                    pipe.unwatch()
                    return Publication(model, run_id, current, to_utc(self.clock()), declined=declined)
            now = self.clock()
            pipe.multi()
            pipe.set(current_key, run_id)
            pipe.delete(store_key(model, "layer"))  # the old run's overlays go with it
            pipe.lrem(history_key, 0, run_id)
            pipe.lpush(history_key, run_id)
            pipe.hset(meta_key, mapping={"state": RunState.PUBLISHED.value, "published_at": repr(now)})
            pipe.hdel(meta_key, "retired_at")
            if current:
                _retire(pipe, model, current, now)
            if slot_key is not None:
                pipe.delete(slot_key)
                pipe.srem(store_key(model, "challengers"), str(challenger))
            pipe.execute()
            return Publication(model, run_id, current, to_utc(now))

        with _unavailable(f"publishing run {run_id} of model {model}"):
            return transact(self.client, flip)

    def publish_challenger(self, model: str, version: str, run_id: str, *, force: bool = False) -> Publication:
        """Point challenger ``version``'s pointer at a verified run (see ``ScoreStore.publish_challenger``)."""
        _, _, meta_key = _pointer_keys(model, run_id)
        slot_key = store_key(model, "challenger", validate_name("version", version))
        current_key = store_key(model, "current")

        def flip(pipe: Any) -> Publication:
            pipe.watch(slot_key, meta_key, current_key)
            previous = _text(pipe.get(slot_key))
            if previous == run_id:
                pipe.unwatch()
                return Publication(model, run_id, previous, to_utc(self.clock()), already_current=True)
            meta = pipe.hgetall(meta_key)
            if not meta:
                raise StoreError(f"cannot publish unknown run {run_id!r} of model {model!r} as challenger {version}")
            info = RunInfo.from_meta(meta)
            if info.state is not RunState.LOADED or info.model_version != version:
                raise StoreError(
                    f"cannot make run {run_id!r} ({info.state.value}, version {info.model_version}) challenger "
                    f"{version} of model {model!r}: it must be a verified run of that version"
                )
            if previous and not force:
                pipe.watch(store_key(model, "meta", previous))
                prev = pipe.hgetall(store_key(model, "meta", previous))
                declined = older_than_live(run_id, info.as_of, RunInfo.from_meta(prev) if prev else None)
                if declined:
                    pipe.unwatch()
                    return Publication(model, run_id, previous, to_utc(self.clock()), declined=declined)
            live = _text(pipe.get(current_key))
            now = self.clock()
            pipe.multi()
            pipe.set(slot_key, run_id)
            pipe.sadd(store_key(model, "challengers"), version)
            if previous and previous != live:  # the old challenger run goes after the grace period
                _retire(pipe, model, previous, now)
            pipe.execute()
            return Publication(model, run_id, previous, to_utc(now))

        with _unavailable(f"publishing run {run_id} of model {model} as challenger {version}"):
            return transact(self.client, flip)

    def drop_challenger(self, model: str, version: str) -> str | None:
        """Remove challenger ``version``'s pointer; its run is retired. Returns the run it named (None: none)."""
        validate_name("model", model)
        slot_key = store_key(model, "challenger", validate_name("version", version))
        current_key = store_key(model, "current")

        def drop(pipe: Any) -> str | None:
            pipe.watch(slot_key, current_key)
            named = _text(pipe.get(slot_key))
            live = _text(pipe.get(current_key))
            now = self.clock()
            pipe.multi()
            pipe.delete(slot_key)
            pipe.srem(store_key(model, "challengers"), version)
            if named and named != live:
                _retire(pipe, model, named, now)
            pipe.execute()
            return named

        with _unavailable(f"dropping challenger {version} of model {model}"):
            return transact(self.client, drop)

    def challengers(self, model: str) -> dict[str, str]:
        """Challenger version → the run its pointer names."""
        validate_name("model", model)
        with _unavailable(f"reading the challengers of model {model}"):
            versions = sorted(str(_text(v)) for v in self.client.smembers(store_key(model, "challengers")))
            runs = [_text(self.client.get(store_key(model, "challenger", v))) for v in versions]
        return {v: str(r) for v, r in zip(versions, runs, strict=True) if r}

    def set_rollout_override(self, model: str, percent: float) -> None:
        """Make every reader serve ``percent`` of the canary, whatever the models file says (``prescore rollout
        abort``: 0), until ``clear_rollout_override``. Readers see it when they next read the pointer."""
        validate_name("model", model)
        with _unavailable(f"setting the rollout override of model {model}"):
            self.client.hset(store_key(model, "rollout"), mapping={"percent": repr(float(percent)),
                                                                  "at": repr(self.clock())})  # fmt: skip

    def clear_rollout_override(self, model: str) -> None:
        validate_name("model", model)
        with _unavailable(f"clearing the rollout override of model {model}"):
            self.client.delete(store_key(model, "rollout"))

    def rollout_override(self, model: str) -> float | None:
        """The overriding canary percent, or None when the models file decides."""
        validate_name("model", model)
        with _unavailable(f"reading the rollout override of model {model}"):
            raw = self.client.hget(store_key(model, "rollout"), "percent")
        return None if raw is None else float(_text(raw) or 0)

    def rollback(self, model: str, to_run: str | None = None) -> Publication:
        validate_name("model", model)
        if to_run is not None:
            validate_name("run id", to_run)
        current_key, history_key = store_key(model, "current"), store_key(model, "history")

        def flip(pipe: Any) -> Publication:
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
            pipe.delete(store_key(model, "layer"))  # the old run's overlays go with it
            pipe.ltrim(history_key, history.index(target), -1)
            pipe.hset(meta_key, mapping={"state": RunState.PUBLISHED.value, "published_at": repr(now)})
            pipe.hdel(meta_key, "retired_at")
            for dropped in history[: history.index(target)]:
                _retire(pipe, model, dropped, now)
            pipe.execute()
            return Publication(model, target, current, to_utc(now))

        with _unavailable(f"rolling back model {model}"):
            return transact(self.client, flip)

    def restore_pointer(self, model: str, run_id: str, *, seen: str | None, history: Sequence[str] = ()) -> Publication:
        current_key, history_key, meta_key = _pointer_keys(model, run_id)

        def flip(pipe: Any) -> Publication:
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
            pipe.delete(store_key(model, "layer"))  # the old run's overlays go with it
            pipe.delete(history_key)
            pipe.rpush(history_key, run_id, *targets)
            if current != run_id or info.state is not RunState.PUBLISHED:
                pipe.hset(meta_key, mapping={"state": RunState.PUBLISHED.value, "published_at": repr(now)})
            pipe.hdel(meta_key, "retired_at")
            for other in targets:
                _retire(pipe, model, other, now)
            pipe.execute()
            at = to_utc(now) if current != run_id or info.published_at is None else info.published_at
            return Publication(model, run_id, current, at, already_current=current == run_id)

        with _unavailable(f"restoring run {run_id} of model {model}"):
            return transact(self.client, flip)
