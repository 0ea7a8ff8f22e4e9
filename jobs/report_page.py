"""``prescore report``: one self-contained HTML page of a model's recent runs and monitoring reports.

``collect(rt, model, days)`` reads what the catalog already holds — no Parquet, no Redis: the champion run of each
date (``jobs.compare.champion_run``) and the stored ``monitor_reports`` (``jobs.monitor``), over the ``days`` newest
partition dates that have either. ``render(data)`` turns that into HTML: plain inline SVG drawn here, an inline
stylesheet, no script, no font, image or anything else fetched — the file opens the same on a closed network.
Every string from the catalog (model, feature and source names, notes) is escaped.

Five plots, each saying plainly when it has nothing to show yet:

- **score distribution**: the CDF of each date's run, from its report's quantile summary (``jobs.scoring``);
- **feature drift**: features × dates, the PSI against the production baseline; a flagged feature is outlined and
  marked ``!``; "unavailable" (no baseline, drift not measured, feature not profiled) is hatched grey, never a zero;
- **calibration**: the reliability bins of the newest labelled report (published scores, probability models);
- **realized quality**: AUC (binary) or RMSE (otherwise) per date, of the published scores and of what was served
  from each answer source;
- **serving mix**: the shares of precomputed, stale, fallback and default answers per date, or per UTC hour of the
  newest date when only one date has a prediction log.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jobs.compare import champion_run
from jobs.runtime import Runtime
from warehouse.catalog import COMMITTED, MonitorRecord, RunRecord, utcnow

PLOTS = ("score-distribution", "feature-drift", "calibration", "quality", "serving-mix")
MIX = (("precomputed", "#2f9e44"), ("stale", "#f08c00"), ("fallback", "#1c7ed6"), ("default", "#c92a2a"))
SOURCE_COLOURS = {"published": "#212529", "precomputed": "#2f9e44", "fallback": "#1c7ed6", "default": "#c92a2a"}
W, H = 760, 300  # a plot's size in SVG units
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 16, 56  # margins: axis labels left and below, the legend right
PSI_FULL = 0.5  # a PSI at or above this gets the heat-map's darkest colour (flagging is at jobs.profile's 0.25)


@dataclass(frozen=True)
class ReportData:
    """What one page shows: ``dates`` oldest first, each with its champion run and/or its monitoring report."""

    model: str
    dates: list[dt.date]
    runs: dict[dt.date, RunRecord]
    reports: dict[dt.date, MonitorRecord]
    generated_at: dt.datetime


def collect(rt: Runtime, model: str, days: int, clock: Callable[[], dt.datetime] = utcnow) -> ReportData:
    """The ``days`` newest partition dates of ``model`` with a committed run or a monitoring report."""
    rt.config.model(model)  # unknown model → UnknownModelError
    reports = {r.partition_date: r for r in rt.catalog.monitor_reports(model)}
    run_dates = {r.partition_date for r in rt.catalog.runs(model, status=COMMITTED, limit=None)}
    dates = sorted(run_dates | set(reports))[-days:] if days > 0 else []
    runs = {d: run for d in dates if d in run_dates and (run := champion_run(rt, model, d)) is not None}
    return ReportData(model=model, dates=dates, runs=runs, reports={d: reports[d] for d in dates if d in reports},
                      generated_at=clock())  # fmt: skip


# ---- small SVG helpers ---------------------------------------------------------------------------------------
def esc(value: object) -> str:
    """Text or an attribute value, escaped for HTML (quotes included)."""
    return html.escape(str(value), quote=True)


def _n(x: float) -> str:
    return f"{x:.1f}"


class Frame:
    """A plot area with linear x and y scales: data coordinates → SVG coordinates."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float) -> None:
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1.0)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1.0)

    def x(self, v: float) -> float:
        return LEFT + (v - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def y(self, v: float) -> float:
        return H - BOTTOM - (v - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)


def text(x: float, y: float, body: object, anchor: str = "middle", cls: str = "", rotate: float = 0) -> str:
    turn = f' transform="rotate({rotate} {_n(x)} {_n(y)})"' if rotate else ""
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{klass}{turn}>{esc(body)}</text>'


def polyline(points: Sequence[tuple[float, float]], colour: str, dash: bool = False, width: float = 1.6) -> str:
    dashes = ' stroke-dasharray="5 3"' if dash else ""
    coords = " ".join(f"{_n(x)},{_n(y)}" for x, y in points)
    return f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="{width}"{dashes}/>'


def y_axis(frame: Frame, ticks: Sequence[float], label: str, fmt: str = "{:.2f}") -> str:
    parts = [f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" class="axis"/>']
    for t in ticks:
        y = frame.y(t)
        parts.append(f'<line x1="{LEFT}" y1="{_n(y)}" x2="{W - RIGHT}" y2="{_n(y)}" class="grid"/>')
        parts.append(text(LEFT - 6, y + 4, fmt.format(t), anchor="end"))
    parts.append(text(14, (TOP + H - BOTTOM) / 2, label, rotate=-90))
    return "".join(parts)


def x_labels(frame: Frame, labels: Sequence[str], positions: Sequence[float]) -> str:
    parts = [f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" class="axis"/>']
    step = max(1, len(labels) // 14)  # at most ~14 labels
    for i, (label, pos) in enumerate(zip(labels, positions, strict=True)):
        if i % step == 0 or i == len(labels) - 1:
            x = frame.x(pos)
            parts.append(text(x, H - BOTTOM + 14, label, anchor="end", rotate=-35))
    return "".join(parts)


def legend(entries: Sequence[tuple[str, str, bool]]) -> str:
    """``(label, colour, dashed)`` entries in the right margin."""
    parts = []
    for i, (label, colour, dash) in enumerate(entries[:16]):
        y = TOP + 8 + i * 16
        x = W - RIGHT + 12
        parts.append(polyline([(x, y), (x + 18, y)], colour, dash=dash, width=3))
        parts.append(text(x + 24, y + 4, label, anchor="start"))
    if len(entries) > 16:
        parts.append(text(W - RIGHT + 12, TOP + 8 + 16 * 16 + 4, f"… {len(entries) - 16} more", anchor="start"))
    return "".join(parts)


def svg(name: str, body: str, height: int = H, width: int = W) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-plot="{esc(name)}" role="img" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">{body}</svg>')  # fmt: skip


def section(name: str, title: str, subtitle: str, chart: str | None, empty: str) -> str:
    """One plot: its title and subtitle, then the chart or, without data, ``empty`` said plainly."""
    state = "drawn" if chart else "empty"
    inner = chart if chart else f'<p class="empty">{esc(empty)}</p>'
    return (f'<section class="plot" id="plot-{esc(name)}" data-plot="{esc(name)}" data-state="{state}">'
            f"<h2>{esc(title)}</h2><p class=\"sub\">{esc(subtitle)}</p>{inner}</section>")  # fmt: skip


def _shade(i: int, n: int) -> str:
    """Oldest (light) to newest (dark) blue."""
    t = 1.0 if n <= 1 else i / (n - 1)
    light, dark = (165, 216, 255), (16, 60, 140)
    r, g, b = (round(a + (c - a) * t) for a, c in zip(light, dark, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _no_reports(model: str) -> str:
    return f"no monitoring reports: run prescore monitor --model {model} --date YYYY-MM-DD"


# ---- the plots -----------------------------------------------------------------------------------------------
def score_distribution(data: ReportData) -> str:
    series = [(d, list(run.report.get("quantiles") or [])) for d, run in sorted(data.runs.items())]
    series = [(d, q) for d, q in series if q]
    title, sub = "Score distribution", "CDF of each date's champion run (from its quantile summary)"
    if not series:
        empty = (f"no committed runs yet: run prescore score --model {data.model}" if not data.runs
                 else "no quantile summaries: these runs were recorded before summaries existed")  # fmt: skip
        return section("score-distribution", title, sub, None, empty)
    lo = min(q[0] for _, q in series)
    hi = max(q[-1] for _, q in series)
    frame = Frame(lo, hi, 0.0, 1.0)
    body = [y_axis(frame, _ticks(0, 1), "share of entities ≤ score")]
    body.append(f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" class="axis"/>')
    for t in _ticks(lo, hi):
        body.append(text(frame.x(t), H - BOTTOM + 16, f"{t:.3g}"))
    body.append(text((LEFT + W - RIGHT) / 2, H - 12, "score"))
    entries = []
    for i, (d, q) in enumerate(series):
        colour = _shade(i, len(series))
        points = [(frame.x(v), frame.y(k / (len(q) - 1))) for k, v in enumerate(q)]
        body.append(f'<g class="series" data-date="{d}"><title>{esc(d)}</title>{polyline(points, colour)}</g>')
        entries.append((d.isoformat(), colour, False))
    body.append(legend(entries))
    return section("score-distribution", title, sub, svg("score-distribution", "".join(body)), "")


def _psi_colour(psi: float) -> str:
    t = max(0.0, min(1.0, psi / PSI_FULL))
    r, g, b = (round(255 + (c - 255) * t) for c in (201, 42, 42))
    return f"#{r:02x}{g:02x}{b:02x}"


def feature_drift(data: ReportData) -> str:
    title = "Feature drift"
    sub = ("PSI of each feature against the production baseline; outlined with ! = flagged as drifted; "
           "hatched grey = unavailable (not a zero)")  # fmt: skip
    if not data.reports:
        return section("feature-drift", title, sub, None, _no_reports(data.model))
    dates = sorted(data.reports)
    names = sorted({f.feature for r in data.reports.values() for f in r.features})
    if not names:
        statuses = ", ".join(sorted({r.drift_status for r in data.reports.values()}))
        return section("feature-drift", title, sub, None, f"drift unavailable on every date ({statuses}): the "
                       "production version has no baseline; retrain or register it again to get one")  # fmt: skip
    cw, ch, left, top = max(28, min(60, (W - 200) // len(dates))), 16, 150, 70
    width, height = max(W, left + cw * len(dates) + 20), top + ch * len(names) + 40
    body = ['<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="6" height="6" fill="#e9ecef"/>'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#adb5bd" stroke-width="2"/></pattern></defs>']  # fmt: skip
    for j, d in enumerate(dates):
        body.append(text(left + j * cw + cw / 2, top - 8, d.isoformat(), anchor="start", rotate=-40))
    for i, name in enumerate(names):
        y = top + i * ch
        body.append(text(left - 6, y + ch - 4, name, anchor="end"))
        for j, d in enumerate(dates):
            report = data.reports[d]
            feature = next((f for f in report.features if f.feature == name), None)
            x = left + j * cw
            if feature is None or feature.psi is None:
                state, fill, label = "unavailable", "url(#hatch)", "n/a"
                tip = f"{name} on {d}: unavailable (drift {report.drift_status})"
            else:
                state = "drifted" if feature.drifted else "measured"
                fill, label = _psi_colour(feature.psi), ("!" if feature.drifted else f"{feature.psi:.2f}")
                tip = f"{name} on {d}: psi {feature.psi:.4f}" + (" — drifted" if feature.drifted else "")
                if feature.null_rate_change:
                    tip += f", null rate change {feature.null_rate_change:+.3f}"
            stroke = ' stroke="#000" stroke-width="2.5"' if state == "drifted" else ' stroke="#fff"'
            body.append(f'<g class="cell" data-feature="{esc(name)}" data-date="{d}" data-state="{state}">'
                        f"<title>{esc(tip)}</title>"
                        f'<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="{fill}"{stroke}/>'
                        f"{text(x + cw / 2, y + ch - 4, label, cls=f'cell-label {state}')}</g>")  # fmt: skip
    key_y = top + ch * len(names) + 22
    for k, (label, fill) in enumerate(
        (
            ("psi 0", _psi_colour(0)),
            ("0.25", _psi_colour(0.25)),
            (f"≥ {PSI_FULL}", _psi_colour(PSI_FULL)),
            ("unavailable", "url(#hatch)"),
        )
    ):
        x = left + k * 110
        body.append(f'<rect x="{x}" y="{key_y - 10}" width="14" height="12" fill="{fill}" stroke="#868e96"/>')
        body.append(text(x + 20, key_y, label, anchor="start"))  # fmt: skip
    return section("feature-drift", title, sub, svg("feature-drift", "".join(body), height, width), "")


def calibration(data: ReportData) -> str:
    title = "Calibration"
    labelled = [r for d, r in sorted(data.reports.items(), reverse=True) if r.published_quality]
    newest = next((r for r in labelled if (r.published_quality or {}).get("calibration", {}).get("bins")), None)
    if not data.reports:
        return section("calibration", title, "", None, _no_reports(data.model))
    if newest is None:
        empty = ("no labels yet" if not labelled else
                 f"calibration applies to probability models only (objective {labelled[0].objective})")  # fmt: skip
        return section("calibration", title, "reliability of the published scores", None, empty)
    quality = newest.published_quality or {}
    sub = (f"published scores of {newest.partition_date}: reliability in {len(quality['calibration']['bins'])} "
           f"bins, expected calibration error {quality.get('ece')}")  # fmt: skip
    frame = Frame(0.0, 1.0, 0.0, 1.0)
    body = [y_axis(frame, _ticks(0, 1), "observed positive rate")]
    body.append(f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" class="axis"/>')
    for t in _ticks(0, 1):
        body.append(text(frame.x(t), H - BOTTOM + 16, f"{t:.2f}"))
    body.append(text((LEFT + W - RIGHT) / 2, H - 12, "mean predicted probability"))
    body.append(polyline([(frame.x(0), frame.y(0)), (frame.x(1), frame.y(1))], "#adb5bd", dash=True))
    bins = [b for b in quality["calibration"]["bins"] if b.get("count")]
    total = sum(b["count"] for b in bins) or 1
    points = [(frame.x(b["predicted"]), frame.y(b["observed"])) for b in bins]
    body.append(polyline(points, SOURCE_COLOURS["published"]))
    for b, (x, y) in zip(bins, points, strict=True):
        r = 3 + 9 * (b["count"] / total) ** 0.5
        tip = (
            f"[{b['low']:.1f}, {b['high']:.1f}): {b['count']} rows, predicted {b['predicted']}, "
            f"observed {b['observed']}"
        )
        body.append(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{_n(r)}" fill="#1c7ed6" fill-opacity="0.6">'
                    f"<title>{esc(tip)}</title></circle>")  # fmt: skip
    body.append(legend([("published", SOURCE_COLOURS["published"], False), ("perfect", "#adb5bd", True)]))
    return section("calibration", title, sub, svg("calibration", "".join(body)), "")


def _metric(reports: list[MonitorRecord]) -> str:
    for r in reports:
        if "auc" in (r.published_quality or {}):
            return "auc"
    return "rmse"


def quality(data: ReportData) -> str:
    title = "Realized quality"
    if not data.reports:
        return section("quality", title, "", None, _no_reports(data.model))
    labelled = [r for _, r in sorted(data.reports.items()) if r.published_quality]
    if not labelled:
        return section("quality", title, "on labels, per date", None, "no labels yet")
    metric = _metric(labelled)
    dates = sorted(data.reports)
    lines: dict[str, list[tuple[int, float]]] = {}
    for i, d in enumerate(dates):
        r = data.reports[d]
        values = {"published": (r.published_quality or {}).get(metric)}
        values.update({s: q.get(metric) for s, q in (r.served_quality or {}).items()})
        for source, v in values.items():
            if isinstance(v, int | float):
                lines.setdefault(source, []).append((i, float(v)))
    every = [v for pts in lines.values() for _, v in pts]
    lo, hi = (0.5, 1.0) if metric == "auc" else (0.0, max(every) * 1.1)
    lo = min(lo, min(every))
    frame = Frame(-0.5, len(dates) - 0.5, lo, hi)
    body = [y_axis(frame, _ticks(lo, hi), metric.upper(), "{:.3f}"),
            x_labels(frame, [d.isoformat() for d in dates], list(range(len(dates))))]  # fmt: skip
    entries = []
    for source, pts in sorted(lines.items(), key=lambda kv: kv[0] != "published"):
        colour = SOURCE_COLOURS.get(source, "#868e96")
        dashed = source != "published"
        xy = [(frame.x(i), frame.y(v)) for i, v in pts]
        dots = "".join(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="3" fill="{colour}"><title>{esc(source)} '
                       f"{esc(dates[i])}: {metric} {v:.4f}</title></circle>"
                       for (i, v), (x, y) in zip(pts, xy, strict=True))  # fmt: skip
        body.append(f'<g class="series" data-source="{esc(source)}">{polyline(xy, colour, dash=dashed)}{dots}</g>')
        entries.append((source if source == "published" else f"served: {source}", colour, dashed))
    body.append(legend(entries))
    waiting = [d.isoformat() for d in dates if not data.reports[d].published_quality]
    sub = f"{metric.upper()} on the date's labels: published scores and what was served, per answer source"
    if waiting:
        sub += f"; no labels yet for {', '.join(waiting)}"
    return section("quality", title, sub, svg("quality", "".join(body)), "")


def serving_mix(data: ReportData) -> str:
    title = "Serving mix"
    if not data.reports:
        return section("serving-mix", title, "", None, _no_reports(data.model))
    served = [(d, r.serving) for d, r in sorted(data.reports.items()) if r.serving]
    if not served:
        return section("serving-mix", title, "", None, "no prediction log yet (the drain writes it; serving: no log)")
    if len(served) == 1:
        day, mix = served[0]
        bars = [(f"{h}:00", s) for h, s in sorted((mix.get("by_hour") or {}).items())]
        sub = f"share of answers per UTC hour of {day} ({mix['all'].get('answers')} answers)"
    else:
        bars = [(d.isoformat(), mix["all"]) for d, mix in served]
        sub = "share of answers per date"
    frame = Frame(-0.5, len(bars) - 0.5, 0.0, 1.0)
    body = [y_axis(frame, _ticks(0, 1), "share of answers"),
            x_labels(frame, [b for b, _ in bars], list(range(len(bars))))]  # fmt: skip
    half = min(36.0, (frame.x(1) - frame.x(0)) * 0.35)
    for i, (label, shares) in enumerate(bars):
        below = 0.0
        for part, colour in MIX:
            share = float(shares.get(part) or 0.0)
            if share <= 0:
                continue
            y_top, y_bottom = frame.y(below + share), frame.y(below)
            body.append(f'<rect class="bar" data-part="{part}" x="{_n(frame.x(i) - half)}" y="{_n(y_top)}" '
                        f'width="{_n(2 * half)}" height="{_n(y_bottom - y_top)}" fill="{colour}">'
                        f"<title>{esc(label)}: {part} {share:.1%} of {shares.get('answers')}</title>"
                        "</rect>")  # fmt: skip
            below += share
    body.append(legend([(part, colour, False) for part, colour in MIX]))
    return section("serving-mix", title, sub, svg("serving-mix", "".join(body)), "")


# ---- the page ------------------------------------------------------------------------------------------------
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 820px; color: #212529; }
h1 { font-size: 22px; margin-bottom: 2px; } h2 { font-size: 17px; margin: 0 0 2px; }
.meta, .sub { color: #495057; margin: 0 0 8px; } .sub { font-size: 12px; }
.plot { border: 1px solid #dee2e6; border-radius: 6px; padding: 12px 14px; margin: 16px 0; overflow-x: auto; }
.empty { background: #f8f9fa; border: 1px dashed #adb5bd; padding: 18px; text-align: center; color: #495057; }
svg text { font: 10px system-ui, sans-serif; fill: #343a40; } svg .cell-label { font-size: 8px; }
svg .cell-label.drifted { fill: #fff; font-weight: bold; font-size: 11px; }
svg .axis { stroke: #495057; } svg .grid { stroke: #e9ecef; }
details { margin: 4px 0; } li { font-size: 12px; }
"""


def _notes(data: ReportData) -> str:
    items = []
    for d, report in sorted(data.reports.items(), reverse=True):
        if report.notes:
            notes = "".join(f"<li>{esc(n)}</li>" for n in report.notes)
            count = f"{len(report.notes)} note{'s' if len(report.notes) > 1 else ''}"
            items.append(f"<details><summary>{esc(d)}: {count}</summary><ul>{notes}</ul></details>")
    return f'<section class="notes"><h2>Notes</h2>{"".join(items)}</section>' if items else ""


def render(data: ReportData) -> str:
    """The whole page (module docstring)."""
    span = f"{data.dates[0]} to {data.dates[-1]}" if data.dates else "no dates yet"
    meta = (f"{len(data.dates)} dates ({span}): {len(data.runs)} committed runs, {len(data.reports)} monitoring "
            f"reports · generated {data.generated_at:%Y-%m-%d %H:%M} UTC")  # fmt: skip
    plots = "".join(fn(data) for fn in (score_distribution, feature_drift, calibration, quality, serving_mix))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(data.model)} — prescore report</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(data.model)}</h1><p class=\"meta\">{esc(meta)}</p>{plots}{_notes(data)}"
            "</body></html>\n")  # fmt: skip
