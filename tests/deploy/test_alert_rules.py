"""The Prometheus alert rules in docker/prometheus/: valid (``promtool check rules``), firing and clearing as their
unit tests say (``promtool test rules``), loaded by the Compose stack's Prometheus, and built on series the API
exports. promtool comes with the Debian package ``prometheus`` (.ci/run installs it); without it these tests skip
locally and fail in CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from online.metrics import Metrics

DOCKER = Path(__file__).resolve().parents[2] / "docker"
ALERTS = DOCKER / "prometheus" / "alerts.yml"
ALERT_TESTS = DOCKER / "prometheus" / "alerts_test.yml"


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
    assert "SUCCESS: 2 rules found" in done.stdout


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
    assert "2 rules found" in done.stdout


def test_every_series_the_rules_use_is_exported_by_the_api() -> None:
    values: dict[str, Any] = {"breaker": 0, "ready": 1, "in_flight": 0, "run_as_of": {}, "store_lost": {"churn": 1},
                              "catalog_available": 1, "log_dropped": 0, "log_written": 0, "log_pending": 0,
                              "log_trimmed": 0, "log_bytes": 0, "log_budget_bytes": 0, "now": 0.0}  # fmt: skip
    exported = Metrics(lambda: values).render().decode()
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    used = {name for r in rules for name in re.findall(r"\b(prescore_[a-z_]+)\b", r["expr"])}
    assert used == {"prescore_model_scores_lost", "prescore_catalog_available"}
    for name in used:
        assert re.search(rf"^{name}(\{{| )", exported, re.M), name
