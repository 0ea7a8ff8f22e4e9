"""Which Dask cluster a job runs on.

- ``PRESCORE_DASK_ADDRESS`` is a scheduler address → connect to it (external CPU or dask-cuda cluster).
- device ``cuda`` (or ``auto`` with a visible GPU) and no address → a dask-cuda ``LocalCUDACluster``.
- otherwise a local CPU cluster sized to the machine: one worker with a thread per core by default. The
  heavy steps (pyarrow read/write, xgboost ``inplace_predict``) release the GIL, so threads keep the
  job at ~0.97x a bare single-process pipeline where worker processes pay ~3x in start-up and
  inter-process transfer (BENCHMARKS.md). ``PRESCORE_DASK_LOCAL=processes`` opts into worker processes,
  except inside an Airflow task, where spawned workers re-import Airflow and crash on its blocked
  metadata-DB access: there it stays on threads and says so.

Every listener of a local cluster (scheduler, workers, nannies, their dashboards and HTTP servers) binds
``PRESCORE_DASK_HOST``, 127.0.0.1 by default: nothing prescore starts is reachable from the network unless that
setting says so (a warning is logged then).

Dask's own loggers (``distributed.*``) run at ``PRESCORE_DASK_LOG_LEVEL`` (``WARNING``) while the cluster is
open, so its start-up banner and per-connection lines stay out of command output and Airflow task logs.

The dashboard link is logged. ``open_cluster`` is a context manager: the local cluster it starts is closed
on exit; an external one is only disconnected from.

A job of one task on a local CPU cluster (``open_cluster(..., tasks=1)``: a partition of one chunk, a run of one
part) runs inline instead: ``InlineClient`` calls the task in this process with every core, the way a one-worker
threads cluster would, without importing or starting Dask (about 0.4 s of a small command's start). With
``PRESCORE_DASK_ADDRESS`` set every job goes to that scheduler.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from warehouse.errors import UserError
from warehouse.settings import Settings

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

log = logging.getLogger(__name__)
Device = Literal["cpu", "cuda"]


def gpu_visible() -> bool:
    """True when cupy can see at least one CUDA device (False when cupy is not installed)."""
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


def resolve_device(requested: str) -> Device:
    """``auto`` → cuda when a GPU is visible, else cpu; ``cuda`` without a GPU is a user error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {requested!r} is not one of auto, cpu, cuda")
    if requested == "cpu":
        return "cpu"
    if gpu_visible():
        return "cuda"
    if requested == "cuda":
        raise UserError(
            "--device cuda needs a visible CUDA GPU and the gpu extra (uv sync --extra gpu); none was found. "
            "Use --device cpu or auto."
        )
    return "cpu"


@dataclass(frozen=True)
class ClusterInfo:
    kind: str  # external | local-processes | local-threads | local-cuda | inline
    address: str
    dashboard: str | None
    workers: int


def _local_kind(settings: Settings) -> str:
    if settings.dask_local == "processes":
        if not settings.airflow_task:
            return "processes"
        log.warning(
            "PRESCORE_DASK_LOCAL=processes is ignored inside an Airflow task (spawned workers crash there); "
            "using threads. Set PRESCORE_DASK_ADDRESS to use a multi-process cluster from Airflow."
        )
    return "threads"


@contextmanager
def dask_log_level(level: str) -> Iterator[None]:
    """Dask's loggers (``distributed`` and its children) at ``level`` inside the block; restored after it."""
    logger = logging.getLogger("distributed")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextmanager
def open_cluster(
    settings: Settings, device: Device = "cpu", tasks: int | None = None
) -> Iterator[tuple[Any, ClusterInfo]]:
    """Yield a connected client and a description of the cluster (see module docstring). ``tasks``: how many tasks
    the job maps, when known; one on a local CPU cluster runs inline (``InlineClient``)."""
    address = settings.dask_address
    if tasks is not None and tasks <= 1 and device == "cpu" and not (address and address != "auto"):
        info = ClusterInfo("inline", "inline://", None, 1)
        log.info("Dask: not started for a job of one task; it runs inline with %d threads", os.cpu_count() or 1)
        yield InlineClient(), info
        return
    with dask_log_level(settings.dask_log_level):
        yield from _open_cluster(settings, device)


class InlineClient:
    """The part of ``distributed.Client`` the jobs use (``map``, ``gather``, ``scheduler_info``), run in this process:
    each call of ``map`` runs its tasks one after the other and ``gather`` returns their results."""

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *, pure: bool = True, **kwargs: Any) -> list[Any]:
        return [fn(item, **kwargs) for item in items]

    def gather(self, results: list[Any]) -> list[Any]:
        return results

    def scheduler_info(self) -> dict[str, Any]:
        return {"workers": {"inline": {"nthreads": 1}}}  # one slot: a task gets every core (jobs.score)

    def close(self) -> None:
        return None


def _open_cluster(settings: Settings, device: Device) -> Iterator[tuple[Client, ClusterInfo]]:
    from distributed import Client, LocalCluster

    address = settings.dask_address
    if address and address != "auto":
        try:
            client = Client(address, timeout="10s")
        except OSError as exc:
            raise UserError(
                f"cannot reach the Dask scheduler at {address}: {exc}; check PRESCORE_DASK_ADDRESS"
            ) from None
        info = ClusterInfo("external", address, client.dashboard_link, len(client.scheduler_info()["workers"]))
        log.info("Dask: external scheduler %s, %d workers, dashboard %s", address, info.workers, info.dashboard)
        try:
            yield client, info
        finally:
            client.close()
        return

    host = settings.dask_host
    if not _loopback(host):
        log.warning("PRESCORE_DASK_HOST is %s: the local Dask cluster and its dashboards are reachable from the "
                    "network", host)  # fmt: skip
    # Each listener gets the host explicitly: a worker's HTTP server binds every interface unless told otherwise.
    listen = {"dashboard_address": f"{_bracketed(host)}:0", "worker_dashboard_address": f"{_bracketed(host)}:0",
              "silence_logs": logging.getLevelName(settings.dask_log_level)}  # fmt: skip
    cluster: LocalCluster
    if device == "cuda":
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(host=host, **listen)
        kind = "local-cuda"
    else:
        kind = "local-" + _local_kind(settings)
        cores = os.cpu_count() or 1
        if kind == "local-threads":  # in-process: the scheduler and the worker talk over inproc://, no socket
            cluster = LocalCluster(
                n_workers=1, threads_per_worker=settings.dask_workers or cores, processes=False, **listen
            )
        else:
            cluster = LocalCluster(
                n_workers=settings.dask_workers or cores, threads_per_worker=1, processes=True, host=host, **listen
            )
    client = Client(cluster)
    # the default link names the machine's public address, whatever the dashboard listens on
    port = urlsplit(client.dashboard_link).port
    dashboard = f"http://{_bracketed(host)}:{port}/status"
    info = ClusterInfo(kind, cluster.scheduler_address, dashboard, len(cluster.workers))
    log.info("Dask: %s cluster with %d workers, dashboard %s", kind, info.workers, info.dashboard)
    try:
        yield client, info
    finally:
        with suppress(Exception):
            client.close()
        cluster.close()


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``; any other address or host name may be reachable from the network."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
