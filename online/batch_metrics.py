"""The batch side's figures on the API's ``/metrics``: read from the catalog, cached, never on the request path.

Prometheus sees the batch jobs through the API rather than a Pushgateway: the catalog already holds every figure
(monitor reports, runs, publications), every API replica can read it, and a scrape then shows the catalog's
current state (a Pushgateway keeps a job's last push forever, also after the catalog moved on, and is one more
service to run). Each replica exports the same figures: rules aggregate them with ``max by (model, ...)``.

``BatchFigures`` is a Prometheus ``Collector``. A scrape yields the figures of the last catalog read; when those are
older than ``ttl_s`` (``PRESCORE_BATCH_METRICS_TTL_S``, default 30 s; 0 turns the figures off) it starts one read
in a worker thread (never two at once) and does not wait for it: a slow or unreachable catalog never delays a
scrape. A read that fails keeps the last figures (``prescore_batch_figures_available`` 0 says so, and
``prescore_batch_figures_age_seconds`` how old they are); before the first successful read there are none.

Series (per model of the models file, at most ``MAX_MODELS``; per model the ``MAX_FEATURES`` features of highest
PSI, the flagged ones always among them, so the cached figures stay bounded whatever the catalog holds):

- from the model's newest monitor report (``jobs.monitor``): ``prescore_monitor_feature_psi{model,feature}``,
  ``prescore_monitor_feature_drifted{model,feature}`` (0/1: the monitor's own decision, ``jobs.profile``),
  ``prescore_monitor_drifted_features{model}``, ``prescore_monitor_score_psi{model,against}`` (previous run,
  baseline), ``prescore_monitor_quality{model,metric}`` (the published scores' realized quality: auc, logloss,
  ece | rmse, mae, bias; only when labels were measured) and ``prescore_monitor_partition_timestamp_seconds{model}``
  (the monitored date, midnight UTC);
- from the runs and publications: ``prescore_batch_last_failure_timestamp_seconds{model}`` (the newest failed run's
  end or the newest publication the publish step declined, ``blocked``) and
  ``prescore_batch_last_publish_timestamp_seconds{model}`` (the newest pointer change): a failure newer than the
  last publish means the nightly chain is failing;
- from the models file: ``prescore_model_max_age_seconds{model}`` (``staleness.max_age_s``) and
  ``prescore_model_schedule_interval_seconds{model}`` (between the schedule's next two firings), to compare with
  ``prescore_model_run_age_seconds`` (``online.metrics``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from warehouse import schedule
from warehouse.catalog import FAILED, Catalog, MonitorRecord
from warehouse.errors import CatalogError, ConfigError
from warehouse.model_config import ModelSpec

log = logging.getLogger("prescore.online")
MAX_MODELS = 50
MAX_FEATURES = 100
QUALITY_METRICS = ("auc", "logloss", "ece", "rmse", "mae", "bias")
FAILED_RUNS_READ = 20  # the newest runs read per model to find the newest failed one


@dataclass(frozen=True)
class ModelFigures:
    """What one catalog read found for one model."""

    psi: dict[str, float] = field(default_factory=dict)  # feature → PSI (bounded: ``MAX_FEATURES``)
    drifted: dict[str, int] = field(default_factory=dict)  # feature → 0/1
    n_drifted: int | None = None
    score_psi: dict[str, float] = field(default_factory=dict)  # previous | baseline → PSI
    quality: dict[str, float] = field(default_factory=dict)  # metric → value
    partition_ts: float | None = None
    last_failure_ts: float | None = None
    last_publish_ts: float | None = None


def _ts(at: dt.datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def figures_of(catalog: Catalog, model: str) -> ModelFigures:
    """One model's figures from ``catalog`` (module docstring); ``CatalogError`` / SQLAlchemy errors propagate."""
    reports = catalog.monitor_reports(model, limit=1)
    report: MonitorRecord | None = reports[0] if reports else None
    psi: dict[str, float] = {}
    drifted: dict[str, int] = {}
    score_psi: dict[str, float] = {}
    quality: dict[str, float] = {}
    if report is not None:
        ranked = sorted(report.features, key=lambda f: (not f.drifted, -(f.psi or 0.0), f.feature))[:MAX_FEATURES]
        psi = {f.feature: float(f.psi) for f in ranked if f.psi is not None}
        drifted = {f.feature: int(f.drifted) for f in ranked}
        for against, value in (("previous", report.score_psi_previous), ("baseline", report.score_psi_baseline)):
            if value is not None:
                score_psi[against] = float(value)
        measured = report.published_quality or {}
        quality = {m: float(measured[m]) for m in QUALITY_METRICS if isinstance(measured.get(m), int | float)}
    failures = [r.finished_at or r.started_at for r in catalog.runs(model, status=FAILED, limit=FAILED_RUNS_READ)]
    failures += [dt.datetime.fromisoformat(p["at"]) for p in catalog.publications(model) if p["action"] == "blocked"]
    pointer = catalog.live_pointer(model)
    return ModelFigures(
        psi=psi, drifted=drifted, n_drifted=None if report is None else report.n_drifted, score_psi=score_psi,
        quality=quality,
        partition_ts=None if report is None else
        dt.datetime.combine(report.partition_date, dt.time(), dt.UTC).timestamp(),
        last_failure_ts=max((t.timestamp() for t in failures), default=None),
        last_publish_ts=_ts(pointer.at if pointer else None),
    )  # fmt: skip


def schedule_interval_s(cron: str | None, now: dt.datetime) -> float | None:
    """Seconds between the schedule's next two firings after ``now`` (None: a schedule ``schedule.parse`` cannot
    read, or one that never fires)."""
    first = schedule.next_run(cron, now)
    second = schedule.next_run(cron, first) if first is not None else None
    return None if first is None or second is None else (second - first).total_seconds()


class BatchFigures(Collector):
    """The collector of the module docstring. ``models()``: the served models' specs (name → ``ModelSpec``);
    ``clock``: epoch seconds (the TTL and the figures' age); ``spawn(fn)``: runs a catalog read off the scrape
    (default a daemon thread; tests pass ``lambda fn: fn()`` to read inline); ``open_catalog(url)`` opens it."""

    def __init__(
        self,
        catalog_url: str,
        models: Callable[[], Mapping[str, ModelSpec]],
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        spawn: Callable[[Callable[[], None]], None] | None = None,
        open_catalog: Callable[[str], Catalog] | None = None,
    ) -> None:
        self.catalog_url, self.models, self.ttl_s, self.clock = catalog_url, models, ttl_s, clock
        self.spawn = spawn or (lambda fn: threading.Thread(target=fn, name="batch-figures", daemon=True).start())
        self.open_catalog = open_catalog or (lambda url: Catalog.open(url, migrate=False, create=False))
        self.figures: dict[str, ModelFigures] = {}
        self.read_at: float | None = None  # epoch of the last successful read
        self.available = 0
        self.reads = 0  # catalog reads started (tests: the TTL)
        self._due = 0.0
        self._reading = False
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def close(self) -> None:
        with self._lock:
            if self._catalog is not None:
                self._catalog.close()
                self._catalog = None

    def _read(self, names: list[str]) -> None:
        try:
            with self._lock:
                if self._catalog is None:
                    self._catalog = self.open_catalog(self.catalog_url)
                figures = {name: figures_of(self._catalog, name) for name in names}
            self.figures, self.read_at, self.available = figures, self.clock(), 1
        except (CatalogError, ConfigError, sa.exc.SQLAlchemyError) as exc:
            if self.available or self.reads == 1:  # said once per outage, not every TTL
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                log.warning("batch figures unavailable (%s): /metrics keeps the last ones", reason)
            self.available = 0
        finally:
            self._reading = False

    def collect(self) -> Iterator[Metric]:
        if self.ttl_s <= 0:
            return
        specs = dict(sorted(self.models().items())[:MAX_MODELS])
        now = self.clock()
        if now >= self._due and not self._reading:
            self._due, self._reading = now + self.ttl_s, True
            self.reads += 1
            names = list(specs)
            self.spawn(lambda: self._read(names))
        yield GaugeMetricFamily("prescore_batch_figures_available", "1 when the last catalog read of the batch "
                                "figures (online.batch_metrics) succeeded", value=self.available)  # fmt: skip
        if self.read_at is not None:
            yield GaugeMetricFamily("prescore_batch_figures_age_seconds", "Age of the batch figures served",
                                    value=max(0.0, self.clock() - self.read_at))  # fmt: skip
        yield from self._model_families(specs, now)
        yield from self._catalog_families(self.figures)

    def _model_families(self, specs: Mapping[str, ModelSpec], now: float) -> Iterator[Metric]:
        max_age = GaugeMetricFamily("prescore_model_max_age_seconds", "The model's staleness.max_age_s: older "
                                    "scores are served stale", labels=["model"])  # fmt: skip
        interval = GaugeMetricFamily("prescore_model_schedule_interval_seconds", "Seconds between the next two "
                                     "firings of the model's schedule", labels=["model"])  # fmt: skip
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        for name, spec in specs.items():
            max_age.add_metric([name], spec.staleness.max_age_s)
            seconds = schedule_interval_s(spec.schedule, at)
            if seconds is not None:
                interval.add_metric([name], seconds)
        yield max_age
        yield interval

    @staticmethod
    def _catalog_families(figures: Mapping[str, ModelFigures]) -> Iterator[Metric]:
        psi = GaugeMetricFamily("prescore_monitor_feature_psi", "PSI of the feature on the newest monitored date "
                                "against the production baseline", labels=["model", "feature"])  # fmt: skip
        drifted = GaugeMetricFamily("prescore_monitor_feature_drifted", "1 when the newest monitor report flagged "
                                    "the feature as drifted", labels=["model", "feature"])  # fmt: skip
        n_drifted = GaugeMetricFamily("prescore_monitor_drifted_features", "Features the newest monitor report "
                                      "flagged", labels=["model"])  # fmt: skip
        score_psi = GaugeMetricFamily("prescore_monitor_score_psi", "PSI of the monitored run's scores against the "
                                      "previous published run or the baseline", labels=["model", "against"],
                                      )  # fmt: skip
        quality = GaugeMetricFamily("prescore_monitor_quality", "Realized quality of the published scores on the "
                                    "newest monitored date with labels", labels=["model", "metric"])  # fmt: skip
        partition = GaugeMetricFamily("prescore_monitor_partition_timestamp_seconds", "The newest monitored "
                                      "partition date (midnight UTC)", labels=["model"])  # fmt: skip
        failure = GaugeMetricFamily("prescore_batch_last_failure_timestamp_seconds", "The newest failed run or "
                                    "declined publish of the model", labels=["model"])  # fmt: skip
        publish = GaugeMetricFamily("prescore_batch_last_publish_timestamp_seconds", "The newest pointer change "
                                    "(publish, rollback, restore...) of the model", labels=["model"])  # fmt: skip
        for name, f in sorted(figures.items()):
            for feature, value in f.psi.items():
                psi.add_metric([name, feature], value)
            for feature, flag in f.drifted.items():
                drifted.add_metric([name, feature], flag)
            if f.n_drifted is not None:
                n_drifted.add_metric([name], f.n_drifted)
            for against, value in f.score_psi.items():
                score_psi.add_metric([name, against], value)
            for metric, value in f.quality.items():
                quality.add_metric([name, metric], value)
            for family, stamp in ((partition, f.partition_ts), (failure, f.last_failure_ts),
                                  (publish, f.last_publish_ts)):  # fmt: skip
                if stamp is not None:
                    family.add_metric([name], stamp)
        yield from (psi, drifted, n_drifted, score_psi, quality, partition, failure, publish)
