"""Promoting a challenger to champion through its gate: ``prescore promote`` and the ``prescore_promote`` DAG.

``check_gate(rt, model, version)`` judges the challenger's stored comparisons (``jobs.compare``) with the champion
it would replace (rows recorded against another champion version do not count) by ``models.<m>.promotion``
(``warehouse.model_config.PromotionGate``), one ``Check`` per rule, each with its value and bound:

- ``min_days``: dates compared (status ``compared``: both runs committed) >= ``min_days``;
- ``max_psi``: the worst score PSI of those dates <= ``max_psi``;
- ``max_decision_change``: the worst share of changed threshold decisions <= it (only for a model with
  ``thresholds``);
- ``min_rank_correlation``: the lowest Spearman's rho >= it;
- ``min_labelled_days``: compared dates whose labels arrived (realized quality measured) >= it;
- ``max_quality_loss``: the worst quality loss over those dates <= it (``jobs.score_metrics.quality_loss``: AUC
  points for binary objectives, relative RMSE otherwise); passes when no date is labelled yet.

Dates whose challenger run failed are listed (``failed_dates``) and count for nothing.

``promote_challenger(rt, model, version, force=False)`` refuses with ``PromotionRefusedError`` listing the failing
checks unless every check passes or ``force``; it also refuses, whatever ``force``, when Redis holds no verified
run behind the challenger's pointer or that run is older than the live one (``warehouse.store.older_than_live``),
before anything changes. Then:

1. the registry makes ``version`` production (``Registry.promote``; it stops being a challenger);
2. one Redis transaction moves the live pointer to the challenger's already-loaded run and removes the challenger
   pointer (``ScoreStore.publish(..., challenger=version)``; retried when a nightly shadow run replaced that run
   meanwhile). Should the flip fail or be declined (a newer champion run went live meanwhile: that publish wins),
   the registry is put back and the error raised: nothing stays half-promoted;
3. the catalog marks the version promoted and records the flip as action ``promote`` (``jobs.publish.record_flip``;
   ``forced`` and the failing checks in its detail). The old champion's run stays in the published history: a
   rollback target (``prescore rollback``) as after any publish.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.compare import objective_of
from jobs.runtime import Runtime
from jobs.score_metrics import quality_loss
from warehouse.catalog import COMPARED, FAILED, ComparisonRecord
from warehouse.errors import CatalogError, PointerMovedError, PromotionRefusedError
from warehouse.store import RunState, ScoreStore, older_than_live

log = logging.getLogger(__name__)
FLIP_ATTEMPTS = 3  # a nightly shadow run replacing the challenger's run between read and flip is retried


@dataclass(frozen=True)
class Check:
    """One rule of the gate: ``value`` (None: nothing to measure yet) against ``bound``; ``detail`` in words."""

    name: str
    passed: bool
    value: float | None
    bound: float
    detail: str


@dataclass(frozen=True)
class Gate:
    """The gate's verdict for challenger ``version`` against champion ``champion_version``."""

    model: str
    version: str
    champion_version: str | None
    checks: list[Check]
    dates: list[str] = field(default_factory=list)  # compared dates, newest first
    failed_dates: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failing(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class PromotionReport:
    model: str
    version: str
    previous_version: str | None
    run_id: str
    previous_run_id: str | None
    partition_date: str
    forced: bool
    at: str
    gate: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _worst(rows: list[ComparisonRecord], value: Any, highest: bool) -> tuple[float | None, str]:
    """The worst value over ``rows`` (highest or lowest) and the date it was seen."""
    seen = [(v, r.partition_date.isoformat()) for r in rows if (v := value(r)) is not None]
    if not seen:
        return None, ""
    v, day = max(seen) if highest else min(seen)
    return float(v), day


def _at_most(name: str, what: str, rows: list[ComparisonRecord], value: Any, bound: float, empty_passes: bool) -> Check:
    worst, day = _worst(rows, value, highest=True)
    if worst is None:
        return Check(name, empty_passes, None, bound, f"no {what} measured yet")
    return Check(name, worst <= bound, round(worst, 6), bound, f"worst {what} {worst:.4g} ({day}), needs <= {bound:g}")


def check_gate(rt: Runtime, model: str, version: str) -> Gate:
    """Judge challenger ``version`` of ``model`` by its promotion gate (module docstring). Pure reads."""
    spec = rt.config.model(model)
    gate = spec.promotion
    champion = rt.registry.production_version(model, "primary")
    rows = [c for c in rt.catalog.comparisons(model, challenger_version=version) if c.champion_version == champion]
    compared = [c for c in rows if c.status == COMPARED]
    labelled = [c for c in compared if c.champion_quality and c.challenger_quality]
    objective = objective_of(rt, model, version)

    def loss(c: ComparisonRecord) -> float | None:
        return quality_loss(c.objective or objective, c.champion_quality or {}, c.challenger_quality or {})

    days = len(compared)
    checks = [Check("min_days", days >= gate.min_days, days, gate.min_days,
                    f"{days} dates compared with champion {champion}, needs >= {gate.min_days}")]  # fmt: skip
    checks.append(_at_most("max_psi", "score PSI", compared, lambda c: c.psi, gate.max_psi, empty_passes=False))
    if spec.thresholds and spec.thresholds.labels:
        checks.append(_at_most("max_decision_change", "share of changed decisions", compared,
                               lambda c: c.decision_change, gate.max_decision_change, empty_passes=False))  # fmt: skip
    rho, rho_day = _worst(compared, lambda c: c.rank_correlation, highest=False)
    checks.append(Check(
        "min_rank_correlation", rho is not None and rho >= gate.min_rank_correlation,
        None if rho is None else round(rho, 6), gate.min_rank_correlation,
        "no rank correlation measured yet" if rho is None
        else f"lowest rank correlation {rho:.4g} ({rho_day}), needs >= {gate.min_rank_correlation:g}",
    ))  # fmt: skip
    n = len(labelled)
    checks.append(Check("min_labelled_days", n >= gate.min_labelled_days, n, gate.min_labelled_days,
                        f"{n} compared dates with labels, needs >= {gate.min_labelled_days}"))  # fmt: skip
    metric = "AUC points lost" if objective.startswith("binary:") else "relative RMSE increase"
    checks.append(_at_most("max_quality_loss", f"quality loss ({metric})", labelled, loss, gate.max_quality_loss,
                           empty_passes=True))  # fmt: skip
    return Gate(model, version, champion, checks, [c.partition_date.isoformat() for c in compared],
                [c.partition_date.isoformat() for c in rows if c.status == FAILED])  # fmt: skip


def _refusal(gate: Gate) -> str:
    failing = "; ".join(f"{c.name}: {c.detail}" for c in gate.failing)
    return (f"promotion of {gate.model} {gate.version} refused by its gate (models.{gate.model}.promotion): "
            f"{failing}. Let the nightly comparisons run (prescore compare --model {gate.model}), or promote with "
            "--force")  # fmt: skip


def promote_challenger(rt: Runtime, model: str, version: str, force: bool = False) -> PromotionReport:
    """Make challenger ``version`` the champion of ``model`` through its gate (module docstring)."""
    from jobs.publish import reconcile_pointer, record_flip

    rt.config.model(model)
    challengers = rt.registry.challengers(model)
    if version not in challengers:
        raise PromotionRefusedError(f"{version} is not a challenger of {model} (challengers: "
                                    f"{', '.join(challengers) or 'none'}); prescore compare --model {model} lists "
                                    "them")  # fmt: skip
    gate = check_gate(rt, model, version)
    if not gate.passed and not force:
        raise PromotionRefusedError(_refusal(gate))
    previous = rt.registry.require_production(model, "primary")
    with ScoreStore.from_url(rt.redis_url) as store:
        reconcile_pointer(rt, store, model)  # a pointer change the catalog missed is recorded first
        run_id = _loaded_challenger_run(store, model, version)
        rt.registry.promote(model, "primary", version)
        try:
            pub = _flip(store, model, version, run_id)
        except BaseException:
            _put_back(rt, model, version, previous)
            raise
        if pub.declined:
            _put_back(rt, model, version, previous)
            raise PromotionRefusedError(f"{model} {version} was not promoted: {pub.declined}; a newer champion run "
                                        "went live meanwhile. Promote again after the next nightly run")  # fmt: skip
    rt.catalog.mark_promoted(model, "primary", version)
    try:
        day = rt.catalog.get_run(pub.run_id).partition_date.isoformat()
    except CatalogError:
        day = ""
    detail = {"version": version, "previous_version": previous, "date": day, "gate_passed": gate.passed,
              "failing_checks": [asdict(c) for c in gate.failing]}  # fmt: skip
    record_flip(rt, model, "promote", pub.run_id, pub.previous_run_id, forced=force, at=pub.at, detail=detail)
    forced = f" FORCED past {', '.join(c.name for c in gate.failing)}" if gate.failing else ""
    log.warning("promoted %s %s (was %s): live run %s (was %s)%s", model, version, previous, pub.run_id,
                pub.previous_run_id, forced)  # fmt: skip
    return PromotionReport(model, version, previous, pub.run_id, pub.previous_run_id, day, force, pub.at.isoformat(),
                           gate.to_dict())  # fmt: skip


def _loaded_challenger_run(store: ScoreStore, model: str, version: str) -> str:
    """The verified run behind challenger ``version``'s pointer, not older than the live run, or
    ``PromotionRefusedError``."""
    run_id = store.challengers(model).get(version)
    info = store.get_run(model, run_id) if run_id else None
    if run_id is None or info is None or info.state is not RunState.LOADED:
        state = "no run" if run_id is None else f"run {run_id} ({info.state.value if info else 'gone'})"
        raise PromotionRefusedError(
            f"challenger {version} of {model} has {state} loaded behind its pointer in Redis: nothing to make live. "
            f"The nightly shadow task loads it (or prescore score --model {model} --date D --publish)"
        )
    declined = older_than_live(run_id, info.as_of, store.current_run(model))
    if declined:
        raise PromotionRefusedError(f"challenger {version} of {model}: {declined}; promote it after the next nightly "
                                    "shadow run")  # fmt: skip
    return run_id


def _flip(store: ScoreStore, model: str, version: str, run_id: str) -> Any:
    for attempt in range(FLIP_ATTEMPTS):
        try:
            return store.publish(model, run_id, challenger=version)
        except PointerMovedError:
            if attempt == FLIP_ATTEMPTS - 1:
                raise
            log.info("challenger %s of %s moved to a newer run during the promotion; promoting that one", version,
                     model)  # fmt: skip
            run_id = _loaded_challenger_run(store, model, version)
    raise AssertionError("unreachable")


def _put_back(rt: Runtime, model: str, version: str, previous: str) -> None:
    """Undo step 1 after a failed flip: the previous champion is production again, ``version`` a challenger."""
    rt.registry.promote(model, "primary", previous)
    rt.registry.add_challenger(model, version)
    log.warning("promotion of %s %s did not flip the pointer: production is %s again", model, version, previous)
