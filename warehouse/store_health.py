"""Whether the Redis score store still holds what the catalog says is live, and whether its server may evict it.

Redis is the cache; the catalog and the committed Parquet are the record. The catalog's newest pointer record
(``Catalog.live_pointer``) names the run that should be live. ``inspect`` / ``inspect_async`` read what the store
holds for one model: its pointer, the metadata of the run it names, and whether a sample of that run's buckets
exists (a replaced cluster node, or an eviction, leaves some buckets missing while the pointer survives).
``judge`` compares the two and says in one ``Health`` whether the model's scores are served, were never published,
or are lost. The rules are pure and decided here only:

- ``served_after``: a store pointer that differs from the catalog's record is *newer* than it (the catalog has not
  recorded a change yet: a publish between its flip and its record, or a catalog outage) when the run was published
  after the record's time; otherwise the store went back (restored from an old snapshot) and the record stands;
- ``expected_history``: the published history (newest first) that the pointer records imply, i.e. what
  ``ScoreStore.publish``/``rollback`` would have left in Redis: the rollback targets a restore brings back;
- ``eviction_problem``: a ``maxmemory-policy`` that evicts keys without a TTL (``allkeys-*``) evicts score buckets.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis.exceptions import RedisError, ResponseError

from warehouse.catalog import PointerRecord
from warehouse.store import AsyncClient, RunInfo, SyncClient, is_cluster, store_key, unavailable
from warehouse.store import text as _text

SAMPLE_BUCKETS = 64  # buckets checked per inspection: a node owning a third of the slots is missed with p < 1e-11
# Policies that evict keys without a TTL, i.e. score buckets, under memory pressure.
EVICTING_POLICIES = frozenset({"allkeys-lru", "allkeys-lfu", "allkeys-random"})


class StoreState(StrEnum):
    SERVING = "serving"  # the store serves the catalog's live run (as far as sampled, every bucket is there)
    NEVER_PUBLISHED = "never_published"  # no pointer in the store and none in the catalog
    LOST = "lost"  # the catalog says a run is live that the store does not (fully) hold
    AHEAD = "ahead"  # the store serves a run published after the catalog's newest record (the catalog lags)
    UNCHECKED = "unchecked"  # no pointer in the store and the catalog could not be read: lost or never published


@dataclass(frozen=True)
class StoreCheck:
    """What the store holds for one model: its pointer, that run's metadata (None: missing), and how many of the
    sampled bucket keys of that run are missing."""

    pointer: str | None
    run: RunInfo | None
    sampled: int = 0
    missing: int = 0


@dataclass(frozen=True)
class Health:
    """The verdict for one model: ``state``, the run the catalog says is live (None: never published, or the catalog
    was not read), the run the store's pointer names, and one sentence saying why."""

    model: str
    state: StoreState
    live_run_id: str | None
    served_run_id: str | None
    reason: str

    @property
    def lost(self) -> bool:
        return self.state is StoreState.LOST


def served_after(run: RunInfo, record: PointerRecord) -> bool:
    """Whether ``run`` (the store's current run) was published after the catalog's pointer ``record`` was made."""
    return run.published_at is not None and run.published_at > record.at


def judge(model: str, recorded: PointerRecord | None, check: StoreCheck, catalog_read: bool = True) -> Health:
    """Compare the catalog's live pointer ``recorded`` (``catalog_read=False``: the catalog could not be read) with
    what the store holds (``check``). Pure."""
    pointer, run = check.pointer, check.run
    live = recorded.run_id if recorded else None

    def health(state: StoreState, reason: str) -> Health:
        return Health(model, state, live if catalog_read else None, pointer, reason)

    if pointer is not None and run is None:
        return health(StoreState.LOST, f"Redis points model {model} at run {pointer} but holds no metadata for it")
    if run is not None and check.missing:
        return health(StoreState.LOST, f"{check.missing} of {check.sampled} sampled buckets of run {pointer} of model "
                                       f"{model} are missing from Redis")  # fmt: skip
    if not catalog_read:
        if pointer is None:
            return health(StoreState.UNCHECKED, f"Redis has no published run of model {model} and the catalog could "
                                                "not be read to tell whether it ever had one")  # fmt: skip
        return health(StoreState.SERVING, f"Redis serves run {pointer} (the catalog could not be read to compare)")
    if recorded is None:
        if pointer is None:
            return health(StoreState.NEVER_PUBLISHED, f"model {model} has never been published")
        return health(StoreState.AHEAD, f"Redis serves run {pointer}, which the catalog has not recorded")
    when = f"{recorded.action} at {recorded.at.isoformat()}"
    if pointer is None:
        return health(StoreState.LOST, f"the catalog says run {live} of model {model} is live ({when}) but Redis has "
                                       "no published run of it (Redis lost its data?)")  # fmt: skip
    if pointer == live:
        return health(StoreState.SERVING, f"Redis serves run {pointer}, the live run of the catalog")
    assert run is not None
    if served_after(run, recorded):
        return health(StoreState.AHEAD, f"Redis serves run {pointer}, published after the catalog's newest record "
                                        f"(run {live}, {when}): the catalog has not recorded it yet")  # fmt: skip
    reason = (f"the catalog says run {live} of model {model} is live ({when}) but Redis serves run {pointer}, "
              "published before that (Redis went back to older data?)")  # fmt: skip
    return health(StoreState.LOST, reason)


def expected_history(records: Sequence[PointerRecord]) -> list[str]:
    """The published history (run ids, newest first) that pointer ``records`` (newest first, as
    ``Catalog.pointer_records`` returns them) leave in the store: a publish, reconcile or restore puts its run on top
    (moving it if already there), a rollback drops the runs above its target. Pure."""
    history: list[str] = []
    for record in reversed(records):
        if record.action == "rollback" and record.run_id in history:
            history = history[history.index(record.run_id) :]
        else:
            history = [record.run_id, *(r for r in history if r != record.run_id)]
    return history


def eviction_problem(policies: Mapping[str, str] | None) -> str | None:
    """Why the store's Redis may evict score buckets (``policies``: node → ``maxmemory-policy``), or None when no
    node would (``noeviction``; ``volatile-*`` only evicts keys with a TTL, which score keys never have) or when the
    policy could not be read (None: ``CONFIG`` refused, as managed Redis services may)."""
    bad = {node: policy for node, policy in (policies or {}).items() if policy in EVICTING_POLICIES}
    if not bad:
        return None
    where = ", ".join(f"{node} has {policy}" for node, policy in sorted(bad.items()))
    return (f"the score store's Redis would evict score buckets under memory pressure (maxmemory-policy: {where}), "
            "and lookups would then fall to the default without notice: set maxmemory-policy noeviction "
            "(CONFIG SET maxmemory-policy noeviction, and in redis.conf)")  # fmt: skip


def sample_buckets(n_buckets: int, sample: int, offset: int) -> list[int]:
    """``sample`` bucket numbers of a run with ``n_buckets``, evenly spaced from ``offset`` (all when fewer). Pure."""
    if n_buckets <= sample:
        return list(range(n_buckets))
    return sorted({(offset + i * n_buckets // sample) % n_buckets for i in range(sample)})


def _sample_keys(run: RunInfo, sample: int, offset: int | None) -> list[str]:
    start = random.randrange(max(1, run.n_buckets)) if offset is None else offset
    return [store_key(run.model, "bucket", run.run_id, b) for b in sample_buckets(run.n_buckets, sample, start)]


def inspect(client: SyncClient, model: str, sample: int = SAMPLE_BUCKETS, offset: int | None = None) -> StoreCheck:
    """Read what the store holds for ``model`` (``StoreUnavailableError`` when Redis does not answer). ``offset``:
    the first sampled bucket (default random, so repeated checks cover different buckets)."""
    with unavailable(f"checking the score store of model {model}"):
        pointer = _text(client.get(store_key(model, "current")))
        if pointer is None:
            return StoreCheck(None, None)
        meta = client.hgetall(store_key(model, "meta", pointer))
        if not meta:
            return StoreCheck(pointer, None)
        run = RunInfo.from_meta(meta)
        keys = _sample_keys(run, sample, offset)
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            found = pipe.execute()
    return StoreCheck(pointer, run, len(keys), sum(1 for f in found if not f))


async def inspect_async(
    client: AsyncClient, model: str, sample: int = SAMPLE_BUCKETS, offset: int | None = None
) -> StoreCheck:
    """``inspect`` for asyncio clients."""
    with unavailable(f"checking the score store of model {model}"):
        pointer = _text(await client.get(store_key(model, "current")))
        if pointer is None:
            return StoreCheck(None, None)
        meta = await client.hgetall(store_key(model, "meta", pointer))
        if not meta:
            return StoreCheck(pointer, None)
        run = RunInfo.from_meta(meta)
        keys = _sample_keys(run, sample, offset)
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            found = await pipe.execute()
    return StoreCheck(pointer, run, len(keys), sum(1 for f in found if not f))


def _policy(reply: object) -> str | None:
    if isinstance(reply, Mapping):
        value = reply.get("maxmemory-policy", reply.get(b"maxmemory-policy"))
        return _text(value) if value is not None else None
    return None


def eviction_policies(client: SyncClient) -> dict[str, str] | None:
    """``maxmemory-policy`` of every primary (node → policy), or None when ``CONFIG`` is refused."""
    try:
        if not is_cluster(client):
            policy = _policy(client.config_get("maxmemory-policy"))
            return {"redis": policy} if policy else None
        out = {}
        for node in client.get_primaries():  # type: ignore[union-attr]
            policy = _policy(client.get_redis_connection(node).config_get("maxmemory-policy"))  # type: ignore[union-attr]
            if policy:
                out[f"{node.host}:{node.port}"] = policy
        return out or None
    except ResponseError:  # CONFIG disabled or renamed (managed Redis)
        return None


async def eviction_policies_async(client: AsyncClient) -> dict[str, str] | None:
    """``eviction_policies`` for asyncio clients; None also when Redis does not answer (the caller says so)."""
    try:
        if not is_cluster(client):
            policy = _policy(await client.config_get("maxmemory-policy"))
            return {"redis": policy} if policy else None
        replies = await client.config_get("maxmemory-policy", target_nodes="primaries")
        out = {}
        for node, reply in replies.items() if isinstance(replies, Mapping) else ():
            policy = _policy(reply)
            if policy:
                out[str(_text(node))] = policy
        return out or None
    except (RedisError, OSError):
        return None
