// The "Visits" (探访) tab: welfare visits (docs/visits.md) of the operator's stations —
// due, late and missed first — filtered by station and status, the residents not visited
// this month, and cancelling a visit with a reason. The emergency banner of orders.js
// shows here too: a waiting call always comes first.
//
// renderVisits(root, ctx): ctx = { api, toast, errText, me, calls() }.
import { code, fmtDateTime, t } from "./i18n.js";
import { watchEmergencies } from "./orders.js";

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const STATUSES = ["open", "due", "late", "missed", "done", "cancelled", "all"];
const CANCELLABLE = new Set(["due", "late", "missed"]);

const vs = { status: "open", station: "", q: "", visits: [], stations: [], notVisited: null, seq: 0 };

// The local month (the policy's time zone) an instant falls in: "2026-12".
export function monthOf(iso, zone) {
  const p = Object.fromEntries(new Intl.DateTimeFormat("en-US", { timeZone: zone, year: "numeric", month: "2-digit" })
    .formatToParts(new Date(iso)).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}`;
}

// Residents with a visit whose window starts this month and none of it done: the list's own
// figure, used when the compliance report is not open to this login.
export function notVisitedFromList(visits, month, zone) {
  const byResident = new Map();
  for (const v of visits) {
    if (monthOf(v.window_start, zone) !== month || v.status === "cancelled") continue;
    const seen = byResident.get(v.resident_id) || { visit: v, done: false };
    seen.done = seen.done || v.status === "done";
    byResident.set(v.resident_id, seen);
  }
  return [...byResident.values()].filter((x) => !x.done).map((x) => x.visit);
}

// "living_alone", "risk:high_need_alone" or "follow_up", in words
function categoryLabel(category) {
  const [head, rule] = String(category).split(/:(.*)/s);
  return head === "risk" && rule ? `${code("visit_category", "risk")} · ${code("visit_risk_rule", rule)}` : code("visit_category", category);
}

// Loads answer out of order when filters change quickly: only the newest one is kept
// (an older "late" list once landed after a newer "missed" one and stayed on screen).
async function load(ctx) {
  const mine = ++vs.seq;
  const zone = (ctx.me && ctx.me.timezone) || "Asia/Shanghai";
  const month = monthOf(new Date().toISOString(), zone);
  const station = vs.station ? `&station_id=${encodeURIComponent(vs.station)}` : "";
  const [visits, all] = await Promise.all([
    ctx.api(`/api/v1/visits?status=${vs.status}${station}&limit=500`),
    ctx.api(`/api/v1/visits?status=all${station}&limit=500`),
  ]);
  const names = new Map(all.map((v) => [v.resident_id, v]));
  let notVisited = { month, source: "list", rows: notVisitedFromList(all, month, zone) };
  try { // supervisors, admins and county logins may read the compliance report
    const rep = await ctx.api(`/api/v1/reports/visits?month=${month}${station}`);
    const ids = [...new Set(rep.stations.flatMap((s) => s.residents_not_visited))];
    notVisited = { month, source: "report", rows: ids.map((id) => names.get(id) || { resident_id: id, resident_name: id, address: "" }) };
  } catch (err) {
    if (err.status !== 403) throw err;
  }
  if (mine !== vs.seq) return; // a newer load is on its way
  vs.visits = visits;
  vs.notVisited = notVisited;
}

// The service orders the visit's form opened (docs/visits.md), each a link to its detail.
function ordersHtml(v) {
  return (v.orders || []).map((o) => `<br><a class="small visit-order" data-order="${esc(o.id)}" href="#/orders/${esc(o.id)}">${esc(t("visits.order_link", { id: o.id, kind: code("service_kind", o.kind) }))}</a>`).join("");
}

function rowHtml(v, write) {
  return `<tr class="visit" data-id="${v.id}" data-status="${esc(v.status)}">
    <td><strong>${esc(v.resident_name)}</strong><br><span class="small muted">${esc(v.address)}</span></td>
    <td>${esc(categoryLabel(v.category))}</td>
    <td>${esc(vs.stationName(v.station_id))}${v.staff_id ? `<br><span class="small">${esc(v.staff_id)}</span>` : ""}</td>
    <td><time datetime="${esc(v.due_at)}">${esc(fmtDateTime(v.due_at))}</time></td>
    <td><span class="status vst-${esc(v.status)}">${esc(code("visit_status", v.status))}</span>${v.escalation_level ? ` <span class="tag esc">${esc(t("visits.escalated", { level: v.escalation_level }))}</span>` : ""}
      ${v.cancel_reason ? `<br><span class="small muted">${esc(v.cancel_reason)}</span>` : ""}${v.done_at ? `<br><span class="small muted">${esc(t("visits.done_at", { at: fmtDateTime(v.done_at) }))}</span>` : ""}${ordersHtml(v)}</td>
    <td>${CANCELLABLE.has(v.status) ? `<button type="button" class="visit-cancel" data-id="${v.id}" ${write ? "" : "disabled"}>${esc(t("visits.cancel"))}</button>` : ""}</td></tr>`;
}

function draw(root, ctx) {
  const write = ctx.me && ctx.me.role !== "supervisor";
  const words = vs.q.toLowerCase().split(/\s+/).filter(Boolean);
  const shown = vs.visits.filter((v) => words.every((w) => `${v.resident_name} ${v.address} ${v.resident_id}`.toLowerCase().includes(w)));
  root.querySelector("#vis-count").textContent = t("visits.count", { n: shown.length });
  root.querySelector("#vis-rows").innerHTML = shown.map((v) => rowHtml(v, write)).join("");
  root.querySelector("#vis-empty").hidden = shown.length > 0;
  const nv = vs.notVisited;
  root.querySelector("#vis-not-visited").innerHTML = `<h3>${esc(t("visits.not_visited", { month: nv.month, n: nv.rows.length }))}</h3>
    <p class="small muted">${esc(t(nv.source === "report" ? "visits.from_report" : "visits.from_list"))}</p>
    <ul class="not-visited">${nv.rows.map((v) => `<li data-resident="${esc(v.resident_id)}">${esc(v.resident_name)} <span class="small muted">${esc(v.address)}</span></li>`).join("")}</ul>`;
}

export async function renderVisits(root, ctx) {
  vs.stations = (await ctx.api("/api/v1/stations?limit=500")).items;
  vs.stationName = (id) => (vs.stations.find((s) => s.id === id) || {}).name || id;
  root.innerHTML = `<div class="emergency-banner banner bad" role="alert" hidden></div>
    <h2>${esc(t("visits.title"))} <span id="vis-count" class="muted"></span></h2>
    <div class="orders-tools" role="search">
      <label>${esc(t("visits.search"))} <input id="vis-search" type="search" value="${esc(vs.q)}"></label>
      <label>${esc(t("visits.filter_status"))} <select id="vis-status">${STATUSES.map((s) => `<option value="${s}" ${s === vs.status ? "selected" : ""}>${esc(code("visit_filter", s))}</option>`).join("")}</select></label>
      <label>${esc(t("visits.filter_station"))} <select id="vis-station"><option value="">${esc(t("orders.any"))}</option>
        ${vs.stations.map((s) => `<option value="${esc(s.id)}" ${s.id === vs.station ? "selected" : ""}>${esc(s.name)}</option>`).join("")}</select></label>
    </div>
    <p id="vis-msg" role="status"></p>
    <div class="visits-layout"><div><table class="visits"><thead><tr><th>${esc(t("visits.resident"))}</th><th>${esc(t("visits.category"))}</th>
      <th>${esc(t("visits.station"))}</th><th>${esc(t("visits.due"))}</th><th>${esc(t("visits.status"))}</th><th></th></tr></thead>
      <tbody id="vis-rows"></tbody></table><p id="vis-empty" class="muted" hidden>${esc(t("visits.empty"))}</p></div>
      <section id="vis-not-visited" class="panel"></section></div>`;
  watchEmergencies(root, ctx.calls);
  await load(ctx);
  draw(root, ctx);
  const tools = root.querySelector(".orders-tools");
  tools.oninput = async (e) => {
    if (e.target.id === "vis-search") { vs.q = e.target.value.trim(); draw(root, ctx); return; }
    if (e.target.id === "vis-status") vs.status = e.target.value;
    if (e.target.id === "vis-station") vs.station = e.target.value;
    try { await load(ctx); } catch (err) { root.querySelector("#vis-msg").textContent = ctx.errText(err); }
    draw(root, ctx);
  };
  root.querySelector("#vis-rows").onclick = (e) => {
    const b = e.target.closest(".visit-cancel");
    if (!b || b.disabled) return;
    const row = b.closest("tr");
    if (row.nextElementSibling && row.nextElementSibling.classList.contains("visit-cancel-row")) return;
    row.insertAdjacentHTML("afterend", `<tr class="visit-cancel-row"><td colspan="6"><form class="visit-cancel-form" data-id="${b.dataset.id}">
      <label>${esc(t("visits.cancel_reason"))} <input class="vis-reason" required maxlength="200"></label>
      <button type="submit">${esc(t("visits.cancel_confirm"))}</button></form></td></tr>`);
    row.nextElementSibling.querySelector("input").focus();
  };
  root.querySelector("#vis-rows").onsubmit = async (e) => {
    e.preventDefault();
    const form = e.target.closest(".visit-cancel-form");
    const msg = root.querySelector("#vis-msg");
    try {
      await ctx.api(`/api/v1/visits/${form.dataset.id}/cancel`, { method: "POST", body: { reason: form.querySelector(".vis-reason").value.trim() } });
      msg.textContent = t("visits.cancelled");
      await load(ctx);
    } catch (err) {
      msg.textContent = t("orders.failed", { message: ctx.errText(err) });
    }
    draw(root, ctx);
  };
}
