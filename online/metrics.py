"""Prometheus metrics of one app (its own ``CollectorRegistry``, so apps and tests never collide).

The request path counts into plain Python ints (one event loop thread: no locks; ``bisect`` picks a histogram
bucket), folded into Prometheus counter and histogram families at scrape by ``_Collector`` — a few hundred
nanoseconds per answer instead of microseconds. Gauges (breaker state, readiness, in-flight requests, prediction
log, age of each model's current run, lost scores per model) are read at scrape from ``values()``.

Series: ``prescore_request_seconds{route,source}`` and ``prescore_redis_seconds{op}`` (histograms),
``prescore_answers_total{model,rung,source,lookup,variant}`` (sum by the label you need: rung, source, lookup =
hit/stale/miss/unavailable, overlay (an entity of the live run's overlay layer served) or invalidated,
or variant = champion/challenger of a rollout), ``prescore_shadow_reads_total{model, lookup}`` (a shadow's
challenger scores read: hit/miss), ``prescore_shed_total``, ``prescore_errors_total{status,
code}``, the gauges below (among them ``prescore_rollout_percent{model,challenger}``, the canary's effective
percent, and ``prescore_rollout_challenger_loaded{model,challenger}``). With the read cache on:
``prescore_read_cache_hits_total`` / ``_misses_total`` (ids looked up in it: found, including cached misses, or not),
``prescore_read_cache_evictions_total`` (entries dropped for room), ``prescore_read_cache_entries`` and
``prescore_read_cache_bytes`` (its accounted size), read from the ``ReadCache`` at scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25)


class _Histogram:
    """Bucket counts (the last one is +Inf) and the sum of one labelled series."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family_sample(self) -> tuple[list[tuple[str, float]], float]:
        buckets, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        return buckets, self.total


class Metrics:
    """Every series of the online reader. ``values()`` is called at scrape to fill the gauges."""

    def __init__(self, values: Callable[[], dict[str, Any]]) -> None:
        self.requests: dict[tuple[str, str], _Histogram] = {}
        self.redis: dict[str, _Histogram] = {}
        self.answers: dict[tuple[str, str, str, str, str], int] = {}
        self.shadow_reads: dict[tuple[str, str], int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.shed = 0
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self, values))

    def answered(self, model: str, rung: str, source: str, lookup: str, variant: str) -> None:
        """Count one answer: its ladder rung, its source, what the precomputed lookup found, and the variant."""
        key = (model, rung, source, lookup, variant)
        self.answers[key] = self.answers.get(key, 0) + 1

    def shadow_read(self, model: str, found: bool) -> None:
        """Count one challenger score read in shadow."""
        key = (model, "hit" if found else "miss")
        self.shadow_reads[key] = self.shadow_reads.get(key, 0) + 1

    def request_done(self, route: str, source: str, seconds: float) -> None:
        series = self.requests.get((route, source))
        if series is None:
            series = self.requests[(route, source)] = _Histogram(LATENCY_BUCKETS)
        series.observe(seconds)

    def redis_call(self, op: str, seconds: float) -> None:
        series = self.redis.get(op)
        if series is None:
            series = self.redis[op] = _Histogram(REDIS_BUCKETS)
        series.observe(seconds)

    def error(self, status: int, code: str) -> None:
        key = (str(status), code)
        self.errors[key] = self.errors.get(key, 0) + 1
        if code == "overloaded":
            self.shed += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector(Collector):
    """Folds ``Metrics``' plain counts into Prometheus families, and reads the gauges from ``values()``:
    ``breaker`` (0 closed, 1 half-open, 2 open), ``ready`` (0/1), ``in_flight``, ``run_as_of`` (model → epoch of
    the current run's as_of, or None), ``store_lost`` (model → 0/1), ``catalog_available`` (0/1, None: no catalog
    compared), ``log_dropped``, ``log_written``, ``log_pending``, ``rollouts`` (model → (challenger version,
    effective percent, challenger run loaded 0/1)), ``read_cache`` (the ``ReadCache``, or None: off)."""

    def __init__(self, metrics: Metrics, values: Callable[[], dict[str, Any]]) -> None:
        self.metrics, self.values = metrics, values

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        m, v = self.metrics, self.values()
        requests = HistogramMetricFamily(
            "prescore_request_seconds", "Time to answer a score request, per route and source (batch: mixed)",
            labels=["route", "source"],
        )  # fmt: skip
        for (route, source), series in sorted(m.requests.items()):
            requests.add_metric([route, source], *series.family_sample())
        yield requests
        redis_seconds = HistogramMetricFamily(
            "prescore_redis_seconds", "Redis round trips on the request path, per operation", labels=["op"]
        )
        for op, series in sorted(m.redis.items()):
            redis_seconds.add_metric([op], *series.family_sample())
        yield redis_seconds
        answers = CounterMetricFamily(
            "prescore_answers",
            "Answers per model, ladder rung (fresh, stale, fallback_miss, fallback_stale, default_miss, "
            "default_expired), source (precomputed, fallback, default), precomputed lookup result (hit, stale, "
            "miss, unavailable) and rollout variant (champion, challenger)",
            labels=["model", "rung", "source", "lookup", "variant"],
        )
        for answer, count in sorted(m.answers.items()):
            answers.add_metric(list(answer), count)
        yield answers
        shadow = CounterMetricFamily(
            "prescore_shadow_reads", "Challenger scores read in shadow (logged, never served), per model and lookup "
            "result (hit, miss)", labels=["model", "lookup"],
        )  # fmt: skip
        for labels, count in sorted(m.shadow_reads.items()):
            shadow.add_metric(list(labels), count)
        yield shadow
        percent = GaugeMetricFamily(
            "prescore_rollout_percent", "Effective canary percent of each model with a rollout (the override when "
            "set; 0 in shadow, aborted, or while the challenger has no run in Redis)", labels=["model", "challenger"],
        )  # fmt: skip
        loaded = GaugeMetricFamily(
            "prescore_rollout_challenger_loaded", "1 while the rollout's challenger has a run in Redis",
            labels=["model", "challenger"],
        )  # fmt: skip
        for model, (challenger, effective, has_run) in sorted(v.get("rollouts", {}).items()):
            percent.add_metric([model, challenger], effective)
            loaded.add_metric([model, challenger], has_run)
        yield percent
        yield loaded
        errors = CounterMetricFamily(
            "prescore_errors", "Error answers per HTTP status and code", labels=["status", "code"]
        )
        for labels, count in sorted(m.errors.items()):
            errors.add_metric(list(labels), count)
        yield errors
        yield CounterMetricFamily("prescore_shed", "Requests refused with 503 (too many in flight)", value=m.shed)
        yield GaugeMetricFamily("prescore_breaker_state", "Redis circuit breaker: 0 closed, 1 half-open, 2 open",
                                value=v["breaker"])  # fmt: skip
        yield GaugeMetricFamily("prescore_ready", "1 when the reader is ready to serve", value=v["ready"])
        yield GaugeMetricFamily("prescore_in_flight", "Requests being answered", value=v["in_flight"])
        age = GaugeMetricFamily(
            "prescore_model_run_age_seconds",
            "Age (now - as_of) of each model's current published run",
            labels=["model"],
        )
        now = v["now"]
        for model, as_of in sorted(v["run_as_of"].items()):
            if as_of is not None:
                age.add_metric([model], max(0.0, now - as_of))
        yield age
        lost = GaugeMetricFamily(
            "prescore_model_scores_lost",
            "1 while the catalog says a run of the model is live that Redis does not (fully) hold: lookups answer from "
            "the fallback model or the default until it is restored (prescore restore)",
            labels=["model"],
        )
        for model, value in sorted(v["store_lost"].items()):
            lost.add_metric([model], value)
        yield lost
        if v["catalog_available"] is not None:
            yield GaugeMetricFamily("prescore_catalog_available", "1 when the last read of the catalog's live "
                                    "pointers succeeded (the lost-scores check compares Redis with it)",
                                    value=v["catalog_available"])  # fmt: skip
        yield CounterMetricFamily("prescore_prediction_log_dropped", "Prediction-log records dropped (buffer full)",
                                  value=v["log_dropped"])  # fmt: skip
        yield CounterMetricFamily("prescore_prediction_log_written", "Prediction-log records written to Redis",
                                  value=v["log_written"])  # fmt: skip
        yield GaugeMetricFamily("prescore_prediction_log_pending", "Prediction-log records buffered in memory",
                                value=v["log_pending"])  # fmt: skip
        yield CounterMetricFamily("prescore_prediction_log_trimmed",
                                  "Prediction-log records trimmed from the stream (over its memory budget) before a "
                                  "drain reached them", value=v["log_trimmed"])  # fmt: skip
        yield GaugeMetricFamily("prescore_prediction_log_bytes", "Accounted size of the prediction-log stream",
                                value=v["log_bytes"])  # fmt: skip
        yield GaugeMetricFamily("prescore_prediction_log_budget_bytes", "Memory budget of the prediction-log stream",
                                value=v["log_budget_bytes"])  # fmt: skip
        cache = v.get("read_cache")
        if cache is not None:
            yield CounterMetricFamily("prescore_read_cache_hits", "Ids answered from the read cache (a cached miss "
                                      "included), without Redis", value=cache.hits)  # fmt: skip
            yield CounterMetricFamily("prescore_read_cache_misses", "Ids looked up in the read cache and read from "
                                      "Redis", value=cache.misses)  # fmt: skip
            yield CounterMetricFamily("prescore_read_cache_evictions", "Read-cache entries evicted (least recently "
                                      "used) to stay within its bounds", value=cache.evictions)  # fmt: skip
            yield GaugeMetricFamily("prescore_read_cache_entries", "Ids held by the read cache", value=len(cache))
            yield GaugeMetricFamily("prescore_read_cache_bytes", "Accounted size of the read cache's entries",
                                    value=cache.bytes)  # fmt: skip
