"""The score store on a real 3-primary Redis Cluster (three local redis-server processes joined by
``redis-cli --cluster create``): URL form, load → verify → publish → read (sync and async) → second run → rollback →
retention on every node, a loader whose slot map went stale during a reshard, the jobs-layer publish, and a canary
read across the nodes."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from tests.support.redis_cluster import RedisClusterProcesses, start_redis_cluster
from warehouse.rollout import in_canary
from warehouse.store import ScoreStore
from warehouse.store.connection import connect, connect_async
from warehouse.store.ids import buckets, id_array
from warehouse.store.keys import RunState, store_key
from warehouse.store.lookup import Route
from warehouse.store.readers import AsyncScoreReader, ScoreReader

MODEL = "churn"
DAY = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are needed to start a local Redis Cluster")
    nodes = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    yield nodes
    nodes.stop()


def _node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5.0)


@pytest.fixture
def url(cluster: RedisClusterProcesses) -> str:
    for node in cluster.nodes:
        with _node(node.port) as client:
            client.flushall()
    return cluster.url


def keys_per_node(cluster: RedisClusterProcesses, pattern: str) -> dict[int, int]:
    """How many keys matching ``pattern`` each node holds (asked node by node, not through the cluster client)."""
    counts = {}
    for node in cluster.nodes:
        with _node(node.port) as client:
            counts[node.port] = sum(1 for _ in client.scan_iter(match=pattern, count=1000))
    return counts


def ids_and_scores(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    ids = [f"cust-{i:06d}" for i in range(n - 500)] + [f"kund-{i}-é" for i in range(500)]
    return ids, np.random.default_rng(seed).random(n, dtype=np.float32)


def load(store: ScoreStore, run_id: str, ids: list[str], scores: np.ndarray, as_of: datetime) -> None:
    """Half the rows in three batches, the other half (whole buckets) in one."""
    info = store.create_run(MODEL, run_id, "v1", as_of, len(ids))
    writer = store.writer(MODEL, run_id)
    odd = buckets(id_array(ids), info.n_buckets) % 2 == 1
    rows = np.flatnonzero(odd)
    for part in np.array_split(rows, 3):
        writer.write_batch([ids[r] for r in part], scores[part])
    whole = np.flatnonzero(~odd)
    assert writer.write_batch([ids[r] for r in whole], scores[whole]) == len(whole)


def test_clients_are_cluster_clients_with_the_same_timeouts(url: str) -> None:
    """``connect``, ``ScoreStore.from_url`` and both readers' ``from_url`` build cluster clients with timeouts."""
    client = connect(url, socket_timeout=3.0, connect_timeout=1.5)
    assert isinstance(client, RedisCluster)
    assert client.nodes_manager.connection_kwargs["socket_timeout"] == 3.0
    assert client.nodes_manager.connection_kwargs["socket_connect_timeout"] == 1.5
    assert client.retry.get_retries() == 1
    assert len(client.get_primaries()) == 3
    client.close()
    with ScoreStore.from_url(url) as store:
        assert isinstance(store.client, RedisCluster)
    reader = ScoreReader.from_url(url, socket_timeout=0.7)
    assert isinstance(reader.client, RedisCluster)
    assert reader.client.nodes_manager.connection_kwargs["socket_timeout"] == 0.7
    reader.close()

    async def build() -> None:
        areader = AsyncScoreReader.from_url(url, socket_timeout=0.7)
        assert isinstance(areader.client, AsyncRedisCluster)
        assert areader.client.connection_kwargs["socket_timeout"] == 0.7
        assert areader.client.connection_kwargs["socket_connect_timeout"] == 0.7
        assert await areader.client.ping()
        await areader.aclose()
        plain = connect_async("redis://127.0.0.1:1/0")
        assert type(plain) is redis.asyncio.Redis
        await plain.aclose()

    asyncio.run(build())


def test_run_lifecycle_on_three_nodes(cluster: RedisClusterProcesses, url: str) -> None:
    """Load, verify, publish and read a run whose buckets sit on all three nodes; publish a second run, roll back
    to the first, and let retention remove the second run's keys (and an abandoned load, and leftover keys of a
    deleted run) from every node while the current run's keys stay on every node."""
    store = ScoreStore.from_url(url, socket_timeout=5.0)
    ids, scores = ids_and_scores(6000, seed=1)
    load(store, "r1", ids, scores, DAY)
    info = store.finalize_run(MODEL, "r1")
    assert (info.state, info.loaded_rows) == (RunState.LOADED, len(ids))
    per_node = keys_per_node(cluster, store_key(MODEL, "bucket", "r1", "*"))
    assert all(count > 0 for count in per_node.values()) and sum(per_node.values()) == info.n_buckets
    assert store.sample_check(MODEL, "r1", ids, scores) == []
    wrong = store.sample_check(MODEL, "r1", [ids[0], "nobody"], [scores[0] + 1, 0.5])
    assert [(m.entity_id, m.actual) for m in wrong] == [(ids[0], float(scores[0])), ("nobody", None)]

    first = store.publish(MODEL, "r1")
    assert (first.run_id, first.previous_run_id, first.already_current) == ("r1", None, False)
    assert store.publish(MODEL, "r1").already_current
    control = [store_key(MODEL, k) for k in ("current", "history", "runs")] + [store_key(MODEL, "meta", "r1")]
    assert len({store.client.keyslot(k) for k in control}) == 1  # the pointer flip is one single-slot transaction

    asked = [*ids, "missing-1", "missing-2"]
    reader = ScoreReader.from_url(url)
    got = reader.get_many(MODEL, asked)
    assert [g.score if g else None for g in got] == [*scores.tolist(), None, None]
    assert {(g.run_id, g.model_version, g.as_of) for g in got if g} == {("r1", "v1", DAY)}
    assert [reader.get(MODEL, i) for i in (ids[7], ids[-1], "nobody")] == [got[7], got[len(ids) - 1], None]
    assert reader.get_many("other", ["a"]) == [None]
    reader.close()

    async def read_async() -> list[float | None]:
        areader = AsyncScoreReader.from_url(url)
        try:
            hits = await areader.get_many(MODEL, asked)
            for row in (0, 4321, len(ids) - 1):  # pointer cached now: the one-HGET hot path
                assert await areader.get(MODEL, ids[row]) == hits[row]
            assert await areader.get(MODEL, "nobody") is None
            return [h.score if h else None for h in hits]
        finally:
            await areader.aclose()

    assert asyncio.run(read_async()) == [*scores.tolist(), None, None]

    ids2, scores2 = ids_and_scores(6000, seed=2)
    load(store, "r2", ids2, scores2, DAY + dt.timedelta(days=1))
    store.finalize_run(MODEL, "r2")
    assert store.publish(MODEL, "r2").previous_run_id == "r1"
    reader = ScoreReader.from_url(url)
    assert [h.score if h else None for h in reader.get_many(MODEL, ids2[:50])] == scores2[:50].tolist()

    back = store.rollback(MODEL)
    assert (back.run_id, back.previous_run_id) == ("r1", "r2")
    assert store.rollback(MODEL, to_run="r1").already_current
    assert [r.run_id for r in store.list_runs(MODEL)] == ["r2", "r1"]
    assert store.get_run(MODEL, "r2").state is RunState.RETIRED  # type: ignore[union-attr]
    time.sleep(1.0)  # past max_stale_s: the reader re-reads the pointer before the lookup
    assert [h.score if h else None for h in reader.get_many(MODEL, ids[:50])] == scores[:50].tolist()
    reader.close()

    store.create_run(MODEL, "crashed", "v1", DAY, 10)
    store.writer(MODEL, "crashed").write_batch([f"c{i}" for i in range(5)], np.ones(5))
    for b in range(30):  # bucket keys of a run whose metadata is gone (an interrupted cleanup), on every node
        store.client.hset(store_key(MODEL, "bucket", "ghost", b), "x", b"\x00\x00\x00\x00")
    assert all(count > 0 for count in keys_per_node(cluster, store_key(MODEL, "bucket", "r2", "*")).values())
    assert all(count > 0 for count in keys_per_node(cluster, store_key(MODEL, "bucket", "ghost", "*")).values())

    report = store.cleanup(MODEL, keep_runs=0, orphan_after_s=0.0, grace_s=0.0)
    assert report.removed == {
        "r2": "beyond retention",
        "crashed": report.removed["crashed"],
        "ghost": "leftover keys of a deleted run",
    }
    assert report.removed["crashed"].startswith("abandoned loader")
    for run_id in ("r2", "crashed", "ghost"):
        assert set(keys_per_node(cluster, store_key(MODEL, "bucket", run_id, "*")).values()) == {0}
    assert all(count > 0 for count in keys_per_node(cluster, store_key(MODEL, "bucket", "r1", "*")).values())
    assert [r.run_id for r in store.list_runs(MODEL)] == ["r1"]
    assert store.current_run(MODEL).run_id == "r1"  # type: ignore[union-attr]

    store.create_run(MODEL, "r3", "v1", DAY, len(ids))
    store.writer(MODEL, "r3").write_batch(ids, scores)
    assert store.abort_run(MODEL, "r3") == info.n_buckets  # every node's buckets of the run
    assert store.get_run(MODEL, "r3") is None
    store.close()


def _reshard(cluster: RedisClusterProcesses, slots: int) -> tuple[int, int]:
    """Move ``slots`` slots from the first node to the second with ``redis-cli --cluster reshard``."""
    ids = []
    for node in cluster.nodes[:2]:
        with _node(node.port) as client:
            ids.append(client.execute_command("CLUSTER MYID").decode())
    subprocess.run(
        [
            "redis-cli", "--cluster", "reshard", f"127.0.0.1:{cluster.nodes[0].port}",
            "--cluster-from", ids[0], "--cluster-to", ids[1], "--cluster-slots", str(slots), "--cluster-yes",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        views = []
        for node in cluster.nodes:
            with _node(node.port) as client:
                views.append(client.cluster("SLOTS"))
        if all(view == views[0] for view in views):
            break
        time.sleep(0.1)
    return cluster.nodes[0].port, cluster.nodes[1].port


def test_loader_with_a_stale_slot_map_resends_redirected_commands(cluster: RedisClusterProcesses, url: str) -> None:
    """Slots move to another node after the loader read the slot map: the bulk commands the old owner answers
    with MOVED are resent to the new owner, so every row lands and the counts verify."""
    store = ScoreStore.from_url(url)
    ids, scores = ids_and_scores(4000, seed=3)
    info = store.create_run(MODEL, "moved", "v1", DAY, len(ids))
    owners = {
        b: store.client.get_node_from_key(store_key(MODEL, "bucket", "moved", b)).port for b in range(info.n_buckets)
    }
    src, dst = _reshard(cluster, 2000)
    moving = [b for b, port in owners.items() if port == src]
    assert moving  # the stale map still sends these buckets to the old owner
    store.writer(MODEL, "moved").write_batch(ids, scores)
    refreshed = {store.client.get_node_from_key(store_key(MODEL, "bucket", "moved", b)).port for b in moving}
    assert dst in refreshed  # the writer noticed the move and refreshed its slot map
    assert store.finalize_run(MODEL, "moved").loaded_rows == len(ids)
    assert store.sample_check(MODEL, "moved", ids, scores) == []
    store.close()


def test_publish_run_end_to_end_on_cluster(
    cluster: RedisClusterProcesses, url: str, trained_template: tuple[Path, Path], tmp_path: Path
) -> None:
    """``publish_run`` scores a partition, loads it through Dask workers into the cluster, verifies, publishes,
    and the reader serves every Parquet score from buckets on all three nodes."""
    from jobs.publish import publish_run, store_status
    from jobs.runtime import Runtime
    from jobs.score import score_partition
    from tests.conftest import END
    from warehouse.settings import Settings

    home, models_file = trained_template
    shutil.copytree(home, tmp_path / "home")
    settings = Settings(home=tmp_path / "home", models_file=models_file, redis_url=url, dask_local="threads")
    rt = Runtime.from_settings(settings)
    try:
        run = score_partition(rt, MODEL, END, device="cpu", task_rows=5_000)
        report = publish_run(rt, MODEL, run.run_id)
        assert report.loaded and report.rows == run.rows_out and report.previous_run_id is None
        table = pq.read_table(run.output_path, columns=["entity_id", "score"])
        reader = ScoreReader.from_url(rt.redis_url)
        try:
            hits = reader.get_many(MODEL, table.column("entity_id").to_pylist())
        finally:
            reader.close()
        assert all(h is not None and h.run_id == run.run_id for h in hits)
        assert [h.score for h in hits] == pytest.approx(table.column("score").to_pylist(), abs=0)
        per_node = keys_per_node(cluster, store_key(MODEL, "bucket", run.run_id, "*"))
        assert all(count > 0 for count in per_node.values())
        assert store_status(rt, MODEL)["current"]["run_id"] == run.run_id
    finally:
        rt.close()


def test_a_canary_reads_both_runs_across_the_nodes(url: str) -> None:
    """A challenger run behind its pointer next to the champion's, buckets on every node: a routed batch answers
    each id from its variant's run (sync and async readers), the pointer reads of the rollout (three keys of the
    ``{model}`` slot) go in one pipeline, and an override stops the canary."""
    store = ScoreStore.from_url(url, socket_timeout=5.0)
    ids, champion = ids_and_scores(3000, seed=4)
    challenger = np.random.default_rng(5).random(len(ids), dtype=np.float32)
    load(store, "r1", ids, champion, DAY)
    store.finalize_run(MODEL, "r1")
    store.publish(MODEL, "r1")
    store.create_run(MODEL, "c1", "v2", DAY, len(ids))
    store.writer(MODEL, "c1").write_batch(ids, challenger)
    store.finalize_run(MODEL, "c1")
    store.publish_challenger(MODEL, "v2", "c1")
    want = [float(challenger[i]) if in_canary(MODEL, e, 25.0) else float(champion[i]) for i, e in enumerate(ids)]
    reader = ScoreReader.from_url(url, refresh_s=0.05)
    reader.set_route(MODEL, Route("v2", 25.0))
    routed = reader.get_many_routed(MODEL, ids)
    assert [s.score for s in routed.scores] == want  # type: ignore[union-attr]
    assert routed.variants.count("challenger") > 500

    async def read_async() -> list[float]:
        areader = AsyncScoreReader.from_url(url)
        areader.set_route(MODEL, Route("v2", 25.0))
        try:
            return [s.score for s in (await areader.get_many_routed(MODEL, ids)).scores]  # type: ignore[union-attr]
        finally:
            await areader.aclose()

    assert asyncio.run(read_async()) == want
    store.set_rollout_override(MODEL, 0.0)
    time.sleep(0.2)
    reader.get_many_routed(MODEL, ids[:10])  # the aging pointers re-read with this lookup
    assert set(reader.get_many_routed(MODEL, ids).variants) == {"champion"}
    reader.close()
    store.close()
