// The supervisors' pages: dashboard (#/oversight), review list (#/review), device health
// (#/devices) and the county platform's wall display (#/wall or ?wall=1). Every number
// comes from /api/v1/reports/… — the same figures as the CSV, the XLSX, the monthly
// report and `carecall report` — and the scope is whatever the API allows the caller.
import { answerHistogram, barChart, coverageMap, formatDuration, lineChart, quantileChart } from "./charts.js";
import { actorLabel, code, currentLang, fmtDateTime, has, t } from "./i18n.js";

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const period = { from: "", to: "" }; // empty: the API's default (this month so far)

// Who may open the reports: the API's rule (supervisor, admin, or a county-centre login).
export function canOversee(me) {
  return !!me && (me.role === "supervisor" || me.role === "admin" || !me.station || me.station.tier === "county");
}

function q(extra = {}) {
  const p = new URLSearchParams();
  if (period.from) p.set("from", period.from);
  if (period.to) p.set("to", period.to);
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
}

// durations in words ("1 min 12 s" / "1分12秒"), never 2039.713
const secs = (v) => formatDuration(v, currentLang());
const pct = (v) => (v === null || v === undefined ? "—" : `${v}%`);
const eventLabel = (type) => (has(`event.${type}`) ? t(`event.${type}`) : t("event.other", { type }));

function denied(view, err) {
  // 403: this login may not read reports. Say so instead of showing an empty page.
  view.innerHTML = `<p class="notice" role="alert">${esc(err.status === 403 ? t("sv.forbidden") : t("sv.failed", { message: err.message }))}</p>`;
}

// ---------------------------------------------------------------- downloads

// The API wants a bearer token, which a plain link cannot send: fetch, then save the blob.
async function download(path, filename, token) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function openMonthly(month, token) {
  const win = window.open("", "_blank");
  const r = await fetch(`/api/v1/reports/monthly?month=${encodeURIComponent(month)}&lang=${encodeURIComponent(currentLang())}`, { headers: { Authorization: `Bearer ${token()}` } });
  const html = await r.text();
  const url = URL.createObjectURL(new Blob([html], { type: "text/html" }));
  if (win) win.location = url;
  else location.assign(url);
}

function exportLinks(table) {
  const [base, extra] = {
    summary: ["summary", {}],
    "aggregates-station": ["aggregates", { by: "station" }],
    "aggregates-day": ["aggregates", { by: "day" }],
    "aggregates-type": ["aggregates", { by: "type" }],
    "aggregates-hour": ["aggregates", { by: "hour" }],
    review: ["review", {}],
    devices: ["devices", {}],
    "coverage-homes": ["coverage", { table: "homes" }],
    "coverage-streets": ["coverage", { table: "streets" }],
    "coverage-shifts": ["coverage", { table: "shifts" }],
  }[table];
  return ["csv", "xlsx"].map((fmt) => {
    const shift = covShift && table !== "coverage-shifts" ? { shift: covShift } : {};
    // column headers in the reader's language (the API's lang=)
    const lang = currentLang();
    const params = base === "coverage" ? new URLSearchParams({ ...extra, ...shift, format: fmt, lang }) : new URLSearchParams(q({ ...extra, format: fmt, lang }).slice(1));
    return `<button type="button" class="dl link" data-path="/api/v1/reports/${base}?${esc(params)}" data-name="carecall-${esc(table)}.${fmt}">${fmt.toUpperCase()}</button>`;
  }).join(" ");
}

function wireDownloads(root, token, toast) {
  root.querySelectorAll("button.dl").forEach((b) => {
    b.onclick = () => download(b.dataset.path, b.dataset.name, token).catch((e) => toast(t("sv.failed", { message: e.message })));
  });
}

function periodForm() {
  const month = (period.from || new Date().toISOString().slice(0, 10)).slice(0, 7);
  return `<form class="period" id="sv-period">
    <label>${esc(t("sv.from"))} <input type="date" id="sv-from" value="${esc(period.from)}"></label>
    <label>${esc(t("sv.to"))} <input type="date" id="sv-to" value="${esc(period.to)}"></label>
    <button type="submit">${esc(t("sv.apply"))}</button>
    <span class="sep"></span>
    <label>${esc(t("sv.month"))} <input type="month" id="sv-month" value="${esc(month)}"></label>
    <button type="button" id="sv-monthly">${esc(t("sv.monthly"))}</button>
  </form>`;
}

function wirePeriod(root, rerender, token) {
  const form = root.querySelector("#sv-period");
  if (!form) return;
  form.onsubmit = (e) => {
    e.preventDefault();
    period.from = root.querySelector("#sv-from").value;
    period.to = root.querySelector("#sv-to").value;
    rerender();
  };
  root.querySelector("#sv-monthly").onclick = () => openMonthly(root.querySelector("#sv-month").value, token);
}

// ---------------------------------------------------------------- dashboard

// Coverage is read for staff on duty now ("") or for one shift of the roster.
let covShift = "";
const coverageUrl = () => `/api/v1/reports/coverage${covShift ? `?shift=${encodeURIComponent(covShift)}` : ""}`;
const shiftLabel = (name) => (has(`shift.${name}`) ? t(`shift.${name}`) : name);

function shiftPicker(cov) {
  const opts = (cov.shifts || []).map((sh) => `<option value="${esc(sh.name)}" ${covShift === sh.name ? "selected" : ""}>${esc(t("sv.cov.shift_opt", { name: shiftLabel(sh.name), hours: sh.hours }))}</option>`).join("");
  return `<label class="small cov-shift">${esc(t("sv.cov.staffing"))} <select id="cov-shift"><option value="">${esc(t("sv.cov.now", { shift: cov.current_shift ? shiftLabel(cov.current_shift) : "—" }))}</option>${opts}</select></label>`;
}

async function loadDashboard(api) {
  const [summary, byDay, byType, byHour, coverage] = await Promise.all([
    api(`/api/v1/reports/summary${q()}`),
    api(`/api/v1/reports/aggregates${q({ by: "day" })}`),
    api(`/api/v1/reports/aggregates${q({ by: "type" })}`),
    api(`/api/v1/reports/aggregates${q({ by: "hour" })}`),
    api(coverageUrl()),
  ]);
  return { summary, byDay, byType, byHour, coverage };
}

function headline(s) {
  // data-value keeps the API's number; the text is words (durations as "1 min 12 s")
  const fig = (key, label, value, unit) => `<div class="fig" data-figure="${key}" data-value="${value ?? ""}">
    <span class="fig-label">${esc(label)}</span><span class="fig-value">${esc(unit === "s" ? secs(value) : value ?? "—")}</span></div>`;
  const target = (key, label) => {
    const met = s[`${key}_target_met`];
    const cls = met === null ? "na" : met ? "ok" : "bad";
    return `<div class="fig target ${cls}" data-figure="${key}_pct" data-value="${s[`${key}_pct`] ?? ""}">
      <span class="fig-label">${esc(label)}</span>
      <span class="fig-value">${esc(pct(s[`${key}_pct`]))}</span>
      <span class="fig-sub">${esc(t("sv.target_vs", { target: s[`${key}_target_pct`], met: s[`${key}_met`], n: s[`${key}_eligible`] }))}
        · ${esc(met === null ? t("sv.target_na") : met ? t("sv.target_met") : t("sv.target_missed"))}</span></div>`;
  };
  return `<div class="headline">
    ${fig("calls", t("sv.calls"), s.calls, "")}
    ${fig("answer_median_s", t("sv.answer_median"), s.answer_median_s, "s")}
    ${fig("answer_p90_s", t("sv.answer_p90"), s.answer_p90_s, "s")}
    ${fig("answer_p99_s", t("sv.answer_p99"), s.answer_p99_s, "s")}
    ${target("answer_within_60s", t("sv.within_60"))}
    ${target("answer_within_180s", t("sv.within_180"))}
    ${target("arrival_within_limit", t("sv.arrival_within"))}
    ${fig("unanswered", t("sv.unanswered"), s.unanswered, "")}
    ${fig("review", t("sv.review_count"), s.review, "")}
    ${fig("trouble_calls", t("sv.trouble_calls"), s.trouble_calls, "")}
    ${target("trouble_in_time", t("sv.trouble_in_time"))}
  </div>`;
}

function charts(data) {
  const s = data.summary.summary;
  const limits = [60, 180];
  const histTitle = t("sv.chart.answer");
  // the exact per-call times when the API gives them; else the percentiles it does give
  const hist = Array.isArray(data.summary.answer_times)
    ? answerHistogram(data.summary.answer_times, limits, histTitle, ">")
    : quantileChart([
      { label: t("sv.p50"), value: s.answer_median_s }, { label: "p90", value: s.answer_p90_s },
      { label: "p95", value: s.answer_p95_s }, { label: "p99", value: s.answer_p99_s }, { label: t("sv.max"), value: s.answer_max_s },
    ], limits, histTitle);
  const days = data.byDay.rows;
  const line = lineChart(
    days.map((r) => String(r.label).slice(5)),
    [
      { key: "answer_within_60s_pct", label: t("sv.within_60"), values: days.map((r) => r.answer_within_60s_pct) },
      { key: "answer_within_180s_pct", label: t("sv.within_180"), values: days.map((r) => r.answer_within_180s_pct) },
      { key: "arrival_within_limit_pct", label: t("sv.arrival_within"), values: days.map((r) => r.arrival_within_limit_pct) },
    ],
    [{ series: 0, value: s.answer_within_60s_target_pct, label: `${s.answer_within_60s_target_pct}%` },
      { series: 1, value: s.answer_within_180s_target_pct, label: `${s.answer_within_180s_target_pct}%` }],
    t("sv.chart.compliance"),
  );
  const types = data.byType.rows;
  const byType = barChart(types.map((r) => eventLabel(r.key)), types.map((r) => r.calls), t("sv.chart.type"), { kind: "type" });
  const hours = new Array(24).fill(0);
  for (const r of data.byHour.rows) hours[Number(r.key)] = r.calls;
  const byHour = barChart([...Array(24).keys()].map(String), hours, t("sv.chart.hour"), { kind: "hour" });
  const { map, outside } = coverageChart(data.coverage);
  return { hist, line, byType, byHour, map, outside, homes: data.coverage.homes.length };
}

function coverageChart(cov) {
  const outside = cov.homes.filter((h) => !h.covered).length;
  const map = coverageMap(cov.homes, cov.stations, t("sv.chart.coverage"), {
    inside: t("sv.cov.inside", { n: cov.homes.length - outside }), outside: t("sv.cov.outside", { n: outside }), station: t("sv.cov.station"),
  });
  return { map, outside };
}

function wireShiftPicker(view, { api, token, toast }) {
  const sel = view.querySelector("#cov-shift");
  if (!sel) return;
  sel.onchange = async () => {
    covShift = sel.value;
    let cov;
    try {
      cov = await api(coverageUrl());
    } catch (err) {
      if (err.status !== 401) toast(t("sv.failed", { message: err.message }));
      return;
    }
    const body = view.querySelector("#ch-coverage .cov-body");
    if (body) body.innerHTML = coverageChart(cov).map + coverageTable(cov);
    const links = view.querySelector("#ch-coverage .exports");
    if (links) links.innerHTML = coverageExports();
    wireDownloads(view.querySelector("#ch-coverage"), token, toast);
  };
}

const coverageExports = () => `${exportLinks("coverage-homes")} · ${esc(t("sv.t.by_street"))} ${exportLinks("coverage-streets")} · ${esc(t("sv.t.by_shift"))} ${exportLinks("coverage-shifts")}`;

// ---------------------------------------------------------------- service orders and visits

// Orders and visit compliance are counted per local month (the API's month=): the month
// of the period shown.
const reportMonth = (data) => String(period.from || data.summary.period.from).slice(0, 7);

async function loadServices(api, month) {
  const m = encodeURIComponent(month);
  const [orders, visits] = await Promise.all([
    api(`/api/v1/reports/orders?month=${m}`).catch((err) => ({ error: err })),
    api(`/api/v1/reports/visit-compliance?month=${m}`).catch((err) => ({ error: err })),
  ]);
  return { orders, visits };
}

function monthExports(base, extra, month, name) {
  return ["csv", "xlsx"].map((fmt) => {
    const params = new URLSearchParams({ month, ...extra, format: fmt, lang: currentLang() });
    return `<button type="button" class="dl link" data-path="/api/v1/reports/${base}?${esc(params)}" data-name="carecall-${esc(name)}-${esc(month)}.${fmt}">${fmt.toUpperCase()}</button>`;
  }).join(" ");
}

const kindName = (rep, key) => rep.kind_names?.[key]?.[currentLang()] ?? key;

function ordersPanel(rep, month) {
  if (rep.error) return `<p class="notice" role="alert">${esc(t("sv.failed", { message: rep.error.message }))}</p>`;
  const s = rep.summary;
  const fig = (key, label, value, sub = "") => `<div class="fig" data-figure="${key}" data-value="${value ?? ""}">
    <span class="fig-label">${esc(label)}</span><span class="fig-value">${esc(value ?? "—")}</span>${sub ? `<span class="fig-sub">${esc(sub)}</span>` : ""}</div>`;
  const share = (k) => t("sv.orders.share", { met: s[`${k}_within_level_met`], n: s[`${k}_within_level_eligible`] });
  const heads = `<div class="headline orders-figs">
    ${fig("orders", t("sv.orders.total"), s.orders)}
    ${fig("accept_within_level_pct", t("sv.orders.accept_within"), pct(s.accept_within_level_pct), share("accept"))}
    ${fig("completion_within_level_pct", t("sv.orders.done_within"), pct(s.completion_within_level_pct), share("completion"))}
    ${fig("satisfaction_mean", t("sv.orders.satisfaction"), s.satisfaction_mean, t("sv.orders.rated", { n: s.satisfaction_n, s5: s.satisfaction_5, s4: s.satisfaction_4, s3: s.satisfaction_3, s2: s.satisfaction_2, s1: s.satisfaction_1 }))}
    ${fig("not_done", t("sv.orders.not_done"), s.not_done)}
    ${fig("cancelled", t("sv.orders.cancelled"), s.cancelled)}
  </div>`;
  if (!s.orders) return `${heads}<p class="muted" id="orders-empty">${esc(t("sv.orders.none"))}</p>`;
  const kinds = rep.by_kind;
  const chart = barChart(kinds.map((r) => kindName(rep, r.key)), kinds.map((r) => r.orders), t("sv.orders.chart_kind"), { kind: "orders-kind" });
  const table = `<table class="sv-table orders-kinds"><thead><tr><th>${esc(t("sv.orders.col.kind"))}</th><th>${esc(t("sv.orders.col.orders"))}</th><th>${esc(t("sv.orders.col.accept"))}</th><th>${esc(t("sv.orders.col.done"))}</th><th>${esc(t("sv.orders.col.satisfaction"))}</th></tr></thead>
    <tbody>${kinds.map((r) => `<tr data-kind="${esc(r.key)}"><th scope="row">${esc(kindName(rep, r.key))}</th><td class="num">${r.orders}</td><td class="num">${esc(pct(r.accept_within_level_pct))}</td><td class="num">${esc(pct(r.completion_within_level_pct))}</td><td class="num">${esc(r.satisfaction_mean ?? "—")}</td></tr>`).join("")}</tbody></table>`;
  const reasons = rep.cancellations.length ? `<h4>${esc(t("sv.orders.cancel_reasons"))}</h4><table class="sv-table orders-cancel"><thead><tr><th>${esc(t("sv.orders.col.reason"))}</th><th>${esc(t("sv.orders.col.orders"))}</th></tr></thead>
    <tbody>${rep.cancellations.map((r) => `<tr><th scope="row">${esc(r.reason)}</th><td class="num">${r.orders}</td></tr>`).join("")}</tbody></table>` : "";
  const links = `<p class="exports small">${esc(t("sv.download"))}: ${esc(t("sv.orders.t.by_kind"))} ${monthExports("orders", { by: "kind" }, month, "orders-kind")}
    · ${esc(t("sv.orders.t.by_provider"))} ${monthExports("orders", { by: "provider" }, month, "orders-provider")}
    · ${esc(t("sv.orders.t.by_station"))} ${monthExports("orders", { by: "station" }, month, "orders-station")}
    · ${esc(t("sv.orders.t.cancellations"))} ${monthExports("orders", { by: "cancellations" }, month, "orders-cancellations")}</p>`;
  return `${heads}<div class="orders-body"><div>${chart}</div><div>${table}${reasons}</div></div>${links}`;
}

function visitsTable(rep, month) {
  if (rep.error) return `<p class="notice" role="alert">${esc(t("sv.failed", { message: rep.error.message }))}</p>`;
  const links = `<p class="exports small">${esc(t("sv.download"))}: ${esc(t("sv.visits.t.stations"))} ${monthExports("visit-compliance", { table: "stations" }, month, "visit-compliance")}
    · ${esc(t("sv.visits.t.not_visited"))} ${monthExports("visit-compliance", { table: "not_visited" }, month, "not-visited")}</p>`;
  if (!rep.stations.length) return `<p class="muted" id="visits-empty">${esc(t("sv.visits.none"))}</p>${links}`;
  const who = (sid) => rep.not_visited.filter((r) => r.station_id === sid).map((r) => r.resident_name).join("、");
  const cols = ["station", "due", "on_time", "late", "missed", "open", "on_time_pct", "not_visited"];
  return `<table class="sv-table visits-compliance"><thead><tr>${cols.map((c) => `<th>${esc(t(`sv.visits.col.${c}`))}</th>`).join("")}</tr></thead>
    <tbody>${rep.stations.map((r) => `<tr data-station="${esc(r.station_id)}" class="${r.missed ? "warn" : ""}"><th scope="row">${esc(r.station_name)}</th>
      <td class="num" data-col="due">${r.due}</td><td class="num" data-col="done_on_time">${r.done_on_time}</td><td class="num" data-col="late">${r.late}</td>
      <td class="num${r.missed ? " bad" : ""}" data-col="missed">${r.missed}</td><td class="num" data-col="open">${r.open}</td>
      <td class="num" data-col="on_time_pct">${esc(pct(r.on_time_pct))}</td><td data-col="not_visited">${esc(who(r.station_id) || "—")}</td></tr>`).join("")}</tbody></table>${links}`;
}

const panel = (id, title, body, extra = "") => `<section class="panel chart-panel" id="${id}" aria-labelledby="${id}-h"><h3 id="${id}-h">${esc(title)} ${extra}</h3>${body}</section>`;

export async function renderDashboard(view, { api, token, toast }) {
  view.innerHTML = `<p class="muted">${esc(t("detail.loading"))}</p>`;
  let data;
  try {
    data = await loadDashboard(api);
  } catch (err) {
    if (err.status === 401) return;
    return denied(view, err);
  }
  const p = data.summary.period;
  const c = charts(data);
  const month = reportMonth(data);
  const services = await loadServices(api, month);
  view.innerHTML = `<div class="sv-head"><h2>${esc(t("sv.dashboard"))} <span class="muted small">${esc(t("sv.period", { from: p.from, to: p.to }))}</span></h2>
    ${periodForm()}</div>
    ${headline(data.summary.summary)}
    <p class="exports">${esc(t("sv.download"))}: ${esc(t("sv.t.summary"))} ${exportLinks("summary")} · ${esc(t("sv.t.by_station"))} ${exportLinks("aggregates-station")}
      · ${esc(t("sv.t.by_day"))} ${exportLinks("aggregates-day")} · ${esc(t("sv.t.by_type"))} ${exportLinks("aggregates-type")} · ${esc(t("sv.t.by_hour"))} ${exportLinks("aggregates-hour")}</p>
    <div class="chart-grid">
      ${panel("ch-answer", t("sv.chart.answer"), c.hist)}
      ${panel("ch-compliance", t("sv.chart.compliance"), c.line)}
      ${panel("ch-type", t("sv.chart.type"), c.byType)}
      ${panel("ch-hour", t("sv.chart.hour"), c.byHour)}
      ${panel("ch-trouble", t("sv.chart.trouble"), troubleTable(data.byType.rows))}
      ${panel("ch-coverage", t("sv.chart.coverage"), `${shiftPicker(data.coverage)}<div class="cov-body">${c.map}${coverageTable(data.coverage)}</div>`, `<span class="exports small">${coverageExports()}</span>`)}
    </div>
    <div class="chart-grid" id="sv-services">
      ${panel("ch-orders", t("sv.orders.title", { month }), ordersPanel(services.orders, month))}
      ${panel("ch-visits", t("sv.visits.title", { month }), visitsTable(services.visits, month))}
    </div>`;
  wirePeriod(view, () => renderDashboard(view, { api, token, toast }), token);
  wireDownloads(view, token, toast);
  wireShiftPicker(view, { api, token, toast });
}

// Device trouble has its own table and its own target (working hours), apart from the
// emergency figures: one row per trouble type.
function troubleTable(rows) {
  const trouble = rows.filter((r) => r.trouble_calls > 0);
  if (!trouble.length) return `<p class="muted" id="trouble-empty">${esc(t("sv.trouble_none"))}</p>`;
  return `<table class="sv-table trouble"><thead><tr><th>${esc(t("sv.col.type"))}</th><th>${esc(t("sv.calls"))}</th><th>${esc(t("sv.col.ack_median"))}</th><th>${esc(t("sv.col.in_time"))}</th><th>${esc(t("sv.unanswered"))}</th></tr></thead>
    <tbody>${trouble.map((r) => `<tr data-type="${esc(r.key)}" class="${r.trouble_in_time_target_met === false ? "warn" : ""}"><th scope="row">${esc(eventLabel(r.key))}</th><td class="num">${r.trouble_calls}</td>
      <td class="num">${esc(secs(r.trouble_answer_median_s))}</td><td class="num">${esc(pct(r.trouble_in_time_pct))}</td><td class="num">${r.trouble_unanswered}</td></tr>`).join("")}</tbody></table>`;
}

function coverageTable(cov) {
  return `<table class="sv-table cov-streets"><thead><tr><th>${esc(t("sv.col.street"))}</th><th>${esc(t("sv.col.homes"))}</th><th>${esc(t("sv.col.covered"))}</th><th>${esc(t("sv.col.outside"))}</th></tr></thead>
    <tbody>${cov.by_street.map((r) => `<tr class="${r.outside ? "warn" : ""}"><th scope="row">${esc(r.street_name)}</th><td>${r.homes}</td><td>${esc(pct(r.covered_pct))}</td><td>${r.outside}${r.outside_homes ? ` <span class="small muted">${esc(r.outside_homes)}</span>` : ""}</td></tr>`).join("")}</tbody></table>`;
}

// ---------------------------------------------------------------- review list

const REVIEW_PAGE = 200;

export async function renderReview(view, { api, token, toast }, offset = 0) {
  view.innerHTML = `<p class="muted">${esc(t("detail.loading"))}</p>`;
  let rep;
  try {
    rep = await api(`/api/v1/reports/review${q({ limit: REVIEW_PAGE, offset })}`);
  } catch (err) {
    if (err.status === 401) return;
    return denied(view, err);
  }
  const rows = rep.calls.map((c) => `<tr class="rv" data-call="${c.call_id}">
      <td><details><summary>#${c.call_id}</summary>
        <ol class="timeline">${c.timeline.map((r) => `<li data-kind="${esc(r.kind)}"><time datetime="${esc(r.at)}">${esc(fmtDateTime(r.at))}</time>
          <strong>${esc(code("timeline", r.kind))}</strong> <span class="small muted" title="${esc(r.actor)}">${esc(actorLabel(r.actor))}</span></li>`).join("")}</ol>
        <button type="button" class="dl link" data-path="/api/v1/reports/calls/${c.call_id}/timeline?format=csv" data-name="carecall-call-${c.call_id}-timeline.csv">CSV</button>
        <button type="button" class="dl link" data-path="/api/v1/reports/calls/${c.call_id}/timeline?format=xlsx" data-name="carecall-call-${c.call_id}-timeline.xlsx">XLSX</button>
      </details></td>
      <td>${c.reasons.split(" ").map((r) => `<span class="tag reason">${esc(t(`sv.reason.${r}`))}</span>`).join(" ")}</td>
      <td>${esc(fmtDateTime(c.started_local))}</td><td>${esc(c.station_name || c.station_id)}</td><td>${esc(c.home_id)}</td>
      <td>${esc(eventLabel(c.type))} · ${esc(c.priority)}</td><td>${esc(code("status", c.status))}${c.outcome ? ` · ${esc(code("outcome", c.outcome))}` : ""}</td>
      <td class="num" data-s="${c.answer_s ?? ""}">${esc(secs(c.answer_s))}</td><td class="num" data-s="${c.arrival_s ?? ""}">${esc(secs(c.arrival_s))}</td><td class="num">${c.escalations}</td></tr>`).join("");
  view.innerHTML = `<div class="sv-head"><h2>${esc(t("sv.review"))} <span class="muted small">${esc(t("sv.period", { from: rep.period.from, to: rep.period.to }))} · ${esc(t("sv.n_calls", { n: rep.total }))}</span></h2>${periodForm()}</div>
    <p class="muted small">${esc(t("sv.review_help"))} ${esc(t("sv.review_trouble"))}</p>
    <p class="exports">${esc(t("sv.download"))}: ${exportLinks("review")}</p>
    <table class="sv-table review"><thead><tr><th>${esc(t("sv.col.call"))}</th><th>${esc(t("sv.col.reasons"))}</th><th>${esc(t("sv.col.started"))}</th><th>${esc(t("sv.col.station"))}</th><th>${esc(t("sv.col.home"))}</th>
      <th>${esc(t("sv.col.type"))}</th><th>${esc(t("sv.col.status"))}</th><th>${esc(t("sv.col.answer_time"))}</th><th>${esc(t("sv.col.arrival_time"))}</th><th>${esc(t("sv.col.escalations"))}</th></tr></thead>
    <tbody>${rows}</tbody></table>${rep.calls.length ? "" : `<p class="muted" id="review-empty">${esc(t("sv.review_empty"))}</p>`}
    ${rep.total > rep.calls.length ? `<p class="pager" id="review-pager"><button type="button" class="link" data-page="-1" ${offset > 0 ? "" : "disabled"}>${esc(t("sv.page_prev"))}</button>
      <span class="muted small">${esc(t("sv.page_of", { from: rep.calls.length ? offset + 1 : 0, to: offset + rep.calls.length, total: rep.total }))}</span>
      <button type="button" class="link" data-page="1" ${offset + rep.calls.length < rep.total ? "" : "disabled"}>${esc(t("sv.page_next"))}</button></p>` : ""}`;
  for (const b of view.querySelectorAll("#review-pager button[data-page]")) {
    b.addEventListener("click", () => renderReview(view, { api, token, toast }, Math.max(0, offset + Number(b.dataset.page) * REVIEW_PAGE)));
  }
  wirePeriod(view, () => renderReview(view, { api, token, toast }), token);
  wireDownloads(view, token, toast);
}

// ---------------------------------------------------------------- device health

export async function renderDevices(view, { api, token, toast }, filter = "problems") {
  view.innerHTML = `<p class="muted">${esc(t("detail.loading"))}</p>`;
  let rep;
  try {
    rep = await api(`/api/v1/reports/devices${q()}`);
  } catch (err) {
    if (err.status === 401) return;
    return denied(view, err);
  }
  const k = rep.counts;
  const problem = (d) => d.offline_now || d.not_tested || d.low_battery || d.rejected_messages > 0 || d.hours_offline > 0;
  const shown = filter === "all" ? rep.rows : rep.rows.filter(problem);
  const yes = (b) => (b ? `<span class="tag bad">${esc(t("sv.yes"))}</span>` : "");
  view.innerHTML = `<div class="sv-head"><h2>${esc(t("sv.devices"))} <span class="muted small">${esc(t("sv.period", { from: rep.period.from, to: rep.period.to }))}</span></h2>${periodForm()}</div>
    <div class="headline">
      <div class="fig" data-figure="devices" data-value="${k.devices}"><span class="fig-label">${esc(t("sv.dev.total"))}</span><span class="fig-value">${k.devices}</span></div>
      <div class="fig ${k.offline_now ? "bad" : ""}" data-figure="offline_now" data-value="${k.offline_now}"><span class="fig-label">${esc(t("sv.dev.offline_now"))}</span><span class="fig-value">${k.offline_now}</span></div>
      <div class="fig ${k.not_tested ? "bad" : ""}" data-figure="not_tested" data-value="${k.not_tested}"><span class="fig-label">${esc(t("sv.dev.not_tested"))}</span><span class="fig-value">${k.not_tested}</span></div>
      <div class="fig ${k.low_battery ? "bad" : ""}" data-figure="low_battery" data-value="${k.low_battery}"><span class="fig-label">${esc(t("sv.dev.low_battery"))}</span><span class="fig-value">${k.low_battery}</span></div>
      <div class="fig" data-figure="rejected_messages" data-value="${k.rejected_messages}"><span class="fig-label">${esc(t("sv.dev.rejected"))}</span><span class="fig-value">${k.rejected_messages}</span></div>
    </div>
    <p class="exports">${esc(t("sv.download"))}: ${exportLinks("devices")}
      · <label><input type="radio" name="dev-filter" value="problems" ${filter !== "all" ? "checked" : ""}> ${esc(t("sv.dev.only_problems"))}</label>
      <label><input type="radio" name="dev-filter" value="all" ${filter === "all" ? "checked" : ""}> ${esc(t("sv.dev.all"))}</label></p>
    <table class="sv-table devices-health"><thead><tr><th>${esc(t("sv.col.device"))}</th><th>${esc(t("sv.col.home"))}</th><th>${esc(t("sv.col.station"))}</th><th>${esc(t("sv.col.kind"))}</th>
      <th>${esc(t("sv.dev.offline_now"))}</th><th>${esc(t("sv.col.hours_offline"))}</th><th>${esc(t("sv.col.battery"))}</th><th>${esc(t("sv.col.last_test"))}</th>
      <th>${esc(t("sv.dev.not_tested"))}</th><th>${esc(t("sv.col.last_seen"))}</th><th>${esc(t("sv.dev.rejected"))}</th></tr></thead>
    <tbody>${shown.slice(0, 1000).map((d) => `<tr data-device="${esc(d.device_id)}" class="${problem(d) ? "warn" : ""}"><th scope="row"><code>${esc(d.device_id)}</code></th><td>${esc(d.home_id)}</td><td>${esc(d.station_name || d.station_id)}</td>
      <td>${esc(code("device", d.kind))}</td><td>${yes(d.offline_now)}${d.offline_since ? ` <span class="small muted">${esc(fmtDateTime(d.offline_since))}</span>` : ""}</td>
      <td class="num">${d.hours_offline}</td><td class="num ${d.low_battery ? "bad" : ""}">${d.battery_pct === null ? "—" : `${d.battery_pct}%`}</td>
      <td>${esc(d.last_test_at ? fmtDateTime(d.last_test_at) : t("sv.never"))}</td><td>${yes(d.not_tested)}</td><td>${esc(d.last_seen_at ? fmtDateTime(d.last_seen_at) : "—")}</td>
      <td class="num">${d.rejected_messages}</td></tr>`).join("")}</tbody></table>
    ${shown.length ? "" : `<p class="muted">${esc(t("sv.dev.none"))}</p>`}`;
  wirePeriod(view, () => renderDevices(view, { api, token, toast }, filter), token);
  wireDownloads(view, token, toast);
  view.querySelectorAll("input[name=dev-filter]").forEach((r) => {
    r.onchange = () => renderDevices(view, { api, token, toast }, r.value);
  });
}

// ---------------------------------------------------------------- wall display

let wallTimer = null;

// Whose wall this is: the county platform only for a county login; a street (or
// community) supervisor's wall names their station.
export function wallTitle(me) {
  const st = me && me.station;
  return st && st.tier !== "county" ? t("sv.wall.title_scope", { name: st.name }) : t("sv.wall.title");
}

export function stopWall() {
  clearTimeout(wallTimer);
  wallTimer = null;
  document.body.classList.remove("wall");
}

// Large type, dark, no controls; refreshes itself every `every` seconds. The header and
// nav are hidden by the `wall` class; a failed refresh keeps the last figures and says so.
export async function renderWall(view, { api, openCalls }, every = 30) {
  document.body.classList.add("wall");
  clearTimeout(wallTimer);
  const again = () => {
    wallTimer = setTimeout(() => { if (document.body.classList.contains("wall")) renderWall(view, { api, openCalls }, every); }, every * 1000);
  };
  let data;
  let openNow;
  let me;
  try {
    // open calls now from the calls API (the live stream may not have its snapshot yet)
    [data, openNow, me] = await Promise.all([loadDashboard(api), api("/api/v1/calls?status=open&limit=500"), api("/api/v1/console/me")]);
  } catch (err) {
    if (err.status === 401) return;
    if (!view.querySelector(".wall-grid")) denied(view, err);
    else view.querySelector(".wall-stamp").textContent = t("sv.wall.stale");
    again();
    return;
  }
  const s = data.summary.summary;
  const c = charts(data);
  const open = openNow ? { total: openNow.length, p1: openNow.filter((x) => x.priority === "P1").length } : openCalls();
  const tile = (key, label, value, cls = "") => `<div class="wtile ${cls}" data-figure="${key}" data-value="${value ?? ""}"><span>${esc(label)}</span><strong>${esc(value ?? "—")}</strong></div>`;
  const tcls = (key) => (s[`${key}_target_met`] === null ? "" : s[`${key}_target_met`] ? "ok" : "bad");
  view.innerHTML = `<div class="wall-grid">
    <header class="wall-head"><h1>${esc(wallTitle(me))}</h1><span class="wall-stamp" data-every="${every}">${esc(t("sv.wall.updated", { at: fmtDateTime(new Date().toISOString()), n: every }))}</span></header>
    <div class="wall-tiles">
      ${tile("open_calls", t("sv.wall.open"), open.total, open.p1 ? "bad" : "")}
      ${tile("calls", t("sv.calls"), s.calls)}
      ${tile("answer_median_s", t("sv.answer_median"), s.answer_median_s === null ? null : secs(s.answer_median_s))}
      ${tile("answer_p90_s", t("sv.answer_p90"), s.answer_p90_s === null ? null : secs(s.answer_p90_s))}
      ${tile("answer_within_60s_pct", t("sv.within_60"), pct(s.answer_within_60s_pct), tcls("answer_within_60s"))}
      ${tile("arrival_within_limit_pct", t("sv.arrival_within"), pct(s.arrival_within_limit_pct), tcls("arrival_within_limit"))}
      ${tile("outside", t("sv.wall.outside"), `${c.outside} / ${c.homes}`, c.outside ? "bad" : "ok")}
    </div>
    <div class="wall-charts">
      ${panel("w-answer", t("sv.chart.answer"), c.hist)}
      ${panel("w-compliance", t("sv.chart.compliance"), c.line)}
      ${panel("w-coverage", t("sv.chart.coverage"), c.map)}
      ${panel("w-type", t("sv.chart.type"), c.byType)}
      ${panel("w-hour", t("sv.chart.hour"), c.byHour)}
    </div></div>`;
  again();
}
