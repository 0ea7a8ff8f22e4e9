"""The Grafana dashboard in docker/grafana/: provisioned by the Compose stack next to Prometheus, showing what the
issue asks of it (serving mix, latency percentiles, score age per model, drift and realized quality), and every
panel's PromQL valid (``promtool`` parses it as a recording rule) and built only on series the API exports
(``tests.deploy.test_alert_rules.exported_series``)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import compose_checks as cc
from tests.deploy.test_alert_rules import DOCKER, exported_series, is_exported, run

DASHBOARD = DOCKER / "grafana" / "dashboards" / "prescore.json"


def _panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p["targets"]]


def test_the_compose_stack_provisions_the_dashboard_and_its_prometheus() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert cc.check_grafana_provisioning(compose, DOCKER) == []
    grafana = compose["services"]["grafana"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]


def test_a_provisioning_that_misses_its_dashboards_is_reported(tmp_path: Path) -> None:
    shutil.copytree(DOCKER / "grafana", tmp_path / "grafana")
    (tmp_path / "grafana" / "dashboards" / "prescore.json").write_text("{not json")
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert any("is not JSON" in p for p in cc.check_grafana_provisioning(compose, tmp_path))
    compose["services"]["grafana"]["volumes"] = ["./grafana/provisioning:/etc/grafana/provisioning:ro"]
    assert any("no dashboards directory" in p for p in cc.check_grafana_provisioning(compose, DOCKER))
    del compose["services"]["grafana"]
    assert cc.check_grafana_provisioning(compose, DOCKER) == ["no grafana service"]


def test_the_dashboard_shows_the_serving_mix_latency_score_age_drift_and_quality() -> None:
    text = "\n".join(_exprs())
    titles = " | ".join(p["title"].lower() for p in _panels())
    for title in ("serving mix", "latency percentiles", "score age per model", "feature drift", "realized quality"):
        assert title in titles, title
    for series in ("prescore_answers_total", "prescore_request_seconds_bucket", "prescore_model_run_age_seconds",
                   "prescore_monitor_feature_psi", "prescore_monitor_quality"):  # fmt: skip
        assert series in text, series
    assert {"0.5", "0.95", "0.99"} <= set(re.findall(r"histogram_quantile\(([0-9.]+)", text))
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_every_panel_query_is_valid_promql_on_series_the_api_exports(tmp_path: Path) -> None:
    exported = exported_series()
    exprs = [e.replace("$model", ".*") for e in _exprs()]
    for name in {n for e in exprs for n in re.findall(r"\b(prescore_[a-z_]+)\b", e)}:
        assert is_exported(name, exported), name
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"panel:{i}", "expr": e}
                                                         for i, e in enumerate(exprs)]}]}  # fmt: skip
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    done = run("check", "rules", "panels.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("broken", ["sum by (source (rate(prescore_answers_total[5m]))"])
def test_promtool_refuses_a_broken_panel_query(tmp_path: Path, broken: str) -> None:
    (tmp_path / "panels.yml").write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [
        {"record": "panel:0", "expr": broken}]}]}))  # fmt: skip
    assert run("check", "rules", "panels.yml", cwd=tmp_path).returncode != 0
