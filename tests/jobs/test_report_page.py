"""``prescore report``: the HTML page of a model's runs and monitoring reports, built from real runs of the synthetic
warehouse and ``jobs.monitor`` reports, opened in a real headless Chromium that can reach nothing but 127.0.0.1
(``tests.support.browser``). Dates come from the test clock (``tests.support.clock``)."""

from __future__ import annotations

import datetime as dt
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.monitor import monitor_date
from jobs.prediction_drain import LOG_DIR, part_name
from jobs.publish import publish_run
from jobs.report_page import PLOTS, ReportData, collect, render
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.support.browser import chromium_binary, console_messages, screenshot
from tests.support.clock import day
from warehouse.catalog import MonitorFeatureRecord, MonitorRecord
from warehouse.datasets import features as fstore
from warehouse.datasets.score_files import read_run
from warehouse.prediction_stream import records_table

FIXED = dt.datetime.combine(day(1), dt.time(3), dt.UTC)  # the morning after END
MODEL = "churn"
FS = "customer_daily"
TITLES = ("Score distribution", "Feature drift", "Calibration", "Realized quality", "Serving mix")
# Test-only: records every resource the page loads and every load that failed, into the DOM once loaded.
PROBE = """<script>
window.__failed = [];
addEventListener("error", e => { __failed.push(String((e.target && (e.target.src || e.target.href)) || e.message)); },
                 true);
addEventListener("load", () => document.documentElement.setAttribute("data-probe", JSON.stringify(
  {failed: __failed, resources: performance.getEntriesByType("resource").map(r => r.name)})));
</script>"""


def _publish(rt: Runtime, offset: int, force: bool = False) -> str:
    run = score_partition(rt, MODEL, day(offset), device="cpu", force=force)
    publish_run(rt, MODEL, run.run_id, force=force)
    return run.run_id


def _shift_feature(rt: Runtime, offset: int, feature: str, by: float) -> None:
    directory = fstore.partition_dir(rt.home, FS, day(offset))
    for part in sorted(directory.glob("part-*.parquet")):
        table = pq.read_table(part)
        i = table.column_names.index(feature)
        table = table.set_column(i, feature, pa.compute.add(table.column(feature), pa.scalar(by, pa.float32())))
        pq.write_table(table, part)


def _write_log(rt: Runtime, offset: int, rows: list[tuple[str, str | None, str, float, int]]) -> None:
    """Answers ``(entity_id, run_id, source, score, hour)`` of UTC day ``day(offset)`` as a drained part file."""
    start = dt.datetime.combine(day(offset), dt.time(), dt.UTC).timestamp()
    records = [(f"req-{i}", MODEL, entity, "v" if run else None, run, source, score, 100,
                start + hour * 3600 + i * 1e-3, "champion")
               for i, (entity, run, source, score, hour) in enumerate(rows)]  # fmt: skip
    first = f"{int(start * 1000)}-0"
    path = rt.home / LOG_DIR / f"dt={day(offset)}" / part_name(first, first)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(records_table([(first, records)]), path)


def _served_log(rt: Runtime, offset: int, run_id: str) -> None:
    """A day of answers: precomputed from ``run_id`` at 09:00, fallback at 10:00, defaults at 11:00 (UTC)."""
    labels = fstore.read_labels(rt.home, FS, day(offset))
    ids = labels.column("entity_id").to_pylist()
    scores = read_run(rt.catalog.get_run(run_id).output_path or "", columns=["entity_id", "score"])
    by_id = dict(zip(scores.column("entity_id").to_pylist(), scores.column("score").to_pylist(), strict=True))
    rng = np.random.default_rng(3)
    rows: list[tuple[str, str | None, str, float, int]] = [(e, run_id, "precomputed", by_id[e], 9) for e in ids[:3000]]
    rows += [(e, None, "fallback", float(rng.random()), 10) for e in ids[3000:4000]]
    rows += [(e, None, "default", 0.05, 11) for e in ids[4000:4300]]
    _write_log(rt, offset, rows)


def _open(browser: str, page: str, tmp_path: Path, name: str = "report") -> tuple[str, dict[str, list[str]], list[str]]:
    """The page (with the test's probe) in Chromium: its DOM, what it loaded or failed to, its console."""
    path = tmp_path / f"{name}.html"
    path.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    dom, console = console_messages(browser, path.as_uri(), tmp_path / f"profile-{name}")
    match = re.search(r'data-probe="([^"]*)"', dom)
    assert match, "the probe never ran: the page did not finish loading"
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return dom, probe, console


class _Tags(HTMLParser):
    """The page's elements and attribute names, its attribute values and its text (script and style included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.values: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        self.values.extend(value or "" for _, value in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _self_contained(page: str) -> None:
    """Nothing to fetch: no script, link, image, frame or object element, no src or href attribute, no @import,
    and no url() to anything but the page's own pattern."""
    parsed = _Tags()
    parsed.feed(page)
    assert not parsed.tags & {"script", "link", "img", "iframe", "object", "embed", "image", "use", "foreignobject"}
    assert not parsed.attributes & {"src", "href", "xlink:href", "srcset", "action", "onerror", "onload"}
    text = "".join(parsed.text)  # the stylesheet included
    assert "@import" not in text
    urls = set(re.findall(r"url\(([^)]*)\)", " ".join([text, *parsed.values])))
    assert urls <= {"#hatch"}, urls
    assert {v for v in parsed.values if "://" in v} <= {"http://www.w3.org/2000/svg"}  # the SVG namespace only


@pytest.mark.slow
def test_report_page_of_real_runs_and_reports_in_a_browser(rt: Runtime, tmp_path: Path) -> None:
    """Three published days monitored: day -1 with f05 shifted (flagged) and served from a log, day 0 served too
    and without its labels yet. In Chromium with the network cut off the page draws all five plots, marks f05 on
    day -1 (and no other cell) as drifted, loads nothing and logs nothing to the console; the calibration is day
    -1's (the newest labelled), the quality plot says day 0 has no labels yet and shows day -1's served quality per
    source, the serving mix is per date."""
    browser = chromium_binary()  # skips (or fails in CI) before any work without one
    _publish(rt, -2)
    monitor_date(rt, MODEL, day(-2), clock=lambda: FIXED)
    _shift_feature(rt, -1, "f05", 150.0)
    yesterday = _publish(rt, -1, force=True)
    _served_log(rt, -1, yesterday)
    monitor_date(rt, MODEL, day(-1), clock=lambda: FIXED)
    current = _publish(rt, 0)
    _served_log(rt, 0, current)
    labels = Path(str(fstore.label_partition_dir(rt.home, FS, day(0))))
    labels.rename(labels.with_name("aside"))
    assert monitor_date(rt, MODEL, day(0), clock=lambda: FIXED).quality_status == "no labels yet"

    data = collect(rt, MODEL, 7, clock=lambda: FIXED)
    assert data.dates == [day(-2), day(-1), day(0)] and data.runs[day(0)].run_id == current
    page = render(data)
    _self_contained(page)
    dom, probe, console = _open(browser, page, tmp_path)
    assert probe == {"failed": [], "resources": []} and console == []

    charts = re.findall(r'<svg [^>]*class="chart" data-plot="([^"]+)"', dom)
    assert charts == list(PLOTS)
    assert re.findall(r'<section class="plot" [^>]*data-state="([a-z]+)"', dom) == ["drawn"] * 5
    for title in TITLES:
        assert f"<h2>{title}</h2>" in dom
    assert len(re.findall(r'<g class="series" data-date=', dom)) == 3  # a CDF per run
    cells = re.findall(r'<g class="cell" data-feature="([^"]+)" data-date="([^"]+)" data-state="([a-z]+)"', dom)
    assert len(cells) == 32 * 3
    assert [(f, d) for f, d, s in cells if s == "drifted"] == [("f05", day(-1).isoformat())]
    assert {s for f, d, s in cells if (f, d) != ("f05", day(-1).isoformat())} == {"measured"}
    assert f"published scores of {day(-1)}: reliability in 10 bins" in dom
    assert f"no labels yet for {day(0)}" in dom
    assert "share of answers per date" in dom and len(re.findall(r'<rect class="bar" data-part="default"', dom)) == 2
    served = re.findall(r'<g class="series" data-source="([a-z]+)"', dom)
    assert served == ["published", "precomputed", "fallback", "default"]  # day -1's answers joined its labels
    assert {"precomputed", "fallback", "default"} <= set(re.findall(r'data-part="([a-z]+)"', dom))
    assert "feature f05 drifted: psi" in dom  # the notes

    shot = tmp_path / "report.png"
    screenshot(browser, (tmp_path / "report.html").as_uri(), shot, tmp_path / "profile-shot",
               size=(900, 2450))  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_unavailable_drift_is_hatched_not_zero() -> None:
    """A date whose drift was unavailable (no baseline) and a feature not profiled on a date are ``unavailable``
    cells, drawn hatched with "n/a" — never a PSI of 0."""
    features = (MonitorFeatureRecord(feature="a", kind="numeric", psi=0.0),
                MonitorFeatureRecord(feature="b", kind="numeric", psi=0.4, drifted=True))  # fmt: skip
    measured = MonitorRecord(model="m", partition_date=day(-1), monitored_at=FIXED, drift_status="measured",
                             quality_status="no labels yet", serving_status="no log", features=features)  # fmt: skip
    unavailable = MonitorRecord(model="m", partition_date=day(0), monitored_at=FIXED, drift_status="unavailable",
                                quality_status="no labels yet", serving_status="no log")  # fmt: skip
    data = ReportData(model="m", dates=[day(-1), day(0)], runs={},
                      reports={day(-1): measured, day(0): unavailable}, generated_at=FIXED)  # fmt: skip
    page = render(data)
    cells = re.findall(r'data-feature="([^"]+)" data-date="([^"]+)" data-state="([a-z]+)"', page)
    assert cells == [("a", day(-1).isoformat(), "measured"), ("a", day(0).isoformat(), "unavailable"),
                     ("b", day(-1).isoformat(), "drifted"), ("b", day(0).isoformat(), "unavailable")]  # fmt: skip
    assert page.count('fill="url(#hatch)"') == 2 + 1  # two cells and the key
    assert ">0.00</text>" in page  # the measured zero is a zero


@pytest.mark.slow
def test_empty_states_say_what_to_run(rt: Runtime, tmp_path: Path) -> None:
    """No run at all: every plot says so. A scored run without monitoring: its CDF is drawn and every other plot
    says "no monitoring reports: run prescore monitor"; the page is fine in the browser either way."""
    browser = chromium_binary()
    page = render(collect(rt, MODEL, 7, clock=lambda: FIXED))
    assert page.count('data-state="empty"') == 5 and "no committed runs yet: run prescore score" in page
    assert "<svg" not in page

    score_partition(rt, MODEL, day(0), device="cpu")
    page = render(collect(rt, MODEL, 7, clock=lambda: FIXED))
    _self_contained(page)
    dom, probe, console = _open(browser, page, tmp_path)
    assert probe == {"failed": [], "resources": []} and console == []
    assert re.findall(r'<svg [^>]*data-plot="([^"]+)"', dom) == ["score-distribution"]
    assert dom.count(f"no monitoring reports: run prescore monitor --model {MODEL}") == 4
    for title in TITLES:
        assert f"<h2>{title}</h2>" in dom


def test_a_report_without_labels_or_log_says_no_labels_yet(rt: Runtime) -> None:
    """Monitored but unlabelled and unserved: calibration and quality say "no labels yet", the mix "no prediction
    log yet"; the drift heat-map and the CDF are drawn."""
    _publish(rt, 0)
    labels = Path(str(fstore.label_partition_dir(rt.home, FS, day(0))))
    labels.rename(labels.with_name("aside"))
    monitor_date(rt, MODEL, day(0), clock=lambda: FIXED)
    page = render(collect(rt, MODEL, 3, clock=lambda: FIXED))
    states = dict(re.findall(r'<section class="plot" id="plot-[^"]+" data-plot="([^"]+)" data-state="([a-z]+)"', page))
    assert states == {"score-distribution": "drawn", "feature-drift": "drawn", "calibration": "empty",
                      "quality": "empty", "serving-mix": "empty"}  # fmt: skip
    assert page.count('<p class="empty">no labels yet</p>') == 2 and "no prediction log yet" in page


HOSTILE = '<script>alert("x")</script>&\'"'


def _hostile_page() -> str:
    feature = MonitorFeatureRecord(feature=f'"><img src=x onerror=alert(1)>{HOSTILE}', kind="numeric", psi=0.3,
                                   drifted=True)  # fmt: skip
    report = MonitorRecord(model=HOSTILE, partition_date=day(0), monitored_at=FIXED, drift_status="measured",
                           quality_status="measured", serving_status="measured", features=(feature,),
                           notes=[f"feature {feature.feature} drifted"],
                           published_quality={"rows": 10, "auc": 0.8},
                           served_quality={HOSTILE: {"rows": 3, "auc": 0.6}},
                           serving={"all": {"answers": 3, "precomputed": 1.0}, "by_hour": {
                               "09": {"answers": 3, "precomputed": 1.0}}})  # fmt: skip
    return render(ReportData(model=HOSTILE, dates=[day(0)], runs={}, reports={day(0): report}, generated_at=FIXED))


def test_hostile_model_feature_and_note_text_is_escaped() -> None:
    """The models file puts no rule on model or feature names (any YAML key, any Parquet column), and notes quote
    them: markup in a name, a source or a note shows as text, and no element comes from it."""
    page = _hostile_page()
    assert "<script" not in page and "<img" not in page and "alert(1)>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;&quot;" in page
    assert f"share of answers per UTC hour of {day(0)} (3 answers)" in page  # one day served: per hour
    _self_contained(page)


@pytest.mark.slow
def test_hostile_names_run_and_load_nothing_in_a_browser(tmp_path: Path) -> None:
    browser = chromium_binary()
    dom, probe, console = _open(browser, _hostile_page(), tmp_path)
    assert probe == {"failed": [], "resources": []} and console == []
    assert "<img" not in dom and dom.count("<script>") == 1  # the test's probe only
    assert HOSTILE.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in dom  # shown as text


runner = CliRunner()


def test_report_cli(rt: Runtime, tmp_path: Path) -> None:
    _publish(rt, 0)
    monitor_date(rt, MODEL, day(0), clock=lambda: FIXED)
    env = {"PRESCORE_HOME": str(rt.home), "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
           "PRESCORE_REDIS_URL": rt.settings.redis_url or "", "PRESCORE_DASK_LOCAL": "threads"}  # fmt: skip
    out = tmp_path / "page.html"
    result = runner.invoke(app, ["report", "--model", MODEL, "--days", "5", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "(1 dates, 1 runs, 1 monitoring reports)" in result.output
    page = out.read_text()
    assert page.count('class="chart"') == 4 and "no prediction log yet" in page  # no log: the mix says so
    result = runner.invoke(app, ["report", "--model", "nope", "--out", str(out)], env=env)
    assert result.exit_code == 1 and "unknown model" in result.output
    result = runner.invoke(app, ["report", "--model", MODEL, "--out", str(tmp_path / "no" / "x.html")], env=env)
    assert result.exit_code == 1 and "does not exist" in result.output
    assert runner.invoke(app, ["report", "--model", MODEL, "--days", "0", "--out", str(out)], env=env).exit_code == 2
