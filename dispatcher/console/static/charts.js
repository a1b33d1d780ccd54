// Charts for the supervisors' pages, drawn as inline SVG by our own code: no chart
// library, no CDN, nothing fetched. Every chart takes plain numbers and labels and
// returns an SVG string; colours come from console.css so the wall display can go dark.
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const W = 560;
const H = 220;
const PAD = { l: 44, r: 12, t: 14, b: 34 };

function frame(kind, title, body, w = W, h = H) {
  return `<svg class="chart chart-${kind}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}"><title>${esc(title)}</title>${body}</svg>`;
}

// Durations as people read them, the same words as the monthly report
// (dispatcher/oversight/text.py format_duration): 72.4 → "1 min 12 s" / "1分12秒".
const UNITS = { en: [" d", " h", " min", " s", " "], "zh-CN": ["天", "小时", "分", "秒", ""] };
export function formatDuration(seconds, lang) {
  if (seconds === null || seconds === undefined) return "—";
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) throw new RangeError(`bad duration ${seconds}`);
  const [du, hu, mu, su, sep] = UNITS[lang] || UNITS.en;
  const total = Math.floor(seconds + 0.5);
  const d = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (a, ua, b, ub) => [`${a}${ua}`].concat(b ? [`${b}${ub}`] : []).join(sep);
  if (d) return two(d, du, h, hu);
  if (h) return two(h, hu, m, mu);
  if (m) return two(m, mu, s, su);
  return `${s}${su}`;
}

// Axis ticks for counts: whole numbers only (no "2.5 calls"), at most five steps,
// the top a multiple of the step. Returns { max, step }.
export function countTicks(v) {
  const top = Math.max(1, Math.ceil(v || 0));
  for (const p of [1, 10, 100, 1000, 10000, 100000, 1000000]) {
    for (const m of [1, 2, 5]) {
      const step = m * p;
      if (Math.ceil(top / step) <= 5) return { max: Math.ceil(top / step) * step, step };
    }
  }
  return { max: top, step: top };
}

// Estimated drawn width of a tick label (14 px: the wall display's font, the larger): CJK glyphs are square, Latin
// ones about 0.6 em. Charts have no font metrics before they are in the page.
export function labelWidth(label, px = 14) {
  let w = 0;
  for (const ch of String(label)) w += ch.codePointAt(0) > 0x2e7f ? px : 0.6 * px;
  return w;
}

// How to write labels under `n` slots of `slot` px so none overlap: straight when the
// widest fits (or fits in two slots, thinned to every other); else turned upright
// (-90°), where each label needs only one line height along the axis, thinned to every
// k-th if even that does not fit. `extra` is the height upright labels need below the
// axis. Pure: unit-tested and used by every bar chart.
export function labelLayout(labels, slot, px = 14) {
  const widest = Math.max(0, ...labels.map((l) => labelWidth(l, px)));
  if (widest + 4 <= slot) return { rotate: 0, every: 1, extra: 0 };
  const flatEvery = Math.ceil((widest + 4) / slot);
  if (flatEvery <= 2 || labels.length <= 2) return { rotate: 0, every: flatEvery, extra: 0 };
  return { rotate: -90, every: Math.max(1, Math.ceil((1.3 * px + 2) / slot)), extra: Math.ceil(widest) };
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

function yAxis(max, fmt = (v) => String(v), steps = 4) {
  const plotH = H - PAD.t - PAD.b;
  const out = [];
  for (let i = 0; i <= steps; i++) {
    const v = (max * i) / steps;
    const y = H - PAD.b - (plotH * i) / steps;
    out.push(`<line class="grid" x1="${PAD.l}" x2="${W - PAD.r}" y1="${y}" y2="${y}"/><text class="tick" x="${PAD.l - 4}" y="${y + 4}" text-anchor="end">${esc(fmt(Number.isInteger(v) ? v : +v.toFixed(1)))}</text>`);
  }
  return out.join("");
}

// Bars of counts with a label under each; `marks` are vertical lines at a fractional bar
// index (target limits on the histogram). The value axis has whole-number ticks; labels
// slant and thin out (labelLayout) so that none overlaps the next.
export function barChart(labels, values, title, { kind = "bars", marks = [], cls = [] } = {}) {
  const { max, step } = countTicks(Math.max(0, ...values));
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  const n = Math.max(1, values.length);
  const bw = plotW / n;
  const lay = labelLayout(labels, bw);
  const bars = values.map((v, i) => {
    const h = (plotH * v) / max;
    const x = PAD.l + i * bw;
    const lx = x + bw / 2;
    const ly = H - PAD.b + 14;
    const label = i % lay.every !== 0 ? ""
      : lay.rotate ? `<text class="tick xlabel" x="${lx + 4}" y="${ly - 10}" text-anchor="end" transform="rotate(${lay.rotate} ${lx + 4} ${ly - 10})">${esc(labels[i])}</text>`
        : `<text class="tick xlabel" x="${lx}" y="${ly}" text-anchor="middle">${esc(labels[i])}</text>`;
    return `<g class="bar${cls[i] ? ` ${cls[i]}` : ""}" data-label="${esc(labels[i])}" data-value="${v}"><rect x="${(x + 1).toFixed(1)}" y="${(H - PAD.b - h).toFixed(1)}" width="${Math.max(1, bw - 2).toFixed(1)}" height="${h.toFixed(1)}"><title>${esc(`${labels[i]}: ${v}`)}</title></rect>${v && bw > 18 ? `<text class="val" x="${x + bw / 2}" y="${H - PAD.b - h - 3}" text-anchor="middle">${v}</text>` : ""}${label}</g>`;
  }).join("");
  const lines = marks.map(({ at, label }) => {
    const x = PAD.l + at * bw;
    return `<g class="mark"><line x1="${x}" x2="${x}" y1="${PAD.t}" y2="${H - PAD.b}"/><text x="${x + 3}" y="${PAD.t + 10}">${esc(label)}</text></g>`;
  }).join("");
  const empty = values.length ? "" : `<text class="empty" x="${W / 2}" y="${H / 2}" text-anchor="middle">—</text>`;
  return frame(kind, title, yAxis(max, String, max / step) + bars + lines + empty + `<line class="axis" x1="${PAD.l}" x2="${W - PAD.r}" y1="${H - PAD.b}" y2="${H - PAD.b}"/>`, W, H + lay.extra);
}

// Answer times in 15-second bins up to the largest target, the rest in one bin (as the
// printable monthly report draws it), with the target limits as lines.
export function answerHistogram(times, limits, title, overLabel) {
  const width = 15;
  const top = Math.max(60, ...limits);
  const bins = Math.floor(top / width);
  const counts = new Array(bins + 1).fill(0);
  for (const v of times) counts[Math.min(bins, Math.floor(v / width))] += 1;
  const labels = [...Array(bins).keys()].map((i) => String(i * width)).concat(`${overLabel}${top}`);
  const marks = limits.map((lim) => ({ at: lim / width, label: `${lim}s` }));
  return barChart(labels, counts, title, { kind: "histogram", marks });
}

// Answer time at each percentile (p50…max) as bars, with the limits as horizontal lines:
// the distribution read off the summary when per-call times are not available.
export function quantileChart(points, limits, title) {
  const max = niceMax(Math.max(1, ...points.map((p) => p.value || 0), ...limits));
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  const bw = plotW / Math.max(1, points.length);
  const y = (v) => H - PAD.b - (plotH * v) / max;
  const bars = points.map((p, i) => {
    const x = PAD.l + i * bw;
    const v = p.value ?? 0;
    return `<g class="bar" data-label="${esc(p.label)}" data-value="${v}"><rect x="${x + bw * 0.2}" y="${y(v).toFixed(1)}" width="${bw * 0.6}" height="${(H - PAD.b - y(v)).toFixed(1)}"><title>${esc(`${p.label}: ${p.value ?? "—"} s`)}</title></rect>
      <text class="val" x="${x + bw / 2}" y="${y(v) - 3}" text-anchor="middle">${p.value ?? "—"}</text>
      <text class="tick" x="${x + bw / 2}" y="${H - PAD.b + 14}" text-anchor="middle">${esc(p.label)}</text></g>`;
  }).join("");
  const lines = limits.map((lim) => `<g class="mark"><line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(lim)}" y2="${y(lim)}"/><text x="${W - PAD.r - 2}" y="${y(lim) - 3}" text-anchor="end">${lim}s</text></g>`).join("");
  return frame("histogram", title, yAxis(max, (v) => `${v}s`) + bars + lines);
}

// Percentages over time (0–100), one polyline per series, with dashed target lines.
export function lineChart(labels, series, targets, title) {
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  const lo = Math.max(0, Math.floor(Math.min(100, ...series.flatMap((s) => s.values.filter((v) => v !== null)), ...targets.map((t) => t.value)) / 10) * 10 - 10);
  const x = (i) => PAD.l + (labels.length <= 1 ? plotW / 2 : (plotW * i) / (labels.length - 1));
  const y = (v) => H - PAD.b - (plotH * (v - lo)) / (100 - lo);
  const grid = [0, 1, 2, 3, 4].map((i) => {
    const v = lo + ((100 - lo) * i) / 4;
    return `<line class="grid" x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(v)}" y2="${y(v)}"/><text class="tick" x="${PAD.l - 4}" y="${y(v) + 4}" text-anchor="end">${+v.toFixed(1)}%</text>`;
  }).join("");
  const gap = labels.length <= 1 ? plotW : plotW / (labels.length - 1);
  const every = Math.max(1, Math.ceil((Math.max(0, ...labels.map((l) => labelWidth(l))) + 6) / gap));
  const xs = labels.map((l, i) => (i % every === 0 ? `<text class="tick xlabel" x="${x(i)}" y="${H - PAD.b + 14}" text-anchor="middle">${esc(l)}</text>` : "")).join("");
  const tl = targets.map((t) => `<g class="mark target s${t.series}"><line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(t.value)}" y2="${y(t.value)}"/><text x="${PAD.l + 4}" y="${y(t.value) - 3}">${esc(t.label)}</text></g>`).join("");
  const lines = series.map((s, k) => {
    const pts = s.values.map((v, i) => (v === null ? null : [x(i), y(v)]));
    const d = pts.map((p, i) => (p ? `${i && pts[i - 1] ? "L" : "M"}${p[0].toFixed(1)} ${p[1].toFixed(1)}` : "")).join("");
    const dots = pts.map((p, i) => (p ? `<circle cx="${p[0].toFixed(1)}" cy="${p[1].toFixed(1)}" r="3"><title>${esc(`${labels[i]} ${s.label}: ${s.values[i]}%`)}</title></circle>` : "")).join("");
    return `<g class="series s${k}" data-series="${esc(s.key)}"><path d="${d}"/>${dots}</g>`;
  }).join("");
  // legend entries side by side, each as wide as its words (never a fixed 150 px)
  let lx = PAD.l + 8;
  const legend = series.map((s, k) => {
    const g = `<g class="legend s${k}" transform="translate(${lx.toFixed(1)} ${H - 6})"><rect y="-9" width="10" height="10"/><text x="14">${esc(s.label)}</text></g>`;
    lx += 14 + labelWidth(s.label) + 16;
    return g;
  }).join("");
  return frame("line", title, grid + xs + tl + lines + legend);
}

// Web Mercator, as the call map (map.js) draws it, fitted to the points' box.
function project(lat, lon) {
  const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return [(lon + 180) / 360, 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)];
}

// Homes inside (green) and outside (red) their service circle, stations as squares.
export function coverageMap(homes, stations, title, labels) {
  const w = 560;
  const h = 380;
  const pts = homes.map((o) => project(o.lat, o.lon)).concat(stations.map((s) => project(s.lat, s.lon)));
  if (!pts.length) return frame("coverage", title, `<text class="empty" x="${w / 2}" y="${h / 2}" text-anchor="middle">—</text>`, w, h);
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const k = Math.min((w - 40) / Math.max(1e-9, x1 - x0), (h - 60) / Math.max(1e-9, y1 - y0));
  const ox = (w - (x1 - x0) * k) / 2;
  const oy = (h - 30 - (y1 - y0) * k) / 2;
  const at = (lat, lon) => {
    const [px, py] = project(lat, lon);
    return [(ox + (px - x0) * k).toFixed(1), (oy + (py - y0) * k).toFixed(1)];
  };
  const st = stations.map((s) => {
    const [x, y] = at(s.lat, s.lon);
    const size = s.tier === "county" ? 6 : s.tier === "street" ? 5 : 3;
    return `<rect class="cov-station${s.on_duty ? "" : " unstaffed"}" x="${x - size}" y="${y - size}" width="${size * 2}" height="${size * 2}"><title>${esc(`${s.name} (${s.on_duty})`)}</title></rect>`;
  }).join("");
  // outside homes last, so they are drawn on top
  const sorted = [...homes].sort((a, b) => Number(b.covered) - Number(a.covered));
  const hs = sorted.map((o) => {
    const [x, y] = at(o.lat, o.lon);
    return `<circle class="cov-home ${o.covered ? "in" : "out"}" data-home="${esc(o.home_id)}" cx="${x}" cy="${y}" r="${o.covered ? 3.5 : 5}"><title>${esc(`${o.home_id}: ${o.minutes} min / ${o.limit_min} min`)}</title></circle>`;
  }).join("");
  const legend = `<g class="map-legend" transform="translate(8 ${h - 24})"><circle class="cov-home in" cx="6" cy="6" r="4"/><text x="14" y="10">${esc(labels.inside)}</text>`
    + `<circle class="cov-home out" cx="136" cy="6" r="5"/><text x="146" y="10">${esc(labels.outside)}</text>`
    + `<rect class="cov-station" x="268" y="2" width="8" height="8"/><text x="282" y="10">${esc(labels.station)}</text></g>`;
  return frame("coverage", title, `<rect class="map-bg" width="${w}" height="${h}"/>${st}${hs}${legend}`, w, h);
}
