"""Shadow scoring: every challenger version of a model scored on the champion's partition, and loaded into Redis
behind its challenger pointer (``warehouse.rollout``), never the live one.

``score_challengers`` scores each version of ``Registry.challengers(model)`` with ``jobs.score.score_partition``
(on the caller's Dask cluster, or each on the one its size needs) after one contract pass: the caller's (the
fingerprint of the input ``validate_contract`` or the champion's run checked), else the first challenger's. Each
version commits its own Parquet run under ``challenger_key(model, version)``. ``publish_challengers`` loads each
committed run with ``jobs.publish.publish_run`` (the same load, sample check and PSI gate as a champion run,
against the challenger's previous run) and flips that challenger's pointer.

A challenger never stops the champion: a version whose scoring or publish fails (a tampered artifact, a blocked
gate, Redis refusing the load) is reported with ``status: failed`` and its reason, logged, and the next version goes
on; the comparison (``jobs.compare``) records it. Errors that are not the challenger's own (the partition is missing,
the catalog is down) propagate.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from jobs.cluster import ClusterInfo, resolve_device
from jobs.runtime import Runtime
from warehouse.errors import ContractViolationError, PrescoreError
from warehouse.rollout import challenger_key

log = logging.getLogger(__name__)
SCORED, PUBLISHED, FAILED = "scored", "published", "failed"


def _failed(version: str, stage: str, exc: BaseException) -> dict[str, Any]:
    log.warning("challenger %s: %s failed: %s", version, stage, exc)
    return {"version": version, "status": FAILED, "stage": stage, "error": str(exc)[:2000]}


def score_challengers(
    rt: Runtime,
    model: str,
    day: dt.date,
    device: str = "auto",
    force: bool = False,
    cluster: tuple[Any, ClusterInfo] | None = None,
    validated: str | None = None,
) -> list[dict[str, Any]]:
    """Score every challenger of ``model`` on partition ``day``; one result per version (``status`` scored or
    failed, with ``run_id``, ``key``, ``rows_out``, ``reused``, ``psi`` or ``error``). No challengers: []."""
    versions = rt.registry.challengers(model)
    if not versions:
        return []
    from jobs.score import score_partition

    results: list[dict[str, Any]] = []
    dev = resolve_device(device)
    for version in versions:  # without a cluster, each run opens the one its size needs (inline for one chunk)
        try:
            report = score_partition(rt, model, day, device=dev, force=force, cluster=cluster, validated=validated,
                                     challenger=version)  # fmt: skip
        except ContractViolationError:
            raise  # the partition itself breaks the contract: the champion's problem too
        except PrescoreError as exc:
            results.append(_failed(version, "score", exc))
            continue
        validated = validated or rt.catalog.get_run(report.run_id).input_fingerprint  # checked once per partition
        results.append({
            "version": version, "status": SCORED, "key": challenger_key(model, version), "run_id": report.run_id,
            "rows_out": report.rows_out, "reused": report.reused, "psi": report.psi, "output_path": report.output_path,
        })  # fmt: skip
    return results


def publish_challengers(rt: Runtime, model: str, scored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Load and flip the challenger pointer of each scored result of ``score_challengers``; failed ones pass
    through. A run older than the challenger's current one is reported as declined (published False)."""
    from jobs.publish import publish_run

    out: list[dict[str, Any]] = []
    for result in scored:
        if result["status"] != SCORED:
            out.append(result)
            continue
        try:
            report = publish_run(rt, result["key"], result["run_id"])
        except PrescoreError as exc:  # a blocked gate (QualityGateError) included
            out.append({**result, **_failed(result["version"], "publish", exc)})
            continue
        out.append({**result, "status": PUBLISHED, "published": report.declined is None, "declined": report.declined,
                    "previous_run_id": report.previous_run_id, "gate_psi": report.psi})  # fmt: skip
    return out


def shadow(
    rt: Runtime, model: str, day: dt.date, device: str = "auto", force: bool = False, validated: str | None = None,
    cluster: tuple[Any, ClusterInfo] | None = None, publish: bool = True,
) -> list[dict[str, Any]]:  # fmt: skip
    """``score_challengers`` then, with ``publish``, ``publish_challengers``: what the nightly DAG's ``shadow`` task,
    ``prescore score`` and ``prescore backfill`` run for the challengers."""
    scored = score_challengers(rt, model, day, device=device, force=force, cluster=cluster, validated=validated)
    return publish_challengers(rt, model, scored) if publish else scored
