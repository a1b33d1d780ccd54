// The "Orders" (服务工单) tab: service orders (docs/orders.md) in the operator's scope.
// Orders never enter the call queue; while an emergency call waits unacknowledged this tab
// (and the visits tab) shows a banner leading back to it, and the alarm (alarm.js, global)
// keeps ringing whatever tab is shown.
//
// renderOrders(root, ctx, parts): ctx = { api, toast, errText, me, calls() }.
import { actorLabel, code, codes, fmtDateTime, t } from "./i18n.js";

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
export const ORDER_STATUSES = ["created", "assigned", "accepted", "started", "done", "confirmed", "closed", "cancelled"];
const FINISHED = new Set(["closed", "cancelled"]);
// action → the statuses it applies to (dispatcher/orders/lifecycle.py)
const ACTIONS = {
  assign: ["created", "assigned"],
  confirm: ["done"],
  close: ["confirmed"],
  cancel: ["created", "assigned", "accepted", "started", "done", "confirmed"],
};
const UNACKED = new Set(["open", "assigned"]);

const st = {
  orders: [],
  catalogue: null,
  providers: [],
  stations: [],
  names: new Map(), // resident id → { name, address } (the list's rows and the form's hits)
  hits: [], // the new-order form's resident search results
  filters: { status: "active", kind: "", assignee: "", q: "" },
  selected: null,
  form: null, // "new" while the new-order form is shown
  timeline: null, // { id, version, rows, error } of the order shown (from the audit log)
  ctx: null,
};

// ---------------------------------------------------------------- emergency banner

// The open emergency calls nobody acknowledged yet, P1 first: shown above the orders and
// visits so an operator busy with everyday work is led back to the call queue.
export function waitingEmergencies(calls) {
  const rank = { P1: 1, P2: 2, P3: 3, P4: 4 };
  return calls.filter((c) => UNACKED.has(c.status)).sort((a, b) => (rank[a.priority] || 9) - (rank[b.priority] || 9) || a.id - b.id);
}

export function drawEmergencyBanner(box, calls) {
  const waiting = waitingEmergencies(calls);
  box.hidden = waiting.length === 0;
  if (!waiting.length) { box.innerHTML = ""; return; }
  const first = waiting[0];
  const html = `<strong>${esc(t("orders.emergency_banner", { n: waiting.length }))}</strong>
    <a href="#/call/${first.id}" class="emergency-link" data-call="${first.id}">${esc(t("orders.emergency_open", { priority: first.priority, name: first.resident_name || first.address || first.home_id || "" }))}</a>`;
  if (box.dataset.html !== html) { box.innerHTML = html; box.dataset.html = html; }
}

// keeps every banner under a shown tab current (the calls arrive over the stream in app.js)
let bannerTimer = null;
export function watchEmergencies(root, calls) {
  const box = root.querySelector(".emergency-banner");
  drawEmergencyBanner(box, calls());
  clearInterval(bannerTimer);
  bannerTimer = setInterval(() => {
    document.querySelectorAll(".view:not([hidden]) .emergency-banner").forEach((b) => drawEmergencyBanner(b, calls()));
  }, 500);
}

// ---------------------------------------------------------------- data

async function allPages(api, path) {
  const items = [];
  for (let offset = 0; ; offset += 500) {
    const page = await api(`${path}${path.includes("?") ? "&" : "?"}limit=500&offset=${offset}`);
    items.push(...page.items);
    if (items.length >= page.total || !page.items.length) return items;
  }
}

// the list answers with each resident's name and address; an action's answer does not
function remember(orders) {
  for (const o of orders) if (o.resident_name) st.names.set(o.resident_id, { name: o.resident_name, address: o.address });
  return orders;
}

async function loadAll(ctx) {
  const { api } = ctx;
  const [orders, catalogue, providers, stations] = await Promise.all([
    api("/api/v1/orders?status=all&limit=500"),
    st.catalogue ? Promise.resolve(st.catalogue) : api("/api/v1/services"),
    api("/api/v1/providers"),
    allPages(api, "/api/v1/stations"),
  ]);
  st.orders = remember(orders);
  st.catalogue = catalogue;
  st.providers = providers;
  st.stations = stations;
}

const stationName = (id) => (st.stations.find((s) => s.id === id) || {}).name || id || "";
const providerName = (id) => (st.providers.find((p) => p.id === id) || {}).name || id || "";

function assigneeOf(o) {
  if (o.provider_id) return { key: `provider:${o.provider_id}`, label: t("orders.provider_named", { name: providerName(o.provider_id) }) };
  if (o.assignee_station_id) return { key: `station:${o.assignee_station_id}`, label: t("orders.station_named", { name: stationName(o.assignee_station_id) }) };
  return { key: "", label: t("orders.unassigned") };
}

function residentOf(o) {
  const known = st.names.get(o.resident_id);
  return known || { name: o.resident_id, address: o.home_id };
}

function matches(o) {
  const f = st.filters;
  if (f.status === "active" ? FINISHED.has(o.status) : f.status && f.status !== "all" && o.status !== f.status) return false;
  if (f.kind && o.kind !== f.kind) return false;
  if (f.assignee && assigneeOf(o).key !== f.assignee) return false;
  if (f.q) {
    const who = residentOf(o);
    const hay = `${who.name} ${who.address} ${o.resident_id} ${o.home_id} ${o.id}`.toLowerCase();
    if (!f.q.toLowerCase().split(/\s+/).filter(Boolean).every((w) => hay.includes(w))) return false;
  }
  return true;
}

// ---------------------------------------------------------------- drawing

function options(values, chosen, label) {
  return values.map((v) => `<option value="${esc(v)}" ${v === chosen ? "selected" : ""}>${esc(label(v))}</option>`).join("");
}

function toolsHtml() {
  const f = st.filters;
  const kinds = Object.keys(st.catalogue.kinds);
  return `<label>${esc(t("orders.search"))} <input id="ord-search" type="search" value="${esc(f.q)}" placeholder="${esc(t("orders.search_hint"))}"></label>
    <label>${esc(t("orders.filter_status"))} <select id="ord-status">
      <option value="active" ${f.status === "active" ? "selected" : ""}>${esc(t("orders.status_active"))}</option>
      <option value="all" ${f.status === "all" ? "selected" : ""}>${esc(t("orders.status_all"))}</option>
      ${options(ORDER_STATUSES, f.status, (s) => code("order_status", s))}</select></label>
    <label>${esc(t("orders.filter_kind"))} <select id="ord-kind"><option value="">${esc(t("orders.any"))}</option>${options(kinds, f.kind, (k) => code("service_kind", k))}</select></label>
    <label>${esc(t("orders.filter_assignee"))} <select id="ord-assignee">${assigneeOptions()}</select></label>
    <button type="button" id="ord-new" ${canWrite(st.me) ? "" : "disabled"}>${esc(t("orders.new"))}</button>`;
}

// the providers and stations the orders name (the menu follows the list as orders come and move)
function assigneeOptions() {
  const f = st.filters;
  const named = new Map(st.orders.map((o) => assigneeOf(o)).filter((a) => a.key).map((a) => [a.key, a.label]));
  if (f.assignee && !named.has(f.assignee)) named.set(f.assignee, f.assignee.split(":").slice(1).join(":"));
  return `<option value="">${esc(t("orders.any"))}</option>${[...named.entries()].sort((a, b) => a[1].localeCompare(b[1]))
    .map(([k, l]) => `<option value="${esc(k)}" ${k === f.assignee ? "selected" : ""}>${esc(l)}</option>`).join("")}`;
}

function canWrite(me) { return me && (me.role === "operator" || me.role === "admin"); }

function rowHtml(o) {
  const who = residentOf(o);
  const when = o.booked_for || o.created_at;
  return `<li class="order${o.id === st.selected ? " selected" : ""}" data-id="${o.id}" data-status="${esc(o.status)}">
    <button type="button" class="order-btn" data-id="${o.id}" aria-pressed="${o.id === st.selected}">
      <span class="order-no">${esc(t("orders.number", { id: o.id }))}</span>
      <span class="order-kind">${esc(code("service_kind", o.kind))}</span>
      <span class="order-who">${esc(who.name)}</span>
      <span class="order-addr muted">${esc(who.address)}</span>
      <span class="order-assignee">${esc(assigneeOf(o).label)}</span>
      <span class="status ost-${esc(o.status)}">${esc(code("order_status", o.status))}</span>
      <span class="small muted"><time datetime="${esc(when)}">${esc(fmtDateTime(when))}</time></span>
      ${o.breached.length ? `<span class="tag bad">${esc(t("orders.breached"))}</span>` : ""}
    </button></li>`;
}

function drawList(root) {
  const menu = root.querySelector("#ord-assignee");
  const wanted = assigneeOptions();
  if (menu && menu.dataset.html !== wanted) { menu.innerHTML = wanted; menu.dataset.html = wanted; }
  const shown = st.orders.filter(matches);
  root.querySelector("#ord-count").textContent = shown.length === st.orders.length
    ? t("orders.count", { n: shown.length }) : t("orders.count_filtered", { n: shown.length, total: st.orders.length });
  root.querySelector("#ord-list").innerHTML = shown.map(rowHtml).join("");
  root.querySelector("#ord-empty").hidden = shown.length > 0;
}

// route_reasons: the decision's codes, then [type, id, code] for each candidate passed over
function reasonsHtml(o) {
  const mine = o.route_reasons.filter((r) => typeof r === "string");
  const passed = o.route_reasons.filter((r) => Array.isArray(r) && r.length === 3);
  const name = ([type, id]) => (type === "provider" ? t("orders.provider_named", { name: providerName(id) }) : t("orders.station_named", { name: stationName(id) }));
  return `<p class="order-reasons"><strong>${esc(t("orders.route"))}</strong> ${esc(assigneeOf(o).label)} — <span class="route-codes">${esc(codes("order_reason", mine))}</span></p>
    ${passed.length ? `<details><summary>${esc(t("orders.passed_over", { n: passed.length }))}</summary><ul class="passed-over">${passed.map((p) => `<li>${esc(name(p))}: ${esc(code("order_reason", p[2]))}</li>`).join("")}</ul></details>` : ""}`;
}

// The order's steps from the audit log (GET /api/v1/orders/{id}/timeline: every order_*
// row, who and when, phone numbers left out by the server). Fetched when another order
// is shown or the order moved (its version), not on every redraw: each read is logged.
function stepText(row) {
  const d = row.detail || {};
  const parts = [];
  if (d.source) parts.push(t("orders.tl_source", { source: code("order_source", d.source) }));
  if (d.visit_id) parts.push(t("orders.tl_visit", { id: d.visit_id }));
  if (d.from && d.to) parts.push(t("orders.tl_from_to", { from: code("order_status", d.from), to: code("order_status", d.to) }));
  if (d.provider_id) parts.push(t("orders.tl_provider", { name: providerName(d.provider_id) }));
  if (d.station_id || d.assignee_station_id) parts.push(t("orders.tl_station", { name: stationName(d.station_id || d.assignee_station_id) }));
  if (d.staff_id) parts.push(t("orders.tl_staff", { id: d.staff_id }));
  if (Array.isArray(d.reasons) && d.reasons.length) parts.push(codes("order_reason", d.reasons));
  if (typeof d.distance_km === "number" && d.distance_km > 0) parts.push(t("orders.tl_distance", { km: d.distance_km }));
  if (typeof d.duration_s === "number") parts.push(t("orders.duration", { min: Math.round(d.duration_s / 60) }));
  if (d.not_done) parts.push(t("orders.not_done"));
  else if (d.satisfaction) parts.push(t("orders.satisfaction_is", { n: d.satisfaction }));
  if (d.level) parts.push(t("orders.tl_level", { level: code("order_level", d.level), at: d.due_at ? fmtDateTime(d.due_at) : "" }));
  if (d.reason) parts.push(t("orders.tl_reason", { text: d.reason }));
  if (d.notes) parts.push(t("orders.tl_notes", { text: d.notes }));
  if (d.note) parts.push(t("orders.tl_notes", { text: d.note }));
  return parts.join(" · ");
}

function timelineHtml(o) {
  const tl = st.timeline;
  if (!tl || tl.id !== o.id) return `<p class="muted order-timeline-state">${esc(t("orders.tl_loading"))}</p>`;
  if (tl.error) return `<p class="bad order-timeline-state">${esc(t("orders.tl_failed", { message: tl.error }))}</p>`;
  if (!tl.rows.length) return `<p class="muted order-timeline-state">${esc(t("orders.tl_empty"))}</p>`;
  return `<ol class="timeline order-timeline">${tl.rows.map((r) => {
    const text = stepText(r);
    return `<li data-kind="${esc(r.kind)}" data-seq="${esc(r.seq)}"><time datetime="${esc(r.at)}">${esc(fmtDateTime(r.at))}</time>
    <strong>${esc(code("order_audit", r.kind))}</strong> <span class="tl-actor">${esc(actorLabel(r.actor))}</span>${text ? ` <span>${esc(text)}</span>` : ""}</li>`;
  }).join("")}</ol>`;
}

async function loadTimeline(root, ctx, o) {
  if (!o || (st.timeline && st.timeline.id === o.id && st.timeline.version === o.version && !st.timeline.error)) return;
  st.timeline = { id: o.id, version: o.version, rows: [], loading: true };
  try {
    const rows = await ctx.api(`/api/v1/orders/${o.id}/timeline`);
    if (st.timeline.id !== o.id) return; // another order was chosen meanwhile
    st.timeline = { id: o.id, version: o.version, rows };
  } catch (err) {
    if (st.timeline.id !== o.id) return;
    st.timeline = { id: o.id, version: o.version, rows: [], error: ctx.errText(err) };
  }
  const box = root.querySelector("#ord-timeline");
  const shown = st.orders.find((x) => x.id === st.selected);
  if (box && shown && shown.id === o.id) box.innerHTML = timelineHtml(shown);
}

function actionsHtml(o) {
  const write = canWrite(st.me);
  return Object.entries(ACTIONS).map(([a, statuses]) => `<button type="button" class="ord-act ord-act-${a}" data-action="${a}"
    ${write && statuses.includes(o.status) ? "" : "disabled"}>${esc(t(`orders.action_${a}`))}</button>`).join("");
}

function detailHtml(o) {
  const who = residentOf(o);
  const entry = st.catalogue.kinds[o.kind];
  return `<div class="order-head"><h3>${esc(t("orders.number", { id: o.id }))} · ${esc(code("service_kind", o.kind))}</h3>
      <span class="status ost-${esc(o.status)}">${esc(code("order_status", o.status))}</span></div>
    <p><strong>${esc(who.name)}</strong> · ${esc(who.address)}</p>
    <p class="small">${o.booked_for ? `${esc(t("orders.booked_for"))} <time>${esc(fmtDateTime(o.booked_for))}</time> · ` : ""}${esc(t("orders.price", { price: o.price_cny, unit: code("service_unit", entry ? entry.unit : "visit") }))}${o.subsidised ? ` · ${esc(t("orders.subsidised"))}` : ""}</p>
    ${o.request_notes ? `<p class="order-notes">${esc(o.request_notes)}</p>` : ""}
    ${o.visit_id ? `<p class="small order-from-visit" data-visit="${esc(o.visit_id)}"><a href="#/visits">${esc(t("orders.from_visit", { id: o.visit_id }))}</a></p>` : ""}
    ${o.breached.length ? `<p class="bad">${esc(t("orders.breached_levels", { levels: codes("order_level", o.breached) }))}</p>` : ""}
    ${reasonsHtml(o)}
    <div class="order-actions">${actionsHtml(o)}</div>
    <div id="ord-action-form"></div>
    <h4>${esc(t("orders.timeline"))}</h4><div id="ord-timeline">${timelineHtml(o)}</div>`;
}

function drawDetail(root) {
  const pane = root.querySelector("#ord-detail");
  if (st.form === "new") return;
  const o = st.orders.find((x) => x.id === st.selected);
  pane.innerHTML = o ? detailHtml(o) : `<p class="muted">${esc(t("orders.none_selected"))}</p>`;
  if (o && st.ctx) loadTimeline(root, st.ctx, o);
}

// ---------------------------------------------------------------- action forms

function assignFormHtml(o) {
  const suggested = assigneeOf(o).key;
  const targets = [
    ...st.providers.filter((p) => p.active).map((p) => [`provider:${p.id}`, t("orders.provider_named", { name: p.name })]),
    ...st.stations.map((s) => [`station:${s.id}`, t("orders.station_named", { name: s.name })]),
  ];
  const suggestion = suggested
    ? t("orders.suggested", { name: assigneeOf(o).label, why: codes("order_reason", o.route_reasons.filter((r) => typeof r === "string")) })
    : t("orders.no_suggestion");
  return `<form id="ord-assign-form" class="ord-form"><p class="small">${esc(suggestion)}</p>
    <label>${esc(t("orders.assign_to"))} <select id="ord-target">${targets.map(([k, l]) => `<option value="${esc(k)}" ${k === suggested ? "selected" : ""}>${esc(l)}${k === suggested ? ` ★ ${esc(t("orders.suggested_mark"))}` : ""}</option>`).join("")}</select></label>
    <label>${esc(t("orders.staff_id"))} <input id="ord-staff" value="${esc(o.staff_id || "")}" placeholder="${esc(t("orders.optional"))}"></label>
    <button type="submit">${esc(t("orders.action_assign"))}</button></form>`;
}

function formHtml(action, o) {
  if (action === "assign") return assignFormHtml(o);
  if (action === "cancel") {
    return `<form id="ord-cancel-form" class="ord-form"><label>${esc(t("orders.cancel_reason"))} <input id="ord-reason" required maxlength="2000"></label>
      <button type="submit">${esc(t("orders.action_cancel"))}</button></form>`;
  }
  if (action === "confirm") {
    return `<form id="ord-confirm-form" class="ord-form"><label>${esc(t("orders.satisfaction"))} <select id="ord-satisfaction">
      ${[5, 4, 3, 2, 1].map((n) => `<option value="${n}">${esc(t("orders.satisfaction_is", { n }))}</option>`).join("")}
      <option value="not_done">${esc(t("orders.not_done"))}</option></select></label>
      <label>${esc(t("orders.note"))} <input id="ord-note" maxlength="2000"></label>
      <button type="submit">${esc(t("orders.action_confirm"))}</button></form>`;
  }
  return "";
}

function bodyOf(action, form) {
  if (action === "assign") {
    const [type, id] = form.querySelector("#ord-target").value.split(/:(.*)/s);
    const body = type === "provider" ? { provider_id: id } : { station_id: id };
    const staff = form.querySelector("#ord-staff").value.trim();
    if (staff) body.staff_id = staff;
    return body;
  }
  if (action === "cancel") return { reason: form.querySelector("#ord-reason").value.trim() };
  if (action === "confirm") {
    const v = form.querySelector("#ord-satisfaction").value;
    const note = form.querySelector("#ord-note").value.trim();
    return { ...(v === "not_done" ? { not_done: true } : { satisfaction: Number(v) }), ...(note ? { note } : {}) };
  }
  return {};
}

async function act(root, ctx, action, body) {
  const msg = root.querySelector("#ord-msg");
  try {
    const o = await ctx.api(`/api/v1/orders/${st.selected}/${action}`, { method: "POST", body });
    st.orders = st.orders.map((x) => (x.id === o.id ? o : x));
    msg.textContent = t("orders.done_action", { action: t(`orders.action_${action}`) });
  } catch (err) {
    msg.textContent = t("orders.failed", { message: ctx.errText(err) });
    if (err.status === 409) await refresh(ctx);
  }
  drawList(root);
  drawDetail(root);
}

// ---------------------------------------------------------------- the new-order form

// A local date-time typed by the operator, read in the station's time zone (not the PC's).
export function zonedToIso(value, zone) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})$/.exec(value || "");
  if (!m) return null;
  const asUtc = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
  const offsetAt = (ms) => {
    const p = Object.fromEntries(new Intl.DateTimeFormat("en-US", {
      timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    }).formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
    return Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute) - ms;
  };
  const guess = asUtc - offsetAt(asUtc);
  return new Date(asUtc - offsetAt(guess)).toISOString();
}

function newFormHtml() {
  const kinds = Object.keys(st.catalogue.kinds);
  return `<form id="ord-new-form" class="ord-form"><h3>${esc(t("orders.new_title"))}</h3>
    <label>${esc(t("orders.resident_search"))} <input id="ord-res-q" type="search" autocomplete="off" placeholder="${esc(t("orders.resident_hint"))}"></label>
    <ul id="ord-res-hits" class="res-hits"></ul>
    <p id="ord-res-chosen" class="small" data-id=""></p>
    <label>${esc(t("orders.kind"))} <select id="ord-new-kind">${kinds.map((k) => `<option value="${esc(k)}">${esc(code("service_kind", k))} · ${esc(t("orders.price", { price: st.catalogue.kinds[k].price_cny, unit: code("service_unit", st.catalogue.kinds[k].unit) }))}</option>`).join("")}</select></label>
    <label>${esc(t("orders.booked_for"))} <input id="ord-new-when" type="datetime-local"> <span class="small muted">${esc(t("orders.booked_hint"))}</span></label>
    <label>${esc(t("orders.notes"))} <textarea id="ord-new-notes" maxlength="2000" rows="3"></textarea></label>
    <p id="ord-new-msg" class="error" role="alert"></p>
    <button type="submit" id="ord-new-submit">${esc(t("orders.book"))}</button>
    <button type="button" id="ord-new-cancel">${esc(t("orders.back"))}</button></form>`;
}

// residents in scope by name, address or id: name and address only (the server searches)
let searchSeq = 0;
async function residentHits(api, q) {
  const mine = ++searchSeq;
  const hits = q.trim() ? await api(`/api/v1/orders/residents?q=${encodeURIComponent(q.trim().slice(0, 100))}`) : [];
  return mine === searchSeq ? hits : null; // a newer search won
}

function mountNewForm(root, ctx) {
  st.form = "new";
  const pane = root.querySelector("#ord-detail");
  pane.innerHTML = newFormHtml();
  const chosen = pane.querySelector("#ord-res-chosen");
  pane.querySelector("#ord-res-q").oninput = async (e) => {
    let hits;
    try { hits = await residentHits(ctx.api, e.target.value); } catch (err) {
      pane.querySelector("#ord-new-msg").textContent = t("orders.failed", { message: ctx.errText(err) });
      return;
    }
    if (hits === null) return;
    st.hits = hits;
    pane.querySelector("#ord-res-hits").innerHTML = hits.map((r) => `<li><button type="button" class="res-hit" data-id="${esc(r.id)}">
      <strong>${esc(r.name)}</strong> <span class="muted">${esc(r.address)}</span></button></li>`).join("");
  };
  pane.querySelector("#ord-res-hits").onclick = (e) => {
    const b = e.target.closest(".res-hit");
    const r = b && st.hits.find((x) => x.id === b.dataset.id);
    if (!r) return;
    st.names.set(r.id, { name: r.name, address: r.address });
    chosen.dataset.id = r.id;
    chosen.textContent = t("orders.resident_chosen", { name: r.name, address: r.address });
    pane.querySelector("#ord-res-hits").innerHTML = "";
  };
  pane.querySelector("#ord-new-cancel").onclick = () => { st.form = null; drawDetail(root); };
  pane.querySelector("#ord-new-form").onsubmit = async (e) => {
    e.preventDefault();
    const msg = pane.querySelector("#ord-new-msg");
    if (!chosen.dataset.id) { msg.textContent = t("orders.pick_resident"); return; }
    const when = pane.querySelector("#ord-new-when").value;
    const booking = { resident_id: chosen.dataset.id, kind: pane.querySelector("#ord-new-kind").value, notes: pane.querySelector("#ord-new-notes").value.trim() };
    if (when) {
      const iso = zonedToIso(when, (ctx.me && ctx.me.timezone) || "Asia/Shanghai");
      if (!iso) { msg.textContent = t("orders.bad_time"); return; }
      booking.booked_for = iso;
    }
    try {
      const o = await ctx.api("/api/v1/orders", { method: "POST", body: booking });
      st.form = null;
      st.orders = [o, ...st.orders.filter((x) => x.id !== o.id)];
      st.selected = o.id;
      history.replaceState(null, "", `#/orders/${o.id}`);
      drawList(root);
      drawDetail(root);
      root.querySelector("#ord-msg").textContent = t("orders.booked", { id: o.id });
    } catch (err) {
      msg.textContent = t("orders.failed", { message: ctx.errText(err) });
    }
  };
  pane.querySelector("#ord-res-q").focus();
}

// ---------------------------------------------------------------- the tab

async function refresh(ctx) {
  st.orders = remember(await ctx.api("/api/v1/orders?status=all&limit=500"));
}

export async function renderOrders(root, ctx, parts = []) {
  st.me = ctx.me;
  st.ctx = ctx;
  if (parts[0] && /^\d+$/.test(parts[0])) st.selected = Number(parts[0]);
  root.innerHTML = `<div class="emergency-banner banner bad" role="alert" hidden></div>
    <h2>${esc(t("orders.title"))} <span id="ord-count" class="muted"></span></h2>
    <p class="small muted">${esc(t("orders.not_in_queue"))}</p>
    <div class="orders-tools" role="search"></div>
    <p id="ord-msg" role="status"></p>
    <div class="orders-layout"><div><ol id="ord-list" class="order-list"></ol><p id="ord-empty" class="muted" hidden>${esc(t("orders.empty"))}</p></div>
      <section id="ord-detail" class="detail order-detail" aria-live="polite"></section></div>`;
  watchEmergencies(root, ctx.calls);
  await loadAll(ctx);
  const tools = root.querySelector(".orders-tools");
  const drawTools = () => { tools.innerHTML = toolsHtml(); };
  drawTools();
  tools.oninput = (e) => {
    if (e.target.id === "ord-search") st.filters.q = e.target.value.trim();
    else if (e.target.id === "ord-status") st.filters.status = e.target.value;
    else if (e.target.id === "ord-kind") st.filters.kind = e.target.value;
    else if (e.target.id === "ord-assignee") st.filters.assignee = e.target.value;
    drawList(root);
  };
  tools.onclick = (e) => { if (e.target.id === "ord-new") mountNewForm(root, ctx); };
  root.querySelector("#ord-list").onclick = (e) => {
    const b = e.target.closest(".order-btn");
    if (!b) return;
    st.selected = Number(b.dataset.id);
    st.form = null;
    history.replaceState(null, "", `#/orders/${st.selected}`);
    drawList(root);
    drawDetail(root);
  };
  const pane = root.querySelector("#ord-detail");
  pane.onclick = async (e) => {
    const b = e.target.closest(".ord-act");
    if (!b || b.disabled) return;
    const o = st.orders.find((x) => x.id === st.selected);
    const html = formHtml(b.dataset.action, o);
    if (html) pane.querySelector("#ord-action-form").innerHTML = html;
    else await act(root, ctx, b.dataset.action, {});
  };
  pane.onsubmit = async (e) => {
    const form = e.target.closest("form");
    if (!form || form.id === "ord-new-form") return;
    e.preventDefault();
    const action = form.id.replace(/^ord-/, "").replace(/-form$/, "");
    await act(root, ctx, action, bodyOf(action, form));
  };
  st.form = null;
  drawList(root);
  drawDetail(root);
  // orders are not on the calls' stream: the phone's accept / start / done show up here
  // within 15 s; a form being filled in is never redrawn under the operator's hands
  clearInterval(st.timer);
  st.timer = setInterval(async () => {
    if (root.hidden || !root.isConnected) return;
    try { await refresh(ctx); } catch { return; }
    drawList(root);
    const busy = st.form === "new" || root.querySelector("#ord-action-form form");
    if (!busy) drawDetail(root);
  }, 15000);
}
