"""A throw-away Redis Cluster of primaries for the tests (formed with ``redis-cli --cluster create``).

Every node is a ``warehouse.store.start_redis`` server on 127.0.0.1, stopped by PID.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from warehouse.errors import UserError
from warehouse.store import RedisProcess, free_port, start_redis


@dataclass(frozen=True)
class RedisClusterProcesses:
    """A Redis Cluster of primaries (no replicas) this process started: stop it with ``stop()`` (every node by PID).
    ``url`` is the store URL of the cluster (its first node with ``?cluster=true``)."""

    nodes: tuple[RedisProcess, ...]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0?cluster=true"

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)


def _cluster_ok(port: int, masters: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        info = client.cluster("INFO")
    except redis.RedisError:
        return False
    finally:
        client.close()
    fields = {str(k): str(v) for k, v in info.items()}  # redis-py parses CLUSTER INFO into a dict
    return (fields.get("cluster_state"), fields.get("cluster_slots_ok"), fields.get("cluster_known_nodes")) == (
        "ok", "16384", str(masters))  # fmt: skip


def start_redis_cluster(workdir: Path, masters: int = 3, wait_s: float = 30.0) -> RedisClusterProcesses:
    """Start ``masters`` cluster-enabled redis-servers on free 127.0.0.1 ports (client and bus port both picked
    free, so no port + 10000 clash), join them with ``redis-cli --cluster create`` (no replicas, slots split evenly)
    and return once every node reports ``cluster_state:ok`` with all slots served. Nothing is kept on disk but the
    nodes' cluster config files under ``workdir``. On any failure the started servers are stopped."""
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        raise UserError("no redis-cli found: install redis-tools (it forms the cluster), or use a single Redis")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    nodes: list[RedisProcess] = []
    try:
        used: set[int] = set()
        for _ in range(masters):
            port, bus = _fresh_port(used), _fresh_port(used)
            args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
                "--cluster-port", str(bus),
                "--cluster-node-timeout", "5000",
            ]  # fmt: skip
            nodes.append(start_redis(workdir / f"node-{port}", port=port, extra_args=args))
        create = [redis_cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes)]
        done = subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=wait_s,
        )  # fmt: skip
        if done.returncode != 0:
            raise UserError(f"redis-cli --cluster create failed: {(done.stdout + done.stderr).strip()[-2000:]}")
        deadline = time.monotonic() + wait_s
        while not all(_cluster_ok(n.port, masters) for n in nodes):
            if time.monotonic() > deadline:
                raise UserError(f"Redis Cluster on ports {[n.port for n in nodes]} not ok within {wait_s:.0f}s")
            time.sleep(0.05)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisClusterProcesses(tuple(nodes))


def _fresh_port(used: set[int]) -> int:
    while (port := free_port()) in used:
        pass
    used.add(port)
    return port
