"""The printable monthly report: one self-contained HTML page with inline SVG charts.

No scripts, fonts or stylesheets from anywhere else: the page must print and archive the
same in ten years, open on a county office PC without internet, and carry nothing a
regulator's browser would fetch. Every number on it comes from reports.monthly_data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from dispatcher.oversight.figures import REPORT_TZ, target_column
from dispatcher.oversight.text import (
    Lang,
    code_label,
    column_label,
    format_duration,
    format_local,
    format_value,
    phrase,
)

__all__ = [
    "answer_histogram",
    "bar_chart",
    "coverage_map",
    "label_every",
    "line_chart",
    "monthly_html",
    "services_html",
    "text_width",
]

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


def text_width(label: str, font_px: float = 9.0) -> float:
    """An estimate of a label's drawn width: CJK characters are square, Latin ones
    about 0.6 of the font size (no font metrics in a page that fetches no fonts)."""
    return sum(font_px if ord(ch) > 0x2E7F else 0.6 * font_px for ch in label)


def label_every(labels: Sequence[str], slot_w: float, font_px: float = 9.0, gap: float = 4.0) -> int:
    """Draw every k-th label, k the smallest so the widest label fits in k slots with a
    gap: labels under bars never overlap, however many bars or however long the words."""
    if slot_w <= 0:
        raise ValueError(f"slot width must be positive, got {slot_w}")
    widest = max((text_width(lab, font_px) for lab in labels), default=0.0)
    return max(1, math.ceil((widest + gap) / slot_w))


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
    step = label_every(labels, bw)
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


def answer_histogram(answer_s: Sequence[float], limits: Sequence[float], lang: Lang = "en") -> str:
    """Answer times in 15-second bins up to the largest target, the rest in one bin."""
    top = max([*limits, 180.0])
    width = 15.0
    bins = int(top // width)
    counts = [0] * (bins + 1)
    for v in answer_s:
        counts[min(bins, int(v // width))] += 1
    labels = [f"{int(i * width)}" for i in range(bins)] + [f">{int(top)}"]
    svg = bar_chart(labels, [float(c) for c in counts], phrase("chart_answer", lang))
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


def coverage_map(
    homes: Sequence[Mapping[str, Any]], stations: Sequence[Mapping[str, Any]], lang: Lang = "en"
) -> str:
    """Homes (green inside the circle, red outside) and stations (squares, dark when
    staffed) on an equirectangular projection: a county is small enough for it."""
    size = 420
    pts = [(h["lat"], h["lon"]) for h in homes] + [(s["lat"], s["lon"]) for s in stations]
    if not pts:
        return _svg(
            f'<text x="10" y="20">{escape(phrase("no_homes", lang))}</text>',
            phrase("coverage_map", lang),
            size,
            size,
        )
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
            f"<title>{escape(str(s['name']))}: {s['on_duty']} {escape(phrase('on_duty', lang))}</title></rect>"
        )
    for h in homes:
        x, y = xy(h["lat"], h["lon"])
        fill = "#27ae60" if h["covered"] else "#c0392b"
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{fill}"><title>{escape(str(h["home_id"]))}: '
            f"{_fmt(h['minutes'])} min</title></circle>"
        )
    return _svg("".join(parts), phrase("coverage_map", lang), size, size)


Col = tuple[
    str, str, str
]  # (row key, header, how to write it: n number, d duration, t time, or a code family)


def _cell(value: Any, how: str, lang: Lang) -> str:
    if value is None:
        return "–"
    if how == "d" and isinstance(value, int | float) and not isinstance(value, bool):
        return format_duration(float(value), lang)
    if how == "t":
        return format_local(str(value), REPORT_TZ, lang)
    if how == "pct" and isinstance(value, int | float):
        return f"{value:g}%"
    if how == "ok" and isinstance(value, bool):
        return phrase("met" if value else "missed", lang)
    if how == "reasons":
        return ", ".join(code_label("reason", r, lang) for r in str(value).split())
    if how not in ("n", "") and isinstance(value, str):
        return code_label(how, value, lang)
    return format_value(value, lang)


def _table(rows: Sequence[Mapping[str, Any]], cols: Sequence[Col], lang: Lang) -> str:
    if not rows:
        return f"<p>{escape(phrase('none', lang))}</p>"
    head = "".join(f"<th>{escape(label)}</th>" for _, label, _ in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(r.get(k), how, lang))}</td>" for k, _, how in cols) + "</tr>"
        for r in rows
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


def _c(key: str, lang: Lang, how: str = "n") -> Col:
    label = column_label(key, lang)
    if how == "d":  # the cells are words ("1 min 12 s"), so the header drops its unit
        label = label.removesuffix(" (s)").removesuffix("（秒）")
    return (key, label, how)


def _compliance(data: Mapping[str, Any], lang: Lang) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    s, targets = data["summary"], data["targets"]
    answer_cols = [
        (
            target_column(t["within_s"]),
            phrase("answered_within", lang, t=format_duration(t["within_s"], lang)),
        )
        for t in targets["answer"]
    ]
    arr, tr = targets["arrival"], targets["trouble"]
    rows = [
        {
            "target": label,
            **{k: s[f"{col}_{k}"] for k in ("met", "eligible", "pct", "target_pct", "target_met")},
        }
        for col, label in answer_cols
    ]
    on_scene = phrase(
        "on_scene_within",
        lang,
        urban=format_duration(60 * arr["urban_min"], lang),
        rural=format_duration(60 * arr["rural_min"], lang),
    )
    trouble = phrase(
        "trouble_within", lang, h=f"{tr['acknowledge_within_h']:g}", start=tr["start"][:5], end=tr["end"][:5]
    )
    for label, col in ((on_scene, "arrival_within_limit"), (trouble, "trouble_in_time")):
        rows.append(
            {
                "target": label,
                **{k: s[f"{col}_{k}"] for k in ("met", "eligible", "pct", "target_pct", "target_met")},
            }
        )
    return rows, answer_cols


def _charts(data: Mapping[str, Any], answer_cols: Sequence[tuple[str, str]], lang: Lang) -> list[str]:
    targets = data["targets"]
    days = data["by_day"]
    series: dict[str, list[float | None]] = {
        label: [d[f"{col}_pct"] for d in days] for col, label in answer_cols
    }
    series[column_label("arrival_within_limit_pct", lang)] = [d["arrival_within_limit_pct"] for d in days]
    hours = {r["key"]: r["calls"] for r in data["by_hour"]}
    return [
        answer_histogram(data["answer_times"], [t["within_s"] for t in targets["answer"]], lang),
        line_chart(
            [d["key"] for d in days],
            series,
            phrase("chart_compliance", lang),
            y_min=min([80.0, *(v for vals in series.values() for v in vals if v is not None)]),
            guides=[100 * t["min_share"] for t in targets["answer"]],
        ),
        bar_chart(
            [code_label("type", r["key"], lang) for r in data["by_type"]],
            [float(r["calls"]) for r in data["by_type"]],
            phrase("chart_type", lang),
        ),
        bar_chart(
            [f"{h:02d}" for h in range(24)],
            [float(hours.get(f"{h:02d}", 0)) for h in range(24)],
            phrase("chart_hour", lang),
        ),
    ]


def _order_cols(lang: Lang) -> list[Col]:
    return [
        ("label", column_label("label", lang), "n"),
        _c("orders", lang),
        _c("done", lang),
        _c("cancelled", lang),
        _c("open", lang),
        _c("accept_median_s", lang, "d"),
        _c("accept_within_level_pct", lang, "pct"),
        _c("completion_median_s", lang, "d"),
        _c("completion_within_level_pct", lang, "pct"),
        _c("satisfaction_mean", lang),
        *(_c(f"satisfaction_{n}", lang) for n in range(1, 6)),
        _c("not_done", lang),
    ]


def services_html(orders: Mapping[str, Any], visits: Mapping[str, Any], lang: Lang) -> str:
    """The service-orders and visit-compliance sections (reports.monthly_data's
    ``orders`` and ``visits``)."""
    names = orders.get("kind_names", {})
    by_kind = [{**r, "label": names.get(r["key"], {}).get(lang, r["key"])} for r in orders["by_kind"]]
    total = {**orders["summary"], "label": phrase("total", lang)}
    unassigned = phrase("unassigned", lang)
    by_provider = [
        {**r, "label": unassigned if r["key"] == "(none)" else r["label"]} for r in orders["by_provider"]
    ]
    # no chart of nothing: a month without orders says "none" in the tables
    kinds, counts = [r["label"] for r in by_kind], [float(r["orders"]) for r in by_kind]
    chart = bar_chart(kinds, counts, phrase("chart_orders_kind", lang)) if by_kind else ""
    cols = _order_cols(lang)
    visit_cols: list[Col] = [
        _c("station_name", lang),
        _c("due", lang),
        _c("done_on_time", lang),
        _c("late", lang),
        _c("missed", lang),
        _c("open", lang),
        _c("cancelled", lang),
        _c("visits_escalated", lang),
        _c("on_time_pct", lang, "pct"),
        _c("not_visited", lang),
    ]
    who_cols = [_c("station_name", lang), _c("resident_name", lang), _c("resident_id", lang)]
    reason_cols = [_c("reason", lang), _c("orders", lang)]
    return f"""<h2>{escape(phrase("orders", lang))}</h2>
<p class="note">{escape(phrase("orders_note", lang))}</p>
{_table([total], cols, lang)}
<div class="charts">{chart}</div>
<h3>{escape(phrase("orders_by_kind", lang))}</h3>{_table(by_kind, cols, lang)}
<h3>{escape(phrase("orders_by_provider", lang))}</h3>{_table(by_provider, cols, lang)}
<h3>{escape(phrase("orders_by_station", lang))}</h3>{_table(orders["by_station"], cols, lang)}
<h3>{escape(phrase("cancellations", lang))}</h3>{_table(orders["cancellations"], reason_cols, lang)}
<h2>{escape(phrase("visits", lang))}</h2>
<p class="note">{escape(phrase("visits_note", lang))}</p>
{_table(visits["stations"], visit_cols, lang)}
<h3>{escape(phrase("not_visited", lang))} ({len(visits["not_visited"])})</h3>
{_table(visits["not_visited"], who_cols, lang)}
"""


def monthly_html(data: Mapping[str, Any], lang: Lang | None = None) -> str:
    """The monthly report page from reports.monthly_data, in ``lang`` (default: the
    language the data was built in): headings, codes, local times and durations as
    words, stations by name."""
    lang = lang or data.get("lang", "zh-CN")
    s = data["summary"]
    comp_rows, answer_cols = _compliance(data, lang)
    kpis = [
        _c("calls", lang),
        _c("graded_calls", lang),
        _c("answer_median_s", lang, "d"),
        _c("answer_p90_s", lang, "d"),
        _c("arrival_median_s", lang, "d"),
        _c("escalated_to_county", lang),
        _c("trouble_calls", lang),
    ]
    kpi_html = "".join(
        f"<div>{escape(label)}<b>{escape(_cell(s[k], how, lang))}</b></div>" for k, label, how in kpis
    )
    charts = _charts(data, answer_cols, lang)
    cov = data["coverage"]
    dev = data["devices"]
    stat_cols: list[Col] = [
        ("label", column_label("station_name", lang), "n"),
        _c("calls", lang),
        _c("graded_calls", lang),
        _c("answer_median_s", lang, "d"),
        _c("answer_p90_s", lang, "d"),
        _c("answer_p95_s", lang, "d"),
        _c("answer_p99_s", lang, "d"),
        *((f"{c}_pct", label, "pct") for c, label in answer_cols),
        _c("arrival_median_s", lang, "d"),
        _c("arrival_within_limit_pct", lang, "pct"),
        _c("escalated", lang),
        _c("trouble_calls", lang),
    ]
    trouble_cols: list[Col] = [
        ("key", column_label("type", lang), "type"),
        _c("trouble_calls", lang),
        _c("trouble_answer_median_s", lang, "d"),
        _c("trouble_answer_max_s", lang, "d"),
        _c("trouble_in_time_pct", lang, "pct"),
        _c("trouble_unanswered", lang),
    ]
    comp_cols: list[Col] = [
        ("target", phrase("target", lang), ""),
        ("met", phrase("met_n", lang), "n"),
        ("eligible", phrase("counted", lang), "n"),
        ("pct", "%", "pct"),
        ("target_pct", phrase("target", lang) + " %", "pct"),
        ("target_met", phrase("result", lang), "ok"),
    ]
    review_cols: list[Col] = [
        _c("call_id", lang),
        _c("reasons", lang, "reasons"),
        _c("started_local", lang, "t"),
        _c("station_name", lang),
        _c("type", lang, "type"),
        _c("priority", lang),
        _c("answer_s", lang, "d"),
        _c("arrival_s", lang, "d"),
        _c("outcome", lang, "outcome"),
    ]
    period = data["period"]
    title = phrase("title", lang)
    return f"""<!DOCTYPE html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{escape(title)} {escape(data["month"])} – {escape(data["station_name"])}</title>
<style>{_CSS}</style></head><body>
<h1>{escape(title)}</h1>
<p>{escape(data["station_name"])} · {escape(period["from"])} – {escape(period["to"])} ·
{escape(phrase("generated", lang))} {escape(format_local(data["generated_at"], REPORT_TZ, lang))}</p>
<p class="note">{escape(phrase("note", lang))}</p>
<div class="kpi">{kpi_html}</div>
<h2>{escape(phrase("compliance", lang))}</h2>
{_table(comp_rows, comp_cols, lang)}
<h2>{escape(phrase("charts", lang))}</h2><div class="charts">{"".join(charts)}</div>
<h2>{escape(phrase("by_station", lang))}</h2>{_table(data["by_station"], stat_cols, lang)}
<h2>{escape(phrase("trouble", lang))}</h2>{_table(data.get("trouble_by_type", []), trouble_cols, lang)}
<h2>{escape(phrase("review", lang))} ({len(data["review"])})</h2>
{_table(data["review"], review_cols, lang)}
<h2>{escape(phrase("coverage", lang))}</h2>
<div class="charts">{coverage_map(cov["homes"], cov["stations"], lang)}
{_table(cov["by_street"], [_c("street_name", lang), _c("homes", lang), _c("covered", lang), _c("outside", lang), _c("covered_pct", lang, "pct")], lang)}</div>
<h2>{escape(phrase("devices", lang))}</h2>
{_table([dev], [_c("devices", lang), _c("offline_now", lang), _c("not_tested", lang), _c("low_battery", lang), _c("rejected_messages", lang)], lang)}
{services_html(data["orders"], data["visits"], lang) if "orders" in data else ""}
</body></html>
"""
