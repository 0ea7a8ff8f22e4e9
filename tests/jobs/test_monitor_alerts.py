"""The proof, end to end: on the synthetic warehouse, feature f05 drifted on day -1 and a degraded production model
scoring day 0. The monitoring job flags both; its reports, exported as the API's /metrics exports them
(``online.batch_metrics`` over the same catalog), are fed to ``promtool test rules`` as one 10-minute phase per
nightly monitor, and the shipped alert rules (docker/prometheus/alerts.yml) fire PrescoreFeatureDrift for churn's
f05 during day -1 only and PrescoreQualityBelowFloor for churn on day 0 only; the report page shows both."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobs.monitor import monitor_date
from jobs.register import register_model
from jobs.report_page import collect, render
from jobs.runtime import Runtime
from online.batch_metrics import BatchFigures
from tests.deploy.test_alert_rules import ALERTS, run
from tests.jobs.test_monitor import MODEL, _degraded_model, _publish, _shift_feature
from tests.support.clock import day

PHASE = 10  # samples (minutes) per nightly monitor in the promtool test
FAMILIES = ("prescore_monitor_feature_drifted", "prescore_monitor_quality", "prescore_monitor_feature_psi")


def _scrape(rt: Runtime) -> dict[str, float]:
    """The monitor series of one /metrics scrape over ``rt``'s catalog, as promtool series text → value."""
    spec = rt.config.model(MODEL)
    figures = BatchFigures(rt.settings.resolved_catalog_url, lambda: {MODEL: spec}, 30.0, spawn=lambda fn: fn())
    registry = CollectorRegistry(auto_describe=True)
    registry.register(figures)
    text = generate_latest(registry).decode()
    figures.close()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in FAMILIES:
                labels = ", ".join(f'{k}="{v}"' for k, v in sorted({**sample.labels, "instance": "a:8000"}.items()))
                out[f"{sample.name}{{{labels}}}"] = float(sample.value)
    return out


def _annotations(alert: str, labels: dict[str, str], value: float) -> dict[str, str]:
    """The rule's annotations expanded for ``labels`` and ``value`` (the templates the rules use)."""
    rule = next(r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if r.get("alert") == alert)
    out = {}
    for key, template in rule["annotations"].items():
        text = template.replace("{{ $value }}", repr(value))
        out[key] = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    return out


def _case(at: int, alert: str, fired: list[tuple[dict[str, str], float]], severity: str) -> dict[str, Any]:
    expected = [{"exp_labels": {"severity": severity, **labels}, "exp_annotations": _annotations(alert, labels, value)}
                for labels, value in fired]  # fmt: skip
    return {"eval_time": f"{at}m", "alertname": alert, "exp_alerts": expected}


def test_drift_and_a_quality_drop_found_by_the_monitor_fire_their_alerts(rt: Runtime, tmp_path: Path) -> None:
    _publish(rt, -2)
    healthy = monitor_date(rt, MODEL, day(-2))
    scrapes = [_scrape(rt)]
    _shift_feature(rt, -1, "f05", 150.0)
    _publish(rt, -1, force=True)
    drifted = monitor_date(rt, MODEL, day(-1))
    scrapes.append(_scrape(rt))
    register_model(rt, MODEL, "primary", _degraded_model(rt, tmp_path), promote=True, reference_date=day(-2))
    _publish(rt, 0, force=True)
    degraded = monitor_date(rt, MODEL, day(0))
    scrapes.append(_scrape(rt))

    # the monitoring job flags the drifted feature and the quality drop
    assert [f.feature for f in drifted.features if f.drifted] == ["f05"] and healthy.n_drifted == 0
    auc_before, auc_now = healthy.published_quality["auc"], degraded.published_quality["auc"]  # type: ignore[index]
    assert auc_before > 0.7 and auc_now < 0.6 and degraded.n_drifted == 0
    assert scrapes[1]['prescore_monitor_feature_drifted{feature="f05", instance="a:8000", model="churn"}'] == 1.0

    # the same figures over time, and the shipped rules' verdict on them
    series = sorted({name for scrape in scrapes for name in scrape})
    inputs = [{"series": name, "values": " ".join(f"{s[name]!r}x{PHASE - 1}" if name in s else f"_x{PHASE - 1}"
                                                 for s in scrapes)} for name in series]  # fmt: skip
    f05 = ({"model": MODEL, "feature": "f05"}, 1.0)
    churn = ({"model": MODEL}, auc_now)
    cases = [
        _case(5, "PrescoreFeatureDrift", [], "warning"),
        _case(15, "PrescoreFeatureDrift", [f05], "warning"),
        _case(25, "PrescoreFeatureDrift", [], "warning"),
        _case(5, "PrescoreQualityBelowFloor", [], "critical"),
        _case(15, "PrescoreQualityBelowFloor", [], "critical"),
        _case(25, "PrescoreQualityBelowFloor", [churn], "critical"),
    ]
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    test = {"rule_files": [ALERTS.name], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": inputs, "alert_rule_test": cases}]}  # fmt: skip
    (tmp_path / "proof_test.yml").write_text(yaml.safe_dump(test, sort_keys=False, width=1000))
    done = run("test", "rules", "proof_test.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    floor = ALERTS.read_text().replace('{metric="auc"}) < 0.6', '{metric="auc"}) < 0.4')
    assert floor != ALERTS.read_text()
    (tmp_path / ALERTS.name).write_text(floor)  # a floor too low: the quality drop goes unseen, and the test says so
    missed = run("test", "rules", "proof_test.yml", cwd=tmp_path)
    assert missed.returncode != 0 and "PrescoreQualityBelowFloor" in missed.stdout + missed.stderr

    # the report shows both
    page = render(collect(rt, MODEL, 7))
    assert "feature f05 drifted: psi" in page
    assert f"published {day(0).isoformat()}: auc {auc_now:.4f}" in page
    assert f"published {day(-2).isoformat()}: auc {auc_before:.4f}" in page
