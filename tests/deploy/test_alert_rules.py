"""The Prometheus alert rules in docker/prometheus/: valid (``promtool check rules``), firing and clearing as their
unit tests say (``promtool test rules``: every alert fires and clears, and the proof group of drift on one day and a
quality drop on another), loaded by the Compose stack's Prometheus, and built on series the API exports (its own
and the batch figures of ``online.batch_metrics``: ``exported_series``, also used by the dashboard's test).
promtool comes with the Debian package ``prometheus`` (.ci/run installs it); without it these tests skip locally and
fail in CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from online.batch_metrics import BatchFigures, ModelFigures
from online.metrics import Metrics
from warehouse.model_config import load_config
from warehouse.settings import DEFAULT_MODELS_FILE

DOCKER = Path(__file__).resolve().parents[2] / "docker"
ALERTS = DOCKER / "prometheus" / "alerts.yml"
ALERT_TESTS = DOCKER / "prometheus" / "alerts_test.yml"
N_RULES = 10
ALERTS_EXPECTED = {
    "PrescoreScoresLost", "PrescoreCatalogUnreadable", "PrescoreScoresStale", "PrescoreBatchLate",
    "PrescorePublishFailing", "PrescoreFeatureDrift", "PrescoreQualityBelowFloor", "PrescoreFallbackShareHigh",
    "PrescoreServerErrors", "PrescoreShedding",
}  # fmt: skip


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed; CI must provide it (apt-get install prometheus; .ci/run does)")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return found


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_alert_rules_are_valid() -> None:
    done = run("check", "rules", ALERTS.name, cwd=ALERTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {N_RULES} rules found" in done.stdout


def test_the_lost_scores_alert_fires_after_two_minutes_and_clears_after_the_restore() -> None:
    done = run("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_tests_catch_a_wrong_rule(tmp_path: Path) -> None:
    """The same unit tests against a rule that fires too early fail: they test something."""
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    (tmp_path / ALERTS.name).write_text(ALERTS.read_text().replace("for: 2m", "for: 1m"))
    done = run("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0 and "PrescoreScoresLost" in done.stdout + done.stderr


def test_the_compose_prometheus_loads_the_rules(tmp_path: Path) -> None:
    """Laid out as the Compose file mounts them (/etc/prometheus/{prometheus,alerts}.yml), the configuration and its
    rules check out."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"] if v.startswith("./"))
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert mounts["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    shutil.copy(DOCKER / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    done = run("check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{N_RULES} rules found" in done.stdout


def exported_series() -> str:
    """The exposition of every series family the API exports, each with at least one sample: ``Metrics`` with a
    request, an answer and an error counted, and the batch figures of one model (``online.batch_metrics``)."""
    values: dict[str, Any] = {"breaker": 0, "ready": 1, "in_flight": 0, "run_as_of": {"churn": 0.0},
                              "store_lost": {"churn": 1}, "catalog_available": 1, "log_dropped": 0, "log_written": 0,
                              "log_pending": 0, "log_trimmed": 0, "log_bytes": 0, "log_budget_bytes": 0,
                              "now": 10.0}  # fmt: skip
    metrics = Metrics(lambda: values)
    metrics.request_done("get_score", "precomputed", 0.001)
    metrics.redis_call("get", 0.0005)
    metrics.answered("churn", "fresh", "precomputed", "hit", "champion")
    metrics.error(503, "overloaded")
    spec = load_config(DEFAULT_MODELS_FILE).models["churn"]
    batch = BatchFigures("sqlite://", lambda: {"churn": spec}, ttl_s=30.0, clock=lambda: 10.0, spawn=lambda fn: None)
    batch.figures = {"churn": ModelFigures(psi={"f05": 0.4}, drifted={"f05": 1}, n_drifted=1,
                                           score_psi={"previous": 0.1}, quality={"auc": 0.8}, partition_ts=0.0,
                                           last_failure_ts=1.0, last_publish_ts=2.0)}  # fmt: skip
    batch.read_at = 0.0
    metrics.registry.register(batch)
    return metrics.render().decode()


def is_exported(name: str, exposition: str) -> bool:
    """Whether ``exposition`` has a sample of series ``name`` (a histogram's ``_bucket``/``_count``/``_sum`` too)."""
    return re.search(rf"^{name}(\{{| )", exposition, re.M) is not None


def test_every_series_the_rules_use_is_exported_by_the_api() -> None:
    exported = exported_series()
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS_EXPECTED and len(rules) == N_RULES
    used = {name for r in rules for name in re.findall(r"\b(prescore_[a-z_]+)\b", r["expr"])}
    assert {"prescore_model_scores_lost", "prescore_monitor_feature_drifted", "prescore_monitor_quality",
            "prescore_batch_last_failure_timestamp_seconds", "prescore_answers_total"} <= used  # fmt: skip
    for name in used:
        assert is_exported(name, exported), name


def test_every_alert_is_unit_tested_firing() -> None:
    """Each rule has a promtool case in which it fires (``exp_alerts`` not empty) and one in which it does not."""
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == ALERTS_EXPECTED
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == ALERTS_EXPECTED
