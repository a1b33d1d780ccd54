"""The printable monthly report: one self-contained HTML page with inline SVG charts.

No scripts, fonts or stylesheets from anywhere else: the page must print and archive the
same in ten years, open on a county office PC without internet, and carry nothing a
regulator's browser would fetch. Every number on it comes from reports.monthly_data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["answer_histogram", "bar_chart", "coverage_map", "line_chart", "monthly_html"]

W, H = 640, 220
PAD_L, PAD_B, PAD_T, PAD_R = 44, 28, 12, 10


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "✔ met" if value else "✘ missed"
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


def _svg(body: str, title: str, width: int = W, height: int = H) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, *, colour: str = "#3b6ea5") -> str:
    """Vertical bars with the value above each; empty data draws an empty frame."""
    n = max(1, len(values))
    top = max([*values, 1.0])
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    bw = plot_w / n
    parts = [
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#444"/>',
        f'<text x="4" y="{PAD_T + 8}" font-size="10">{_fmt(top)}</text>',
    ]
    step = max(1, n // 24)
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * v / top
        x = PAD_L + i * bw
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{H - PAD_B - h:.1f}" width="{max(1.0, bw - 2):.1f}" '
            f'height="{h:.1f}" fill="{colour}"><title>{escape(label)}: {_fmt(v)}</title></rect>'
        )
        if i % step == 0:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{H - PAD_B + 12}" font-size="9" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return _svg("".join(parts), title)


def answer_histogram(answer_s: Sequence[float], limits: Sequence[float]) -> str:
    """Answer times in 15-second bins up to the largest target, the rest in one bin."""
    top = max([*limits, 180.0])
    width = 15.0
    bins = int(top // width)
    counts = [0] * (bins + 1)
    for v in answer_s:
        counts[min(bins, int(v // width))] += 1
    labels = [f"{int(i * width)}" for i in range(bins)] + [f">{int(top)}"]
    svg = bar_chart(labels, [float(c) for c in counts], "Answer-time distribution (s)")
    plot_w = W - PAD_L - PAD_R
    marks = "".join(
        f'<line x1="{PAD_L + plot_w * (lim / width) / (bins + 1):.1f}" y1="{PAD_T}" '
        f'x2="{PAD_L + plot_w * (lim / width) / (bins + 1):.1f}" y2="{H - PAD_B}" '
        f'stroke="#c0392b" stroke-dasharray="4 3"><title>target {lim:g} s</title></line>'
        for lim in limits
    )
    return svg.replace("</svg>", marks + "</svg>")


def line_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    title: str,
    *,
    y_min: float = 0.0,
    y_max: float = 100.0,
    guides: Sequence[float] = (),
) -> str:
    """Percent series over labelled points; a gap (None) breaks the line."""
    colours = ["#3b6ea5", "#27ae60", "#8e44ad", "#d35400"]
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B - 14
    n = max(1, len(labels) - 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        y = PAD_T + 14 + plot_h * (1 - (v - y_min) / (y_max - y_min))
        return PAD_L + plot_w * i / n, y

    parts = [
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#444"/>',
        f'<text x="4" y="{PAD_T + 22}" font-size="10">{y_max:g}%</text>',
        f'<text x="4" y="{H - PAD_B}" font-size="10">{y_min:g}%</text>',
    ]
    for g in guides:
        _, y = xy(0, g)
        parts.append(
            f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}" stroke="#c0392b" '
            f'stroke-dasharray="4 3"><title>target {g:g}%</title></line>'
        )
    for k, (name, values) in enumerate(series.items()):
        colour = colours[k % len(colours)]
        parts.append(
            f'<text x="{PAD_L + 4 + 150 * k}" y="{PAD_T + 8}" font-size="10" fill="{colour}">{escape(name)}</text>'
        )
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(values):
            if v is None:
                runs.append([])
                continue
            runs[-1].append(xy(i, max(y_min, min(y_max, v))))
        for run in runs:
            if len(run) == 1:
                parts.append(f'<circle cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="2" fill="{colour}"/>')
            elif run:
                pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    step = max(1, len(labels) // 10)
    for i, label in enumerate(labels):
        if i % step == 0:
            x, _ = xy(i, y_min)
            parts.append(
                f'<text x="{x:.1f}" y="{H - PAD_B + 12}" font-size="9" text-anchor="middle">{escape(label[-5:])}</text>'
            )
    return _svg("".join(parts), title)


def coverage_map(homes: Sequence[Mapping[str, Any]], stations: Sequence[Mapping[str, Any]]) -> str:
    """Homes (green inside the circle, red outside) and stations (squares, dark when
    staffed) on an equirectangular projection: a county is small enough for it."""
    size = 420
    pts = [(h["lat"], h["lon"]) for h in homes] + [(s["lat"], s["lon"]) for s in stations]
    if not pts:
        return _svg('<text x="10" y="20">no homes</text>', "Coverage map", size, size)
    lats = [p[0] for p in pts]
    lons = [p[1] for p in pts]
    span = max(max(lats) - min(lats), max(lons) - min(lons), 1e-3)
    pad = 12

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return (
            pad + (size - 2 * pad) * (lon - min(lons)) / span,
            size - pad - (size - 2 * pad) * (lat - min(lats)) / span,
        )

    parts: list[str] = ['<rect width="100%" height="100%" fill="#fafafa"/>']
    for s in stations:
        x, y = xy(s["lat"], s["lon"])
        fill = "#2c3e50" if s["on_duty"] > 0 else "#bbb"
        parts.append(
            f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="{fill}">'
            f"<title>{escape(str(s['name']))}: {s['on_duty']} on duty</title></rect>"
        )
    for h in homes:
        x, y = xy(h["lat"], h["lon"])
        fill = "#27ae60" if h["covered"] else "#c0392b"
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{fill}"><title>{escape(str(h["home_id"]))}: '
            f"{_fmt(h['minutes'])} min</title></circle>"
        )
    return _svg("".join(parts), "Coverage map", size, size)


def _table(rows: Sequence[Mapping[str, Any]], cols: Sequence[tuple[str, str]]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{escape(label)}</th>" for _, label in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_fmt(r.get(k)))}</td>" for k, _ in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:24px;color:#222;font-size:12px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;border-bottom:1px solid #999;margin-top:22px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}.kpi{display:flex;gap:12px;flex-wrap:wrap}
.kpi div{border:1px solid #bbb;padding:6px 10px;min-width:120px}.kpi b{display:block;font-size:18px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.note{color:#555}
@media print{body{margin:10mm}h2{break-after:avoid}svg,table{break-inside:avoid}}
"""


def monthly_html(data: Mapping[str, Any]) -> str:
    """The monthly report page from reports.monthly_data."""
    s = data["summary"]
    targets = data["targets"]
    answer_cols = [
        (f"answer_within_{t['within_s']:g}s", f"answered ≤ {t['within_s']:g} s") for t in targets["answer"]
    ]
    kpis = [
        ("calls", "Calls", ""),
        ("answer_median_s", "Median answer", " s"),
        ("answer_p90_s", "p90 answer", " s"),
    ]
    kpis += [("arrival_median_s", "Median arrival", " s"), ("escalated_to_county", "Escalated to county", "")]
    kpi_html = "".join(
        f"<div>{escape(label)}<b>{escape(_fmt(s[k], unit))}</b></div>" for k, label, unit in kpis
    )
    comp_rows = [
        {
            "target": label,
            "met": s[f"{col}_met"],
            "eligible": s[f"{col}_eligible"],
            "pct": s[f"{col}_pct"],
            "target_pct": s[f"{col}_target_pct"],
            "result": s[f"{col}_target_met"],
        }
        for col, label in answer_cols
    ]
    comp_rows.append(
        {
            "target": f"on scene ≤ {targets['arrival']['urban_min']:g} min urban / {targets['arrival']['rural_min']:g} rural",
            "met": s["arrival_within_limit_met"],
            "eligible": s["arrival_within_limit_eligible"],
            "pct": s["arrival_within_limit_pct"],
            "target_pct": s["arrival_within_limit_target_pct"],
            "result": s["arrival_within_limit_target_met"],
        }
    )
    days = data["by_day"]
    series: dict[str, list[float | None]] = {
        label: [d[f"{col}_pct"] for d in days] for col, label in answer_cols
    }
    series["on scene in limit"] = [d["arrival_within_limit_pct"] for d in days]
    charts = [
        answer_histogram(data["answer_times"], [t["within_s"] for t in targets["answer"]]),
        line_chart(
            [d["key"] for d in days],
            series,
            "Compliance by day (%)",
            y_min=min([80.0, *(v for vals in series.values() for v in vals if v is not None)]),
            guides=[100 * t["min_share"] for t in targets["answer"]],
        ),
        bar_chart(
            [r["key"] for r in data["by_type"]], [float(r["calls"]) for r in data["by_type"]], "Calls by type"
        ),
    ]
    hours = {r["key"]: r["calls"] for r in data["by_hour"]}
    charts.append(
        bar_chart(
            [f"{h:02d}" for h in range(24)],
            [float(hours.get(f"{h:02d}", 0)) for h in range(24)],
            "Calls by hour",
        )
    )
    cov = data["coverage"]
    dev = data["devices"]
    stat_cols = [
        ("label", "station"),
        ("calls", "calls"),
        ("answer_median_s", "answer median s"),
        ("answer_p90_s", "p90"),
        ("answer_p95_s", "p95"),
        ("answer_p99_s", "p99"),
        *((f"{c}_pct", f"{lab} %") for c, lab in answer_cols),
        ("arrival_median_s", "arrival median s"),
        ("arrival_within_limit_pct", "on scene in limit %"),
        ("escalated", "escalated"),
    ]
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>CareCall monthly report {escape(data["month"])} – {escape(data["station_name"])}</title>
<style>{_CSS}</style></head><body>
<h1>CareCall monthly oversight report · 月度监管报告</h1>
<p>{escape(data["station_name"])} · {escape(data["period"]["from"])} – {escape(data["period"]["to"])} ·
generated {escape(data["generated_at"])}</p>
<p class="note">Every figure is recomputed from the hash-chained audit log. Times run from the first
stored event of a call; percentiles are nearest-rank; calls count in the month they started, by their
station's time zone.</p>
<div class="kpi">{kpi_html}</div>
<h2>Compliance against targets</h2>
{_table(comp_rows, [("target", "target"), ("met", "met"), ("eligible", "eligible"), ("pct", "%"), ("target_pct", "target %"), ("result", "result")])}
<h2>Charts</h2><div class="charts">{"".join(charts)}</div>
<h2>By station</h2>{_table(data["by_station"], stat_cols)}
<h2>Review list ({len(data["review"])})</h2>
{_table(data["review"], [("call_id", "call"), ("reasons", "reasons"), ("started_local", "started"), ("station_id", "station"), ("type", "type"), ("priority", "priority"), ("answer_s", "answer s"), ("arrival_s", "arrival s"), ("outcome", "outcome")])}
<h2>Coverage now (homes outside the service circle)</h2>
<div class="charts">{coverage_map(cov["homes"], cov["stations"])}
{_table(cov["by_street"], [("street_name", "street"), ("homes", "homes"), ("covered", "covered"), ("outside", "outside"), ("covered_pct", "covered %")])}</div>
<h2>Devices</h2>
{_table([dev], [("devices", "devices"), ("offline_now", "offline now"), ("not_tested", "not tested in time"), ("low_battery", "low battery"), ("rejected_messages", "rejected messages")])}
</body></html>
"""
