"""Redis losing its data while prescore serves, and getting it back from the committed Parquet.

Real processes only: the API as deployed (``prescore serve``: uvicorn on 127.0.0.1) under concurrent lookups while
Redis is emptied with ``FLUSHALL`` and ``prescore restore`` runs as its own process; a Redis SIGKILLed and restarted
empty under a served app, healed by the reconcile loop (what the ``prescore_reconcile`` DAG task calls); one node of
a 3-primary Redis Cluster restarted empty; a restore racing a nightly publish (``prescore publish`` in its own
process). The trained warehouse, catalog and Dask are real (``rt``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import yaml

from jobs import orchestration
from jobs.publish import publish_run
from jobs.restore import check_model, restore_model
from jobs.runtime import Runtime
from jobs.score import RunReport, score_partition
from jobs.serve import start_detached, stop_detached
from online.settings import OnlineSettings
from tests.online.conftest import serve
from tests.reliability.test_api_redis_restart import CACHED_S
from tests.support.clock import day
from tests.support.redis_cluster import RedisClusterProcesses, start_redis_cluster
from warehouse.datasets.score_files import read_run
from warehouse.errors import StoreUnavailableError
from warehouse.store import ScoreReader, ScoreStore
from warehouse.store.keys import store_key
from warehouse.store.local_server import RedisProcess, free_port, start_redis
from warehouse.store_health import StoreState

MODEL = "churn"
FEATS = {f"f0{i}": round(1.5 + 2.25 * i, 2) for i in range(8)}  # the fallback model's features, inside the contract
BATCH = 20


def parquet_scores(run: RunReport) -> dict[str, float]:
    table = read_run(str(run.output_path), columns=["entity_id", "score"])
    return dict(zip(table.column("entity_id").to_pylist(), table.column("score").to_pylist(), strict=True))


def pick(scores: dict[str, float], n: int, seed: int = 0) -> list[str]:
    ids = sorted(scores)
    return [ids[i] for i in np.random.default_rng(seed).choice(len(ids), n, replace=False)]


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``prescore ARGS`` in its own process."""
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def task_env(rt: Runtime, redis_url: str | None = None) -> dict[str, str]:
    """The PRESCORE_* environment of a process working on ``rt``'s warehouse (a CLI, a task, the API)."""
    return {"PRESCORE_HOME": str(rt.settings.home_dir), "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
            "PRESCORE_REDIS_URL": redis_url or str(rt.settings.redis_url), "PRESCORE_CATALOG_URL": "",
            "PRESCORE_DASK_LOCAL": "threads"}  # fmt: skip


def gate_off(rt: Runtime, tmp_path: Path) -> None:
    """A models file with the drift gate off (runs of different days are published one after another), used by this
    process and by the processes it starts."""
    raw = yaml.safe_load(Path(rt.settings.models_file).read_text())
    raw["models"][MODEL]["max_psi"] = 10.0
    models_file = tmp_path / "models-gate-off.yaml"
    models_file.write_text(yaml.safe_dump(raw))
    rt.settings = rt.settings.model_copy(update={"models_file": models_file})
    rt.config = rt.config.model_copy(update={"models": {MODEL: rt.config.models[MODEL].model_copy(
        update={"max_psi": 10.0})}})  # fmt: skip


# ---------------------------------------------------------------- FLUSHALL under a live API


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    kind: str  # get | post | batch
    status: int  # 0: no HTTP answer
    sources: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)  # precomputed answers only


def _drive(url: str, ids: list[str], kind: str, stop: threading.Event, out: list[Answer], seed: int) -> None:
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while not stop.is_set():
            chosen = [ids[i] for i in rng.choice(len(ids), BATCH if kind == "batch" else 1, replace=False)]
            t0 = time.monotonic()
            try:
                if kind == "get":
                    r = client.get(f"/v1/scores/{MODEL}/{chosen[0]}")
                elif kind == "post":
                    r = client.post(f"/v1/scores/{MODEL}", json={"entity_id": chosen[0], "features": FEATS})
                else:
                    r = client.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": chosen})
            except httpx.HTTPError:
                out.append(Answer(t0, time.monotonic(), kind, 0))
                continue
            items = (r.json()["results"] if kind == "batch" else [r.json()]) if r.status_code == 200 else []
            scores = {a["entity_id"]: a["score"] for a in items if a["source"] == "precomputed"}
            out.append(Answer(t0, time.monotonic(), kind, r.status_code, tuple(a["source"] for a in items), scores))


def _poll(check: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> float | None:
    """Monotonic time when ``check()`` first held (None: not within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(step_s)
    return None


def test_flushall_under_a_live_api_is_detected_and_restored_from_parquet(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, observe: Callable[..., None]
) -> None:
    """A published run served by uvicorn to three concurrent clients (single GETs, POSTs with features, batches);
    FLUSHALL: no 5xx and no failed request; until the restore, GETs and batches answer ``default`` and POSTs
    ``fallback``; /readyz turns ``degraded`` saying the scores are lost, /v1/models says ``lost``, the gauge is 1;
    ``prescore restore --model churn`` (its own process) reloads the run; from then on every answer is precomputed
    with exactly the Parquet score, /readyz is ready, and the API logged one line when the loss began and one when
    it ended."""
    gate_off(rt, tmp_path)
    run = score_partition(rt, MODEL, day(0), device="cpu")
    publish_run(rt, MODEL, run.run_id)
    expected = parquet_scores(run)
    ids = pick(expected, 400)
    env = {**task_env(rt), "PRESCORE_STORE_CHECK_S": "0.2", "PRESCORE_CATALOG_REFRESH_S": "0.5",
           "PRESCORE_BREAKER_RESET_S": "0.5"}  # fmt: skip
    for key in ("PRESCORE_API_KEY_HASHES", "PRESCORE_ADMIN_KEY_HASHES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    home = rt.settings.home_dir
    info = start_detached(home, "127.0.0.1", free_port(), 1, ready_timeout_s=90)
    answers: list[Answer] = []
    stop = threading.Event()
    drivers = [threading.Thread(target=_drive, args=(info.url, ids, kind, stop, answers, i), daemon=True)
               for i, kind in enumerate(("get", "post", "batch"))]  # fmt: skip
    probe = httpx.Client(base_url=info.url, timeout=5.0)

    def readyz() -> dict[str, Any]:
        return dict(probe.get("/readyz").json())

    try:
        for driver in drivers:
            driver.start()
        assert _poll(lambda: readyz().get("store", {}).get(MODEL) == "serving", 20) is not None
        assert _poll(lambda: any(a.kind == "batch" and a.scores for a in list(answers)), 10) is not None

        t_flush = time.monotonic()
        with redis.Redis.from_url(rt.redis_url) as client:
            client.flushall()
        t_detect = _poll(lambda: "scores lost" in readyz().get("reason", ""), 20)
        during_ready = probe.get("/readyz")
        during_models = probe.get("/v1/models").json()
        during_metric = probe.get("/metrics").text
        time.sleep(1.0)  # a second of answers while lost

        t_restore = time.monotonic()
        restored = cli(task_env(rt), "restore", "--model", MODEL, "--json")
        t_restored = time.monotonic()
        t_back = _poll(lambda: any(a.started > t_restored and a.kind == "batch" and len(a.scores) == BATCH
                                   for a in list(answers)), 20)  # fmt: skip
        t_ready = _poll(lambda: readyz()["status"] == "ready", 20)
        time.sleep(1.0)  # a second of answers after the restore
        after_metric = probe.get("/metrics").text
    finally:
        stop.set()
        for driver in drivers:
            driver.join(10)
        probe.close()
        stop_detached(home)
    log_text = Path(info.log_file).read_text(errors="replace")

    assert restored.returncode == 0, restored.stderr
    [report] = json.loads(restored.stdout)
    statuses = [a.status for a in answers]
    gap = [a for a in answers if t_flush + 0.05 <= a.started and a.ended <= t_restore]
    late = [a for a in answers if t_back is not None and a.started >= t_back]
    wrong = {i: s for a in answers for i, s in a.scores.items() if s != pytest.approx(expected[i], abs=0)}
    observe(
        "redis_flushall",
        requests=len(answers), status_5xx=sum(s >= 500 for s in statuses), failed_requests=statuses.count(0),
        entities=len(expected), answers_in_gap=len(gap),
        sources_in_gap={kind: sorted({s for a in gap if a.kind == kind for s in a.sources})
                        for kind in ("get", "post", "batch")},
        detected_after_s=None if t_detect is None else round(t_detect - t_flush, 2),
        restore_command_s=round(t_restored - t_restore, 2), restore_reported_s=report["seconds"],
        precomputed_again_after_flush_s=None if t_back is None else round(t_back - t_flush, 2),
        ready_again_after_flush_s=None if t_ready is None else round(t_ready - t_flush, 2),
        wrong_scores=len(wrong), lost_log_lines=log_text.count("are lost from Redis"),
        back_log_lines=log_text.count("are in Redis again"),
    )  # fmt: skip
    assert answers and statuses.count(0) == 0 and set(statuses) == {200}
    assert t_detect is not None and t_back is not None and t_ready is not None
    assert during_ready.status_code == 200 and during_ready.json()["status"] == "degraded"
    assert run.run_id in during_ready.json()["reason"]
    [entry] = during_models["models"]
    assert (entry["state"], entry["lost_run_id"]) == ("lost", run.run_id)
    assert f'prescore_model_scores_lost{{model="{MODEL}"}} 1.0' in during_metric
    assert f'prescore_model_scores_lost{{model="{MODEL}"}} 0.0' in after_metric
    # The read cache may answer ids it read from the run while the pointer cache holds (at most max_stale_s,
    # CACHED_S, after its last pointer read, which came before the flush); from then on the ladder answers.
    cached = [a for a in gap if "precomputed" in a.sources]
    assert all(a.started < t_flush + CACHED_S for a in cached), [round(a.started - t_flush, 3) for a in cached]
    after_cache = [a for a in gap if a.started >= t_flush + CACHED_S]
    assert {(a.kind, s) for a in after_cache for s in a.sources} == {("get", "default"), ("post", "fallback"),
                                                                     ("batch", "default")}  # fmt: skip
    assert (report["status"], report["run_id"], report["action"]) == ("restored", run.run_id, "loaded")
    assert late and all(set(a.sources) == {"precomputed"} for a in late)
    assert wrong == {}
    assert log_text.count("are lost from Redis") == 1 and log_text.count("are in Redis again") == 1
    assert "Traceback" not in log_text


# ---------------------------------------------------------------- SIGKILL, restart empty, reconcile loop


@pytest.mark.asyncio
async def test_redis_sigkilled_and_restarted_empty_is_healed_by_the_reconcile_loop(
    rt: Runtime, redis_factory: Callable[..., RedisProcess], monkeypatch: pytest.MonkeyPatch,
    observe: Callable[..., None],
) -> None:  # fmt: skip
    """Redis without persistence SIGKILLed and restarted empty on the same port under a served app: the app says
    the scores are lost (not "no run") and answers the default; the reconcile task (``orchestration.reconcile_store``,
    what ``prescore_reconcile`` runs every 5 minutes) restores the run; precomputed answers equal Parquet again; the
    next reconcile does nothing."""
    server = redis_factory()
    rt.settings = rt.settings.model_copy(update={"redis_url": server.url})
    rt.__dict__.pop("redis_url", None)
    run = score_partition(rt, MODEL, day(0), device="cpu")
    publish_run(rt, MODEL, run.run_id)
    expected = parquet_scores(run)
    ids = pick(expected, 200)
    for key, value in task_env(rt, server.url).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    settings = OnlineSettings(home=rt.settings.home_dir, models_file=rt.settings.models_file, redis_url=server.url,
                              store_check_s=0.1, catalog_refresh_s=0.2, breaker_reset_s=0.2)  # fmt: skip
    async with serve(settings) as (_, client):

        async def until(check: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0) -> float:
            start = time.monotonic()
            while not check((await client.get("/readyz")).json()):
                assert time.monotonic() - start < timeout_s
                await asyncio.sleep(0.05)
            return time.monotonic()

        await until(lambda r: r.get("store", {}).get(MODEL) == "serving")
        server.kill()
        t_kill = time.monotonic()
        redis_factory(port=server.port)  # the same port, nothing on disk: empty
        t_detect = await until(lambda r: "scores lost" in r.get("reason", ""))
        lost = (await client.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": ids})).json()["results"]
        [entry] = (await client.get("/v1/models")).json()["models"]
        t_reconcile = time.monotonic()
        healed = await asyncio.to_thread(orchestration.reconcile_store)
        t_healed = time.monotonic()
        await until(lambda r: r["status"] == "ready")
        deadline = time.monotonic() + 5.0  # the readers' pointer cache (under a second)
        while True:
            back = (await client.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": ids})).json()["results"]
            if back[0]["source"] == "precomputed" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        t_back = time.monotonic()
        again = await asyncio.to_thread(orchestration.reconcile_store)
    observe("redis_sigkill_empty", entities=len(expected), detected_after_s=round(t_detect - t_kill, 2),
            reconcile_s=round(t_healed - t_reconcile, 2), precomputed_again_after_kill_s=round(t_back - t_kill, 2),
            sources_while_lost=sorted({a["source"] for a in lost}),
            second_reconcile=again[MODEL]["status"])  # fmt: skip
    assert (entry["state"], entry["lost_run_id"]) == ("lost", run.run_id)
    assert {a["source"] for a in lost} == {"default"}
    assert (healed[MODEL]["status"], healed[MODEL]["run_id"]) == ("restored", run.run_id)
    assert [(a["source"], a["run_id"]) for a in back] == [("precomputed", run.run_id)] * len(ids)
    assert [a["score"] for a in back] == [pytest.approx(expected[i], abs=0) for i in ids]
    assert again[MODEL]["status"] == "ok"


# ---------------------------------------------------------------- one cluster node restarted empty


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RedisClusterProcesses, list[RedisProcess]]]:
    """A 3-primary cluster, and a list where the test puts nodes it restarts (stopped at the end too)."""
    nodes = start_redis_cluster(tmp_path / "redis-cluster", masters=3)
    restarted: list[RedisProcess] = []
    yield nodes, restarted
    nodes.stop()
    for node in restarted:
        node.stop()


def _restart_empty(node: RedisProcess) -> RedisProcess:
    """SIGKILL one cluster node and start it again on its ports with its cluster config and no data: it rejoins
    owning its slots, holding no keys."""
    with redis.Redis(port=node.port) as client:
        line = next(ln for ln in client.execute_command("CLUSTER", "NODES").decode().splitlines() if "myself" in ln)
    bus = line.split()[1].split("@")[1].split(",")[0]
    node.kill()
    workdir = Path(node.workdir)
    args = ["--cluster-enabled", "yes", "--cluster-config-file", str(workdir.parent / f"nodes-{node.port}.conf"),
            "--cluster-port", bus, "--cluster-node-timeout", "5000"]  # fmt: skip
    return start_redis(workdir, port=node.port, extra_args=args)


def _keys_on(port: int, pattern: str) -> int:
    with redis.Redis(port=port) as client:
        return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


def test_one_cluster_node_restarted_empty_is_detected_and_repaired(
    rt: Runtime, cluster: tuple[RedisClusterProcesses, list[RedisProcess]], observe: Callable[..., None]
) -> None:
    """A run published to a 3-primary Redis Cluster; a node that does not own the model's pointer is SIGKILLed and
    restarted empty: only the buckets it owned are missing. The check finds the run lost although its pointer is
    there; the restore rewrites the run in place (same run id; readers of it never see another run) and every entity
    is served from Parquet again; the other nodes' keys are untouched."""
    cluster, restarted_nodes = cluster
    rt.settings = rt.settings.model_copy(update={"redis_url": cluster.url})
    rt.__dict__.pop("redis_url", None)
    run = score_partition(rt, MODEL, day(0), device="cpu")
    publish_run(rt, MODEL, run.run_id)
    pattern = store_key(MODEL, "bucket", run.run_id, "*")
    with redis.Redis(port=cluster.nodes[0].port) as client:
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", store_key(MODEL, "current")))
        owner = {int(s[2][1]) for s in client.execute_command("CLUSTER", "SLOTS") if s[0] <= slot <= s[1]}
    victim = next(n for n in cluster.nodes if n.port not in owner)
    before = {n.port: _keys_on(n.port, pattern) for n in cluster.nodes}
    restarted = _restart_empty(victim)
    restarted_nodes.append(restarted)
    with ScoreStore.from_url(cluster.url) as store:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = check_model(rt, store, MODEL)
                break
            except (StoreUnavailableError, redis.RedisError):  # the cluster settles after the node rejoins
                assert time.monotonic() < deadline
                time.sleep(0.2)
    missing_after_restart = _keys_on(restarted.port, pattern)
    t0 = time.monotonic()
    report = restore_model(rt, MODEL)
    took = time.monotonic() - t0
    expected = parquet_scores(run)
    reader = ScoreReader.from_url(cluster.url)
    try:
        hits = reader.get_many(MODEL, list(expected))
    finally:
        reader.close()
    after = {n.port: _keys_on(n.port, pattern) for n in cluster.nodes}
    observe("cluster_node_empty", entities=len(expected), buckets_lost=before[victim.port],
            buckets_total=sum(before.values()), reason=health.reason, restore_s=round(took, 2),
            action=report.action)  # fmt: skip
    assert missing_after_restart == 0 and before[victim.port] > 0
    assert health.state is StoreState.LOST and health.served_run_id == run.run_id
    assert "sampled buckets" in health.reason
    assert (report.status, report.action, report.run_id) == ("restored", "repaired", run.run_id)
    assert after == before
    assert all(h is not None and h.run_id == run.run_id for h in hits)
    assert [h.score for h in hits if h] == list(expected.values())
    with ScoreStore.from_url(cluster.url) as store:
        assert check_model(rt, store, MODEL).state is StoreState.SERVING


# ---------------------------------------------------------------- a restore racing a nightly publish


@pytest.mark.parametrize("first", ["restore", "publish"])
def test_a_restore_racing_a_nightly_publish_lets_one_order_win_and_mixes_nothing(
    rt: Runtime, tmp_path: Path, first: str, observe: Callable[..., None]
) -> None:
    """FLUSHALL after day -1 was published; then the restore of day -1 and ``prescore publish`` of day 0 (its own
    process) run at once, ``first`` starting ahead. A reader reading 200 ids the whole time only ever gets one run's
    exact Parquet scores (a miss exactly for the ids that run does not score), or nothing. At the end the publish
    has won whatever the interleaving: Redis serves day 0, the catalog's live record names it, and the model is not
    judged lost (so no reconcile undoes it)."""
    gate_off(rt, tmp_path)
    live = score_partition(rt, MODEL, day(-1), device="cpu")
    publish_run(rt, MODEL, live.run_id)
    new = score_partition(rt, MODEL, day(0), device="cpu")
    truth = {live.run_id: parquet_scores(live), new.run_id: parquet_scores(new)}
    ids = pick(truth[live.run_id], 200)
    with redis.Redis.from_url(rt.redis_url) as client:
        client.flushall()

    seen: list[tuple[str | None, bool]] = []  # (run of the hits, all equal to that run's Parquet)
    stop = threading.Event()

    def read() -> None:
        reader = ScoreReader.from_url(rt.redis_url)
        try:
            while not stop.is_set():
                hits = reader.get_many(MODEL, ids)
                runs = {h.run_id for h in hits if h is not None}
                if not runs:
                    seen.append((None, all(h is None for h in hits)))
                    continue
                run_id = runs.pop() if len(runs) == 1 else "MIXED"
                scores = truth.get(run_id, {})  # an id the run does not score must be a miss, the others exact
                exact = bool(scores) and all((h.score if h else None) == scores.get(i)
                                             for i, h in zip(ids, hits, strict=True))  # fmt: skip
                seen.append((run_id, exact))
        finally:
            reader.close()

    def loading(run_id: str) -> Callable[[], bool]:
        def check() -> bool:
            with redis.Redis.from_url(rt.redis_url) as client:
                return bool(client.exists(store_key(MODEL, "meta", run_id)))

        return check

    reports: list[Any] = []
    reader_thread = threading.Thread(target=read, daemon=True)
    restorer = threading.Thread(target=lambda: reports.append(restore_model(rt, MODEL)), daemon=True)
    cmd = [sys.executable, "-m", "jobs.cli", "publish", "--model", MODEL, "--run", new.run_id, "--json"]
    reader_thread.start()
    if first == "restore":
        restorer.start()
        assert _poll(loading(live.run_id), 60, 0.01) is not None
        publisher = subprocess.Popen(cmd, env={**os.environ, **task_env(rt)}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
    else:
        publisher = subprocess.Popen(cmd, env={**os.environ, **task_env(rt)}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert _poll(loading(new.run_id), 60, 0.01) is not None
        restorer.start()
    out, errors = publisher.communicate(timeout=300)
    restorer.join(300)
    time.sleep(1.0)  # the reader's pointer cache
    stop.set()
    reader_thread.join(10)

    with ScoreStore.from_url(rt.redis_url) as store:
        current = store.current_run(MODEL)
        health = check_model(rt, store, MODEL)
    live_record = rt.catalog.live_pointer(MODEL)
    runs_seen = [r for r, _ in seen]
    observe(f"restore_race_{first}", reads=len(seen), mixed=runs_seen.count("MIXED"),
            inexact=sum(1 for _, exact in seen if not exact), restore_status=reports[0].status if reports else None,
            runs_seen=sorted({str(r) for r in runs_seen}))  # fmt: skip
    assert publisher.returncode == 0, errors
    assert json.loads(out)["run_id"] == new.run_id
    assert reports and reports[0].status in ("restored", "superseded", "ok"), reports
    assert seen and "MIXED" not in runs_seen and all(exact for _, exact in seen)
    assert current is not None and current.run_id == new.run_id
    assert live_record is not None and live_record.run_id == new.run_id
    assert health.state is StoreState.SERVING
    assert runs_seen[-1] == new.run_id
