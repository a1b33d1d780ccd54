// The operator console. Plain ES modules, no build step, nothing from the internet.
//
// State flows one way: the server pushes call changes over SSE (/api/v1/stream), the
// queue is re-rendered from `state.calls`, and actions go through the calls API. The
// page never polls for calls (only the dispatch-stall banner, stall.js, asks every few
// seconds); a lost connection is shown at once, and the stream resumes from the last
// event id so nothing that happened meanwhile is missed.
import { LANGS, actorLabel, applyStatic, code, codes, currentLang, fmtDateTime, fmtDuration, fmtTime, has, loadLang, preferredLang, setZone, t } from "./i18n.js";
import { eventIcon } from "./icons.js";
import { drawMap, sparkline } from "./map.js";
import { canOversee, renderDashboard, renderDevices, renderReview, renderWall, stopWall } from "./supervisor.js";
import { startStallWatch, stopStallWatch } from "./stall.js";
import { mountImporter } from "./importer.js";
import { setMuted, startAlarm, stopAlarm, unlock as unlockAudio, updateAlarm } from "./alarm.js";
import { createQueueTools, handleQueueClick, queueHtml } from "./queue.js";
import { renderOrders } from "./orders.js";
import { renderVisits } from "./visits.js";

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const OPEN = new Set(["open", "assigned", "acknowledged", "dispatched", "en_route", "on_scene"]);
const PRIO = { P1: 1, P2: 2, P3: 3, P4: 4 };

const state = {
  token: sessionStorage.getItem("carecall.token"),
  me: null,
  calls: new Map(), // id → call (open calls in scope)
  selected: null, // call id
  detail: null, // { call, ctx }
  seen: new Set(JSON.parse(sessionStorage.getItem("carecall.seen") || "[]")), // P1 calls the operator has looked at
  es: null,
  lastEventId: null,
  connected: false,
  everConnected: false,
  lastMessageAt: 0,
  muted: false,
  view: "queue",
};

// ---------------------------------------------------------------- HTTP

class ApiError extends Error {
  constructor(status, detail) {
    super(
      typeof detail === "string"
        ? detail
        : Array.isArray(detail) // FastAPI's validation errors: [{loc, msg, type}, …]
          ? detail.map((d) => (d && d.msg) || "").join("; ") || `HTTP ${status}`
          : (detail && detail.message) || `HTTP ${status}`,
    );
    this.status = status;
    this.detail = detail;
  }
}

async function api(path, { method = "GET", body, form } = {}) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let payload;
  if (form) {
    headers["Content-Type"] = "application/x-www-form-urlencoded";
    payload = new URLSearchParams(form).toString();
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body: payload });
  if (r.status === 401 && !form) {
    signOut(t("conn.signed_out"));
    throw new ApiError(401, "signed out");
  }
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) {
    const err = new ApiError(r.status, data && data.detail !== undefined ? data.detail : data);
    err.retryAfter = Number(r.headers.get("Retry-After")) || null;
    throw err;
  }
  return data;
}

function errText(err) {
  const d = err.detail;
  if (Array.isArray(d)) return d.map((e) => e.msg || JSON.stringify(e)).join("; ");
  if (d && typeof d === "object") return d.message || JSON.stringify(d);
  return err.message;
}

// ---------------------------------------------------------------- flash (sound: alarm.js)

function markSeen(id) {
  if (!state.seen.has(id)) {
    state.seen.add(id);
    sessionStorage.setItem("carecall.seen", JSON.stringify([...state.seen].slice(-500)));
  }
}

// ---------------------------------------------------------------- live stream

// EventSource cannot send the bearer token, and a token in a URL would end up in logs:
// each stream opens with a one-minute ticket that is good for this stream only.
async function connect() {
  if (state.es && state.es.close) state.es.close();
  const marker = {};
  state.es = marker;
  let ticket;
  try {
    ticket = (await api("/api/v1/auth/stream-ticket", { method: "POST" })).ticket;
  } catch (err) {
    if (state.es !== marker || !state.token) return; // signed out meanwhile
    setConnected(false);
    setTimeout(() => { if (state.es === marker && state.token) connect(); }, 2000);
    return;
  }
  if (state.es !== marker || !state.token) return;
  const q = new URLSearchParams({ ticket });
  if (state.lastEventId !== null) q.set("last_event_id", state.lastEventId);
  const es = new EventSource(`/api/v1/stream?${q}`);
  state.es = es;
  const seenMessage = (e) => {
    state.lastMessageAt = Date.now();
    if (e.lastEventId) state.lastEventId = e.lastEventId;
    if (!state.connected) setConnected(true);
  };
  es.addEventListener("snapshot", (e) => {
    seenMessage(e);
    const data = JSON.parse(e.data);
    state.calls = new Map(data.calls.map((c) => [c.id, c]));
    renderQueue();
    refreshFailures(true);
    refreshDetailIfChanged(data.calls.map((c) => c.id), true);
  });
  es.addEventListener("calls", (e) => {
    seenMessage(e);
    const data = JSON.parse(e.data);
    for (const c of data.calls) {
      if (OPEN.has(c.status)) state.calls.set(c.id, c);
      else state.calls.delete(c.id);
    }
    for (const id of data.gone) state.calls.delete(id);
    renderQueue();
    refreshDetailIfChanged([...data.calls.map((c) => c.id), ...data.gone]);
    boardLive();
  });
  es.addEventListener("ping", (e) => { seenMessage(e); refreshFailures(); });
  es.addEventListener("bye", () => signOut(t("conn.signed_out")));
  // the server ends streams on purpose now and then: resume at once, no outage shown
  es.addEventListener("reconnect", () => { if (state.es === es) connect(); });
  es.onerror = () => {
    setConnected(false);
    if (es.readyState === EventSource.CLOSED && state.es === es) {
      // the browser gave up (e.g. a proxy answered 502): come back ourselves
      setTimeout(() => { if (state.es === es && state.token) connect(); }, 2000);
    }
  };
}

function setConnected(ok) {
  const banner = $("#conn-banner");
  const wasLost = state.everConnected && !state.connected;
  state.connected = ok;
  $("#conn-state").textContent = ok ? t("conn.live") : t("conn.connecting");
  $("#conn-state").className = `conn ${ok ? "ok" : "bad"}`;
  if (ok) {
    state.everConnected = true;
    if (wasLost) {
      banner.textContent = t("conn.back");
      banner.className = "banner ok";
      banner.hidden = false;
      banner.dataset.state = "back";
      setTimeout(() => { if (state.connected && banner.dataset.state === "back") banner.hidden = true; }, 4000);
    } else {
      banner.hidden = true;
      banner.dataset.state = "";
    }
  } else if (state.everConnected) {
    banner.textContent = t("conn.lost");
    banner.className = "banner bad";
    banner.dataset.state = "lost";
    banner.hidden = false;
  }
}

// A connection that silently died (no RST, no heartbeat) must not look live.
setInterval(() => {
  if (state.connected && state.lastMessageAt && Date.now() - state.lastMessageAt > 20000) {
    setConnected(false);
    connect();
  }
}, 5000);

// ---------------------------------------------------------------- queue

function sortedCalls() {
  return [...state.calls.values()].sort(
    (a, b) => (PRIO[a.priority] || 9) - (PRIO[b.priority] || 9) || eventStart(a) - eventStart(b) || a.id - b.id,
  );
}

function eventStart(c) {
  const first = c.events && c.events.length ? c.events[0].received_at : c.opened_at;
  return new Date(first || c.opened_at || 0).getTime();
}

function eventLabel(type) {
  return has(`event.${type}`) ? t(`event.${type}`) : t("event.other", { type });
}

function callTypes(c) {
  const types = [];
  for (const e of c.events || []) if (!types.includes(e.type)) types.push(e.type);
  return types.length ? types : [c.event_class];
}

// The queue's filters, grouping and incident lines live in queue.js; this draws one call.
let queueTools = null;
let visible = []; // the calls the queue shows now (filtered), in order

function renderQueue() {
  const list = $("#queue-list");
  const calls = sortedCalls();
  if (state.lastEventId !== null) updateAlarm(calls); // the stream has spoken: tones for what is new
  if (!queueTools) queueTools = createQueueTools($("#queue-tools"), { t, eventLabel, onChange: renderQueue });
  queueTools.sync(calls);
  const { html, shown } = queueHtml(calls, { t, eventLabel, rowHtml });
  visible = shown;
  $("#queue-count").textContent = shown.length === calls.length ? t("queue.count", { n: calls.length }) : t("queue.count_filtered", { n: shown.length, total: calls.length });
  $("#queue-empty").hidden = calls.length > 0;
  $("#queue-none-match").hidden = !(calls.length > 0 && shown.length === 0);
  list.innerHTML = html;
  tick();
}

function rowHtml(c, { cls = "", extra = "" }) {
  const r = c.resident;
  const types = callTypes(c);
  const unseen = c.priority === "P1" && !state.seen.has(c.id) && (c.status === "open" || c.status === "assigned");
  const who = [
    c.incident ? esc(c.incident.area_name) : esc(c.resident_name || t("queue.unknown_resident")),
    r ? esc(t("queue.age", { age: r.age })) : "",
    r ? esc(t("queue.capacity", { level: r.capacity_level })) : "",
    r && r.living_alone ? `<span class="tag alone">${esc(t("queue.alone"))}</span>` : "",
  ].filter(Boolean).join(" · ");
  return `<li class="call${cls} prio-${esc(c.priority)}${unseen ? " flash" : ""}${c.id === state.selected ? " selected" : ""}" data-id="${c.id}">
    <button type="button" class="call-btn" data-id="${c.id}" aria-pressed="${c.id === state.selected}"
      aria-label="${esc(`${c.priority} ${types.map(eventLabel).join(", ")} ${c.resident_name || ""} ${t(`status.${c.status}`)}`)}">
      <span class="prio" title="${esc(code("priority", c.priority))}">${esc(c.priority)}</span>
      <span class="type">${eventIcon(types[0])}<span>${esc(types.map(eventLabel).join(" + "))}</span>${unseen ? `<span class="tag new">${esc(t("queue.new"))}</span>` : ""}${c.escalation_level > 0 ? `<span class="tag esc">${esc(t("queue.escalated"))}</span>` : ""}</span>
      <span class="who">${who}</span>
      <span class="addr">${esc(c.address || c.home_id)}</span>
      <span class="station">${esc(c.station_name || c.station_id || "")} <span class="muted">(${esc(c.tier ? t(`tier.${c.tier}`) : "")})</span></span>
      <span class="status st-${esc(c.status)}">${esc(t(`status.${c.status}`))}</span>
      <span class="clocks"><span class="clock" title="${esc(t("queue.since"))}" data-since="${eventStart(c)}"></span>
        ${c.next_escalation_at ? `<span class="esc-clock" title="${esc(t("queue.escalates_in"))}" data-until="${esc(c.next_escalation_at)}"></span>` : ""}</span>
    </button>${extra}</li>`;
}

function tick() {
  const now = Date.now();
  document.querySelectorAll("[data-since]").forEach((el) => {
    el.textContent = fmtDuration(now - Number(el.dataset.since));
  });
  document.querySelectorAll("[data-until]").forEach((el) => {
    const left = new Date(el.dataset.until).getTime() - now;
    el.textContent = left > 0 ? `↑ ${fmtDuration(left)}` : `↑ ${t("queue.escalation_due")}`;
    el.classList.toggle("due", left < 15000);
  });
}
setInterval(tick, 1000);

// ---------------------------------------------------------------- detail

async function select(id) {
  state.selected = id;
  if (id !== null) {
    markSeen(id);
    if (location.hash !== `#/call/${id}`) history.replaceState(null, "", `#/call/${id}`);
  }
  renderQueue();
  await loadDetail();
}

let detailSeq = 0;
async function loadDetail() {
  const pane = $("#detail");
  const id = state.selected;
  if (id === null) {
    state.detail = null;
    pane.innerHTML = `<p class="muted">${esc(t("detail.none"))}</p>`;
    return;
  }
  const mine = ++detailSeq;
  if (!state.detail || state.detail.call.id !== id) pane.innerHTML = `<p class="muted">${esc(t("detail.loading"))}</p>`;
  try {
    const [call, ctx] = await Promise.all([api(`/api/v1/calls/${id}`), api(`/api/v1/console/calls/${id}/context`)]);
    if (mine !== detailSeq) return; // a newer load won
    state.detail = { call, ctx };
    renderDetail();
  } catch (err) {
    if (mine !== detailSeq) return;
    state.detail = null;
    pane.innerHTML = `<p class="muted">${esc(err.status === 404 ? t("detail.gone") : errText(err))}</p>`;
  }
}

let refreshTimer = null;
function refreshDetailIfChanged(ids, always = false) {
  if (state.selected === null) return;
  if (!always && !ids.includes(state.selected)) return;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(loadDetail, 80); // several changes in a burst: one reload
}

const ACTIONS = [
  // action, shortcut, statuses it applies to
  ["acknowledge", "A", ["open", "assigned"]],
  ["dispatch", "D", ["open", "assigned", "acknowledged", "dispatched", "en_route", "on_scene"]],
  ["en-route", "E", ["dispatched"]],
  ["arrive", "S", ["dispatched", "en_route"]],
  ["resolve", "R", [...OPEN]],
  ["cancel", "F", [...OPEN]],
  ["escalate", "X", [...OPEN]],
  ["handoff", "H", [...OPEN]],
  ["callback", "C", [...OPEN]],
  ["note", "N", [...OPEN, "resolved", "cancelled"]],
];

function canAct() {
  return state.me && state.me.role !== "supervisor";
}

// One person paged for the call: name, how the page reached them, delivered or not, their answer.
function pageItem(p) {
  let delivery = "";
  if (p.delivery === "delivered") delivery = `<span class="tag pg-delivered">${esc(t("page.delivered"))}</span>`;
  else if (p.delivery === "failed") delivery = `<span class="tag pg-failed bad" title="${esc(p.receipt)}">${esc(t("page.not_delivered"))}</span>`;
  else if (p.receipt) delivery = `<span class="tag pg-retrying" title="${esc(p.receipt)}">${esc(t("page.retrying"))}</span>`;
  return `<li data-staff="${esc(p.staff_id)}" data-outcome="${esc(p.outcome)}"><strong>${esc(p.name)}</strong>
    <span class="small muted">${esc(code("page.channel", p.channel))} · <time datetime="${esc(p.paged_at)}">${esc(fmtTime(p.paged_at))}</time></span>
    ${delivery} <span class="pstate ps-${esc(p.outcome)}">${esc(code("page.outcome", p.outcome))}</span></li>`;
}

function renderDetail() {
  const { call, ctx } = state.detail;
  const res = ctx.resident;
  const pane = $("#detail");
  // ringing back sits by the numbers, leading the pane (its key C works from anywhere)
  const actions = ACTIONS.filter(([a]) => a !== "callback").map(([a, key, statuses]) => {
    const ok = canAct() && statuses.includes(call.status) && !(a === "escalate" && call.escalation_level >= 2);
    return `<button type="button" class="act act-${a}" data-action="${a}" ${ok ? "" : "disabled"}
      aria-keyshortcuts="${key}" title="${esc(t("action.shortcut", { key }))}">${esc(t(`action.${a}`))} <kbd>${key}</kbd></button>`;
  }).join("");
  const ack = call.timeline.find((r) => r.kind === "acknowledged");
  const lines = phoneLines(ctx);
  const types = callTypes(call);
  const hr = res ? res.hr_range : [50, 110];
  const rr = res ? res.rr_range : [10, 24];
  const last = [...ctx.trend].reverse();
  const lastHr = last.find((p) => p.hr !== null);
  const lastRr = last.find((p) => p.rr !== null);
  pane.innerHTML = `
  <header class="detail-head prio-${esc(call.priority)}">
    <h2><span class="prio" title="${esc(code("priority", call.priority))}">${esc(call.priority)}</span> ${eventIcon(types[0])} ${esc(types.map(eventLabel).join(" + "))} · #${call.id}</h2>
    <p class="phones">${lines.length ? lines.map((l) => `<a class="tel tel-${l.line}" href="tel:${esc(l.phone)}"
      aria-label="${esc(t("detail.call_phone", { name: t(`callback.line.${l.line}`) }))}">${esc(t(`callback.line.${l.line}`))} <strong>${esc(l.phone)}</strong></a>`).join(" ")
      : `<span class="muted">${esc(t("callback.no_phone"))}</span>`}
      ${canAct() && OPEN.has(call.status) ? `<button type="button" class="act act-callback-inline" data-action="callback">${esc(t("action.callback"))} <kbd>C</kbd></button>` : ""}</p>
    <p><span class="status st-${esc(call.status)}">${esc(t(`status.${call.status}`))}</span>
      ${call.outcome ? ` · ${esc(t("detail.outcome"))}: ${esc(t(`outcome.${call.outcome}`))}` : ""}
      ${ack ? ` · <span class="ackby">${esc(doneBy(ack.actor, ack.at))}</span>` : ""}
      · ${esc(t("detail.opened"))} ${esc(fmtDateTime(call.opened_at))}
      · <span class="clock" data-since="${eventStart(call)}"></span>
      ${call.next_escalation_at && OPEN.has(call.status) ? `<span class="esc-clock" data-until="${esc(call.next_escalation_at)}"></span>` : ""}</p>
    <p>${esc(t("detail.address"))}: <strong>${esc(ctx.address)}</strong> · ${esc(t("detail.station"))}: ${esc(call.station_name || call.station_id || "")} (${esc(call.tier ? t(`tier.${call.tier}`) : "")})</p>
  </header>
  <div class="actions" role="group" aria-label="${esc(t("action.group"))}">${actions}</div>
  <div id="action-msg" class="action-msg" role="status" aria-live="assertive"></div>
  <div class="detail-grid">
    <section class="panel" aria-labelledby="h-res"><h3 id="h-res">${esc(t("detail.resident"))}</h3>
      ${res ? `<p class="res-name"><strong>${esc(res.name)}</strong> · ${esc(t(`detail.sex.${res.sex}`))} · ${esc(t("detail.age", { age: res.age }))}
        ${res.living_alone ? `<span class="tag alone">${esc(t("detail.living_alone"))}</span>` : ""}</p>
        <dl>
          <dt>${esc(t("detail.capacity"))}</dt><dd>${esc(t(`detail.capacity_level.${res.capacity_level}`))}</dd>
          <dt>${esc(t("detail.conditions"))}</dt><dd>${esc(res.conditions.join("、") || "—")}</dd>
          ${res.medications ? `<dt>${esc(t("handoff.medications"))}</dt><dd class="res-meds">${esc(res.medications)}</dd>` : ""}
          ${res.allergies ? `<dt>${esc(t("handoff.allergies"))}</dt><dd class="res-allergies bad">${esc(res.allergies)}</dd>` : ""}
          ${res.access_notes ? `<dt>${esc(t("handoff.access"))}</dt><dd class="res-access">${esc(res.access_notes)}</dd>` : ""}
          <dt>${esc(t("detail.notes"))}</dt><dd>${esc([res.notes, ctx.home_notes].filter(Boolean).join(" / ") || "—")}</dd>
          <dt>${esc(t("detail.vital_ranges"))}</dt><dd>${esc(t("detail.hr"))} ${hr[0]}–${hr[1]} · ${esc(t("detail.rr"))} ${rr[0]}–${rr[1]} ${esc(t("detail.bpm"))}</dd>
          <dt>${esc(t("detail.priority_reasons"))}</dt><dd class="small">${esc(codes("reason.priority", call.priority_reasons))}</dd>
          <dt>${esc(t("detail.route_reasons"))}</dt><dd class="small">${esc(codes("reason.route", call.route_reasons))}</dd>
        </dl>` : `<p class="muted">${esc(t("detail.no_resident"))}</p>`}
    </section>
    <section class="panel" aria-labelledby="h-con"><h3 id="h-con">${esc(t("detail.contacts"))}</h3>
      ${res && res.contacts.length ? `<ol class="contacts">${res.contacts.map((c) => `<li><strong>${esc(c.name)}</strong> (${esc(c.relation)})
        <a href="tel:${esc(c.phone)}" aria-label="${esc(t("detail.call_phone", { name: c.name }))}">${esc(c.phone)}</a></li>`).join("")}</ol>`
        : `<p class="muted">${esc(t("detail.no_contacts"))}</p>`}
      ${res ? `<p><a href="#/admin?resident=${encodeURIComponent(res.id)}">${esc(t("detail.edit_contacts"))}</a></p>` : ""}
    </section>
    <section class="panel" aria-labelledby="h-tel"><h3 id="h-tel">${esc(t("detail.telemetry"))}</h3>
      ${ctx.trend.length ? `<div class="vitals">
        <div><span class="vital-label">${esc(t("detail.hr"))}</span> <strong class="vital hr">${lastHr ? lastHr.hr : "—"}</strong> ${esc(t("detail.bpm"))}${sparkline(ctx.trend, "hr", hr)}</div>
        <div><span class="vital-label">${esc(t("detail.rr"))}</span> <strong class="vital rr">${lastRr ? lastRr.rr : "—"}</strong> ${esc(t("detail.bpm"))}${sparkline(ctx.trend, "rr", rr)}</div>
        </div><p class="muted small">${esc(t("detail.trend_note"))}</p>` : `<p class="muted">${esc(t("detail.no_telemetry"))}</p>`}
    </section>
    <section class="panel" aria-labelledby="h-dev"><h3 id="h-dev">${esc(t("detail.devices"))}</h3>
      <ul class="devices">${ctx.devices.map((d) => `<li class="${d.fired ? "fired" : ""}">
        <strong>${esc(code("device", d.kind))}</strong> <code>${esc(d.id)}</code>
        ${d.fired ? `<span class="tag fired">${esc(t("detail.fired"))}</span>` : ""}
        ${d.fired_sensors.map((s) => `<span class="small">${esc(t("detail.sensor", { sensor: s }))}</span>`).join(" ")}
        <span class="small ${d.online === false ? "bad" : ""}">${esc(d.online === null ? t("detail.never_seen") : d.online ? t("detail.online") : t("detail.offline"))}</span>
        ${d.battery_pct !== null ? `<span class="small">${esc(t("detail.battery", { pct: Math.round(d.battery_pct) }))}</span>` : ""}
        ${d.enabled ? "" : `<span class="tag">${esc(t("detail.disabled"))}</span>`}</li>`).join("")}</ul>
    </section>
    <section class="panel" aria-labelledby="h-rsp"><h3 id="h-rsp">${esc(t("detail.responders"))}</h3>
      ${ctx.responders.length ? `<ul class="responders">${ctx.responders.map((r) => `<li data-staff="${esc(r.staff_id)}">
        <strong>${esc(r.name)}</strong> <span class="small muted">${esc(r.station_name)}</span>
        <a href="tel:${esc(r.phone)}">${esc(r.phone)}</a>
        <span class="rstate rs-${esc(r.state)}">${esc(t(`responder.${r.state}`))}${r.call_id && r.call_id !== call.id ? ` · ${esc(t("responder.on_call", { id: r.call_id }))}` : ""}</span></li>`).join("")}</ul>`
        : `<p class="muted">${esc(t("detail.no_responders"))}</p>`}
    </section>
    ${call.pages && call.pages.length ? `<section class="panel" aria-labelledby="h-pg"><h3 id="h-pg">${esc(t("detail.paged"))}</h3>
      <ul class="pages">${call.pages.map(pageItem).join("")}</ul></section>` : ""}
    <section class="panel map-panel" aria-labelledby="h-map"><h3 id="h-map">${esc(t("detail.map"))}</h3>${drawMap(ctx.map, state.me.tile_url)}</section>
    <section class="panel timeline-panel" aria-labelledby="h-tl"><h3 id="h-tl">${esc(t("detail.timeline"))}</h3>
      <ol class="timeline">${call.timeline.map((row) => `<li data-kind="${esc(row.kind)}"><time datetime="${esc(row.at)}">${esc(fmtTime(row.at))}</time>
        <strong>${esc(code("timeline", row.kind))}</strong>
        <span class="small muted" title="${esc(row.actor)}">${esc(t("timeline.by", { actor: actorLabel(row.actor) }))}</span>
        ${timelineDetail(row)}</li>`).join("")}</ol>
    </section>
  </div>`;
  tick();
}

function timelineDetail(row) {
  const d = row.detail || {};
  const bits = [];
  if (d.name) bits.push(d.name);
  if (d.text) bits.push(`“${d.text}”`);
  if (d.note) bits.push(`“${d.note}”`);
  if (row.kind === "called_back") {
    if (d.line) bits.push(t(`callback.line.${d.line}`));
    if (d.outcome) bits.push(t(`callback.outcome.${d.outcome}`));
  } else if (d.outcome) bits.push(code("outcome", d.outcome));
  if (row.kind === "paged" && d.channel) bits.push(code("page.channel", d.channel));
  if (row.kind === "page_declined" && d.reason) bits.push(has(`decline.${d.reason}`) ? t(`decline.${d.reason}`) : d.reason); // or free text
  if (d.answer) bits.push(code("family.answer", d.answer)); // a family contact's answer
  if (row.kind === "handoff" && d.to) bits.push(t(`handoff.${d.to}`));
  if (row.kind === "escalated" && d.to) bits.push(t(`level.${d.to}`));
  if (d.priority) bits.push(d.priority);
  if (d.type) bits.push(eventLabel(d.type));
  if (d.cause && has(`incident.cause.${d.cause}`)) bits.push(t(`incident.cause.${d.cause}`)); // mass offline incident
  if (d.devices_total !== undefined) bits.push(t("incident.back", { back: d.devices_back, total: d.devices_total }));
  return bits.length ? `<span class="tl-detail">${esc(bits.join(" · "))}</span>` : "";
}

// ---------------------------------------------------------------- actions

function flash(msg, kind = "ok") {
  const el = $("#action-msg");
  if (el) {
    el.textContent = msg;
    el.className = `action-msg ${kind}`;
  }
}

async function act(action, body) {
  const id = state.selected;
  if (id === null || !state.detail) return;
  try {
    const call = await api(`/api/v1/calls/${id}/${action}`, { method: "POST", body: body || {} });
    state.detail.call = call;
    if (OPEN.has(call.status)) state.calls.set(call.id, { ...state.calls.get(call.id), ...call, resident: state.calls.get(call.id)?.resident });
    else state.calls.delete(call.id);
    renderQueue();
    await loadDetail();
    flash(t("action.done", { action: t(`action.${action}`) }));
  } catch (err) {
    if (err.status === 409) {
      // someone else was first: show what happened, do not repeat it
      const d = err.detail || {};
      const msg = d.by ? doneBy(String(d.by), d.at) : errText(err);
      await loadDetail();
      flash(t("action.conflict", { message: msg }), "warn");
    } else if (err.status !== 401) {
      flash(t("action.failed", { action: t(`action.${action}`), message: errText(err) }), "bad");
    }
  }
}

function openDialog(title, bodyHtml, onOk) {
  const dlg = $("#action-dialog");
  $("#dialog-title").textContent = title;
  $("#dialog-body").innerHTML = bodyHtml;
  applyStatic(dlg);
  const form = $("#dialog-form");
  form.onsubmit = (e) => {
    e.preventDefault();
    const body = onOk(form);
    if (body === null) return;
    dlg.close();
    body();
  };
  $("#dialog-close").onclick = () => dlg.close();
  dlg.showModal();
  const first = dlg.querySelector("input, select, textarea");
  if (first) first.focus();
}

function outcomeSelect(preferred, allowed) {
  const list = allowed || state.me.outcomes;
  return `<label>${esc(t("dialog.outcome"))}<select name="outcome" id="dlg-outcome">${list.map((o) => `<option value="${esc(o)}" ${o === preferred ? "selected" : ""}>${esc(t(`outcome.${o}`))}</option>`).join("")}</select></label>
    <label>${esc(t("dialog.note"))}<textarea name="note" id="dlg-note" rows="3" maxlength="4000"></textarea></label>`;
}

function startAction(action) {
  if (!state.detail || !canAct()) return;
  const btn = document.querySelector(`.act[data-action="${action}"]`);
  if (!btn || btn.disabled) return;
  const { ctx } = state.detail;
  if (action === "dispatch") {
    openSendDialog(state.detail.call.id);
  } else if (action === "resolve") {
    openDialog(t("dialog.resolve.title"), outcomeSelect("helped_on_site"), (form) => () => act("resolve", {
      outcome: form.querySelector("#dlg-outcome").value,
      note: form.querySelector("#dlg-note").value.trim() || undefined,
    }));
  } else if (action === "cancel") {
    openDialog(t("dialog.cancel.title"), outcomeSelect("false_alarm", ["false_alarm", "cancelled", "cancelled_by_resident"]), (form) => () => act("cancel", {
      outcome: form.querySelector("#dlg-outcome").value,
      note: form.querySelector("#dlg-note").value.trim() || undefined,
    }));
  } else if (action === "escalate") {
    const lv = state.detail.call.escalation_level;
    const opts = (lv < 1 ? ["street", "county"] : ["county"]).map((l) => `<option value="${l}">${esc(t(`level.${l}`))}</option>`).join("");
    openDialog(t("dialog.escalate.title"), `<label>${esc(t("dialog.escalate.to"))}<select id="dlg-to">${opts}</select></label>`,
      (form) => () => act("escalate", { to: form.querySelector("#dlg-to").value }));
  } else if (action === "handoff") {
    openHandoffSummary(state.detail);
  } else if (action === "callback") {
    openCallbackDialog(ctx);
  } else if (action === "note") {
    openDialog(t("dialog.note.title"), `<label>${esc(t("dialog.note"))}<textarea id="dlg-text" rows="4" maxlength="4000" required></textarea></label>`,
      (form) => {
        const text = form.querySelector("#dlg-text").value.trim();
        return text ? () => act("note", { text }) : null;
      });
  } else {
    act(action);
  }
}

// ---------------------------------------------------------------- the decisive minute

// Who acknowledged: "You acknowledged at 03:12:09" for one's own, else who and when.
function doneBy(actor, at) {
  const by = String(actor).replace(/^user:/, "");
  return state.me && by === state.me.username ? t("action.mine_at", { at: fmtTime(at) }) : t("action.conflict_by", { by, at: fmtTime(at) });
}

// The numbers to ring back, the home's line first (both personal data: the server sends
// them only to roles that handle calls; they are never logged).
function phoneLines(ctx) {
  const lines = [];
  if (ctx.home_phone) lines.push({ line: "home", phone: ctx.home_phone });
  if (ctx.resident && ctx.resident.phone) lines.push({ line: "mobile", phone: ctx.resident.phone });
  return lines;
}

function openCallbackDialog(ctx) {
  const lines = phoneLines(ctx);
  const choices = lines.length ? lines : [{ line: "home", phone: "" }, { line: "mobile", phone: "" }];
  const lineOpts = choices.map((l, i) => `<label class="check"><input type="radio" name="cb-line" value="${l.line}" ${i === 0 ? "checked" : ""}>
    ${esc(t(`callback.line.${l.line}`))} ${l.phone ? `<a href="tel:${esc(l.phone)}">${esc(l.phone)}</a>` : ""}</label>`).join("");
  const outcomes = ["talked", "no_answer", "line_busy"].map((o, i) => `<label class="check"><input type="radio" name="cb-outcome" value="${o}" ${i === 0 ? "checked" : ""}>
    ${esc(t(`callback.outcome.${o}`))}</label>`).join("");
  openDialog(t("dialog.callback.title"), `<fieldset class="cb-lines"><legend>${esc(t("dialog.callback.line"))}</legend>${lineOpts}</fieldset>
    <fieldset class="cb-outcomes"><legend>${esc(t("dialog.callback.outcome"))}</legend>${outcomes}</fieldset>`,
  (form) => {
    const line = form.querySelector("input[name=cb-line]:checked");
    const outcome = form.querySelector("input[name=cb-outcome]:checked");
    if (!line || !outcome) return null;
    return () => act("callback", { outcome: outcome.value, to: line.value });
  });
}

const fmtKm = (m) => (m < 1000 ? t("rank.m", { m }) : t("rank.km", { km: (m / 1000).toFixed(1) }));

// The send dialog: everyone near, nearest free first (GET …/candidates, ranked by
// dispatcher/calls/ranking.py), each with distance, ETA, state and why. Only the top free
// person is ticked; the busy and the off duty cannot be.
async function openSendDialog(callId) {
  let rows;
  try {
    rows = await api(`/api/v1/console/calls/${callId}/candidates`);
  } catch (err) {
    if (err.status !== 401) flash(t("action.failed", { action: t("action.dispatch"), message: errText(err) }), "bad");
    return;
  }
  if (!state.detail || state.detail.call.id !== callId) return;
  const reason = (code) => (has(`rank.reason.${code}`) ? t(`rank.reason.${code}`) : code);
  const body = rows.length
    ? `<p class="small muted">${esc(t("dialog.dispatch.order"))}</p><ol class="cand-list">${rows.map((r, i) => `<li class="cand cs-${esc(r.state)}" data-staff="${esc(r.staff_id)}">
        <label class="check"><input type="checkbox" name="staff" value="${esc(r.staff_id)}" ${r.state === "free" ? "" : "disabled"} ${i === 0 && r.state === "free" ? "checked" : ""}>
        <strong>${esc(r.name)}</strong> <span class="small muted">${esc(r.station_name)}</span>
        <span class="cand-dist">${esc(fmtKm(r.distance_m))}</span> · <span class="cand-eta">${esc(t("rank.eta", { min: Math.max(1, Math.ceil(r.eta_s / 60)) }))}</span>
        <span class="tag cand-state">${esc(t(`rank.state.${r.state}`))}</span>${r.phone ? ` <span class="small">${esc(r.phone)}</span>` : ""}</label>
        <span class="small muted cand-why">${esc(r.reasons.map(reason).join(" · "))}</span></li>`).join("")}</ol>`
    : "";
  const anyFree = rows.some((r) => r.state === "free");
  openDialog(t("dialog.dispatch.title"), body + (anyFree ? "" : `<p>${esc(t("dialog.dispatch.none"))}</p>`), (form) => {
    const ids = [...form.querySelectorAll("input[name=staff]:checked")].map((i) => i.value);
    if (!ids.length) return null;
    return () => act("dispatch", { staff_ids: ids });
  });
}

// The hand-off to 120/110/119: one screen to read out, then which service took it (the
// timeline records that).
function openHandoffSummary({ ctx }) {
  const res = ctx.resident;
  const dash = (v) => (v && String(v).trim() ? v : "—");
  const row = (key, value, cls) => `<dt>${esc(t(key))}</dt><dd class="${cls}">${esc(dash(value))}</dd>`;
  const h = ctx.map.home;
  const contacts = res && res.contacts.length ? res.contacts.map((c) => `${c.name}（${c.relation}）${c.phone}`).join("；") : "";
  const phones = phoneLines(ctx).map((l) => `${t(`callback.line.${l.line}`)} ${l.phone}`).join("；");
  const who = res ? `${res.name} · ${t(`detail.sex.${res.sex}`)} · ${t("detail.age", { age: res.age })}` : t("detail.no_resident");
  const opts = ["120", "110", "119"].map((n) => `<label class="check"><input type="radio" name="ho-to" value="${n}" ${n === "120" ? "checked" : ""}>${esc(t(`handoff.${n}`))}</label>`).join("");
  openDialog(t("dialog.handoff.summary"), `<dl class="handoff-summary">
      ${row("detail.resident", who, "ho-who")}
      ${row("detail.address", ctx.address, "ho-address")}
      ${row("handoff.landmark", ctx.home_notes, "ho-landmark")}
      ${row("handoff.location", `${Number(h.lat).toFixed(5)}, ${Number(h.lon).toFixed(5)}`, "ho-location")}
      ${row("detail.conditions", res ? res.conditions.join("、") : "", "ho-conditions")}
      ${row("handoff.medications", res ? res.medications : "", "ho-medications")}
      ${row("handoff.allergies", res ? res.allergies : "", "ho-allergies")}
      ${row("detail.capacity", res ? t(`detail.capacity_level.${res.capacity_level}`) : "", "ho-capacity")}
      ${row("handoff.access", res ? res.access_notes : "", "ho-access")}
      ${row("handoff.phones", phones, "ho-phones")}
      ${row("detail.contacts", contacts, "ho-contacts")}
    </dl>
    <fieldset class="ho-to"><legend>${esc(t("dialog.handoff.to"))}</legend>${opts}</fieldset>
    <label>${esc(t("dialog.note"))}<textarea id="dlg-note" rows="2" maxlength="4000"></textarea></label>`,
  (form) => {
    const to = form.querySelector("input[name=ho-to]:checked");
    if (!to) return null;
    return () => act("handoff", { to: to.value, note: form.querySelector("#dlg-note").value.trim() || undefined });
  });
}

// ---------------------------------------------------------------- could not be processed

// Events and escalation timers the dispatcher set aside after repeated failures
// (GET /api/v1/intake/failures): operators handle them by phone, admins put them back
// once the cause is fixed. Read when the live stream (re)opens and, at most every 30 s,
// on its heartbeat: no poller of its own.
const failures = { data: null, at: 0 };

async function refreshFailures(force = false) {
  if (!state.me || (!force && Date.now() - failures.at < 30000)) return;
  failures.at = Date.now();
  try {
    failures.data = await api("/api/v1/intake/failures");
  } catch {
    return; // shown again on the next heartbeat
  }
  renderFailures();
}

function renderFailures() {
  const f = state.me ? failures.data : null;
  const n = f ? f.events.length + f.timers.length : 0;
  $("#failures").hidden = n === 0;
  if (!n) return;
  const retry = (kind, ref) => (state.me.role === "admin"
    ? `<button type="button" class="fail-retry" data-kind="${kind}" data-ref="${ref}">${esc(t("failures.retry"))}</button>` : "");
  const row = (title, at, attempts, error, button) => `<li><strong>${esc(title)}</strong>
    <span class="muted">${esc(fmtDateTime(at))} · ${esc(t("failures.attempts", { n: attempts }))}</span>
    <code class="small fail-error">${esc(error)}</code>${button}</li>`;
  $("#failures-list").innerHTML = [
    ...f.events.map((e) => row(t("failures.event", { device: e.device_id, type: eventLabel(e.type) }), e.stored_at, e.attempts, e.error, retry("event", e.event_pk))),
    ...f.timers.map((x) => row(t("failures.timer", { call: x.call_id, action: code("step", x.action) }), x.due_at, x.attempts, x.error, retry("timer", x.timer_id))),
  ].join("");
}

$("#failures-list").addEventListener("click", async (e) => {
  const btn = e.target.closest(".fail-retry");
  if (!btn) return;
  btn.disabled = true;
  const path = btn.dataset.kind === "timer"
    ? `/api/v1/intake/failures/timers/${btn.dataset.ref}/retry` : `/api/v1/intake/failures/${btn.dataset.ref}/retry`;
  try {
    await api(path, { method: "POST" });
    toast(t("failures.requeued"));
  } catch (err) {
    if (err.status !== 401) toast(errText(err));
  }
  refreshFailures(true);
});

// ---------------------------------------------------------------- board

// The board follows the live stream: a call change (opened, dispatched, closed) changes
// busy/free and open calls, so it is re-read at most once a second while it is shown.
let boardTimer = null;
function boardLive() {
  if (state.view !== "board" || boardTimer) return;
  boardTimer = setTimeout(() => {
    boardTimer = null;
    if (state.view === "board") renderBoard().catch(() => {});
  }, 1000);
}

async function renderBoard() {
  const view = $("#view-board");
  const rows = await api("/api/v1/console/board");
  view.innerHTML = `<h2>${esc(t("board.title"))} <button type="button" id="board-refresh">${esc(t("board.refresh"))}</button></h2>
  <table class="board"><thead><tr><th scope="col">${esc(t("board.station"))}</th><th scope="col">${esc(t("board.tier"))}</th>
    <th scope="col">${esc(t("board.on_duty"))}</th><th scope="col">${esc(t("board.busy"))}</th><th scope="col">${esc(t("board.free"))}</th><th scope="col">${esc(t("board.open_calls"))}</th></tr></thead>
  <tbody>${rows.map((r) => `<tr data-station="${esc(r.id)}" class="${r.open_calls ? "has-calls" : ""} ${r.staff_on_duty && !r.free ? "no-free" : ""}">
    <th scope="row">${esc(r.name)} <code class="small">${esc(r.id)}</code></th><td>${esc(t(`tier.${r.tier}`))}</td>
    <td>${r.staff_on_duty}</td><td>${r.busy}</td><td class="free">${r.free}</td><td class="open">${r.open_calls}</td></tr>`).join("")}</tbody></table>`;
  $("#board-refresh").onclick = renderBoard;
}

// ---------------------------------------------------------------- admin

async function renderAdmin(params) {
  const view = $("#view-admin");
  const readOnly = state.me.role === "supervisor";
  view.innerHTML = `<h2>${esc(t("admin.title"))}</h2>${readOnly ? `<p class="muted">${esc(t("admin.readonly"))}</p>` : ""}
  <div class="admin-grid">
    <section class="panel" aria-labelledby="h-staff"><h3 id="h-staff">${esc(t("admin.staff"))}</h3>
      <label>${esc(t("admin.staff_filter"))}<input id="staff-filter" type="search"></label>
      <table class="staff"><tbody id="staff-rows"></tbody></table><p id="staff-msg" role="status"></p></section>
    <section class="panel" aria-labelledby="h-resident"><h3 id="h-resident">${esc(t("admin.resident"))}</h3>
      <form id="resident-form"><label>${esc(t("admin.resident_id"))}<input id="resident-id" required></label>
        <button type="submit">${esc(t("admin.load"))}</button></form>
      <div id="contacts-editor"></div><p id="contacts-msg" role="status"></p></section>
    <section class="panel" aria-labelledby="h-device"><h3 id="h-device">${esc(t("admin.device"))}</h3>
      <form id="device-form"><label>${esc(t("admin.device_id"))}<input id="device-id" required></label>
        <button type="submit">${esc(t("admin.load"))}</button></form>
      <div id="device-editor"></div><p id="device-msg" role="status"></p></section>
  </div>`;
  if (state.me.role === "admin") mountImporter($(".admin-grid", view), () => state.token);
  const staff = (await api("/api/v1/staff?limit=500")).items;
  const drawStaff = () => {
    const f = $("#staff-filter").value.trim().toLowerCase();
    $("#staff-rows").innerHTML = staff.filter((s) => !f || `${s.name} ${s.station_id} ${s.id}`.toLowerCase().includes(f)).slice(0, 200)
      .map((s) => `<tr><th scope="row">${esc(s.name)} <code class="small">${esc(s.id)}</code></th><td>${esc(s.station_id)}</td><td>${esc(code("staff_role", s.role))}</td>
        <td><label class="check"><input type="checkbox" class="duty" data-id="${esc(s.id)}" ${s.on_duty ? "checked" : ""} ${readOnly ? "disabled" : ""}
          aria-label="${esc(`${t("admin.on_duty")}: ${s.name}`)}"> ${esc(t("admin.on_duty"))}</label></td></tr>`).join("");
  };
  drawStaff();
  $("#staff-filter").oninput = drawStaff;
  $("#staff-rows").onchange = async (e) => {
    const box = e.target.closest(".duty");
    if (!box) return;
    try {
      const s = await api(`/api/v1/staff/${encodeURIComponent(box.dataset.id)}`, { method: "PATCH", body: { on_duty: box.checked } });
      staff.find((x) => x.id === s.id).on_duty = s.on_duty;
      $("#staff-msg").textContent = t("admin.saved");
    } catch (err) {
      box.checked = !box.checked;
      $("#staff-msg").textContent = t("admin.failed", { message: errText(err) });
    }
  };
  $("#resident-form").onsubmit = async (e) => {
    e.preventDefault();
    await loadContacts($("#resident-id").value.trim(), readOnly);
  };
  $("#device-form").onsubmit = async (e) => {
    e.preventDefault();
    await loadDevice($("#device-id").value.trim(), readOnly);
  };
  if (params.get("resident")) {
    $("#resident-id").value = params.get("resident");
    await loadContacts(params.get("resident"), readOnly);
  }
  if (params.get("device")) {
    $("#device-id").value = params.get("device");
    await loadDevice(params.get("device"), readOnly);
  }
}

async function loadContacts(residentId, readOnly) {
  const box = $("#contacts-editor");
  let res;
  try {
    res = await api(`/api/v1/residents/${encodeURIComponent(residentId)}`);
  } catch (err) {
    box.innerHTML = "";
    $("#contacts-msg").textContent = err.status === 404 ? t("admin.not_found") : errText(err);
    return;
  }
  $("#contacts-msg").textContent = "";
  const row = (c, i) => `<tr>
    <td><input aria-label="${esc(t("admin.contact_priority"))} ${i + 1}" class="c-priority" type="number" min="1" max="99" value="${c.priority}"></td>
    <td><input aria-label="${esc(t("admin.contact_name"))} ${i + 1}" class="c-name" value="${esc(c.name)}" required></td>
    <td><input aria-label="${esc(t("admin.contact_relation"))} ${i + 1}" class="c-relation" value="${esc(c.relation)}" required></td>
    <td><input aria-label="${esc(t("admin.contact_phone"))} ${i + 1}" class="c-phone" value="${esc(c.phone)}" required></td>
    <td><button type="button" class="c-remove">${esc(t("admin.remove_contact"))}</button></td></tr>`;
  box.innerHTML = `<p><strong>${esc(res.name)}</strong> <code>${esc(res.id)}</code></p>
    <form id="contacts-form"><table class="contacts-edit"><thead><tr><th>${esc(t("admin.contact_priority"))}</th><th>${esc(t("admin.contact_name"))}</th>
    <th>${esc(t("admin.contact_relation"))}</th><th>${esc(t("admin.contact_phone"))}</th><th></th></tr></thead>
    <tbody>${res.contacts.map(row).join("")}</tbody></table>
    <button type="button" id="c-add" ${readOnly ? "disabled" : ""}>${esc(t("admin.add_contact"))}</button>
    <button type="submit" ${readOnly ? "disabled" : ""}>${esc(t("admin.save_contacts"))}</button></form>`;
  const tbody = box.querySelector("tbody");
  tbody.onclick = (e) => { if (e.target.classList.contains("c-remove")) e.target.closest("tr").remove(); };
  $("#c-add").onclick = () => {
    const n = tbody.children.length;
    tbody.insertAdjacentHTML("beforeend", row({ priority: n + 1, name: "", relation: "", phone: "" }, n));
  };
  $("#contacts-form").onsubmit = async (e) => {
    e.preventDefault();
    const contacts = [...tbody.children].map((tr) => ({
      priority: Number(tr.querySelector(".c-priority").value),
      name: tr.querySelector(".c-name").value.trim(),
      relation: tr.querySelector(".c-relation").value.trim(),
      phone: tr.querySelector(".c-phone").value.trim(),
    }));
    try {
      await api(`/api/v1/residents/${encodeURIComponent(residentId)}/contacts`, { method: "PUT", body: contacts });
      $("#contacts-msg").textContent = t("admin.saved");
    } catch (err) {
      $("#contacts-msg").textContent = t("admin.failed", { message: errText(err) });
    }
  };
}

async function loadDevice(deviceId, readOnly) {
  const box = $("#device-editor");
  let dev;
  try {
    dev = await api(`/api/v1/devices/${encodeURIComponent(deviceId)}`);
  } catch (err) {
    box.innerHTML = "";
    $("#device-msg").textContent = err.status === 404 ? t("admin.not_found") : errText(err);
    return;
  }
  $("#device-msg").textContent = "";
  box.innerHTML = `<p>${esc(code("device", dev.kind))} <code>${esc(dev.id)}</code> · ${esc(dev.home_id)}</p>
    <label class="check"><input type="checkbox" id="device-enabled" ${dev.enabled ? "checked" : ""} ${readOnly ? "disabled" : ""}> ${esc(t("admin.enabled"))}</label>`;
  $("#device-enabled").onchange = async (e) => {
    try {
      await api(`/api/v1/devices/${encodeURIComponent(deviceId)}`, { method: "PATCH", body: { enabled: e.target.checked } });
      $("#device-msg").textContent = t("admin.saved");
    } catch (err) {
      e.target.checked = !e.target.checked;
      $("#device-msg").textContent = t("admin.failed", { message: errText(err) });
    }
  };
}

// ---------------------------------------------------------------- routing, login, language

const VIEWS = ["queue", "orders", "visits", "board", "admin", "oversight", "review", "devices", "wall"];

function openCalls() {
  const calls = [...state.calls.values()];
  return { total: calls.length, p1: calls.filter((c) => c.priority === "P1").length };
}

async function route() {
  if (!state.me) return;
  const hash = location.hash || "#/queue";
  const [path, query] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  const wallParam = new URLSearchParams(location.search).get("wall");
  const view = wallParam && wallParam !== "0" ? "wall" : VIEWS.includes(parts[0]) ? parts[0] : "queue";
  state.view = view;
  if (view !== "wall") stopWall();
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== view;
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  try {
    const sv = { api, token: () => state.token, toast };
    // orders and visits: everyday work, with a banner back to any emergency still waiting
    const everyday = { api, toast, errText, me: state.me, calls: () => [...state.calls.values()] };
    if (view === "orders") await renderOrders($("#view-orders"), everyday, parts.slice(1));
    else if (view === "visits") await renderVisits($("#view-visits"), everyday);
    else if (view === "board") await renderBoard();
    else if (view === "oversight") await renderDashboard($("#view-oversight"), sv);
    else if (view === "review") await renderReview($("#view-review"), sv);
    else if (view === "devices") await renderDevices($("#view-devices"), sv);
    else if (view === "wall") {
      // seconds between refreshes: ?every=N or #/wall?every=N (at least 2), default 30
      const every = Math.max(2, Number(new URLSearchParams(query || location.search.slice(1)).get("every")) || 30);
      await renderWall($("#view-wall"), { api, openCalls }, every);
    }
    else if (view === "admin") await renderAdmin(new URLSearchParams(query || ""));
    else if (parts[0] === "call" && parts[1]) {
      const id = Number(parts[1]);
      if (id !== state.selected) await select(id);
    } else if (state.selected === null) await loadDetail();
  } catch (err) {
    if (err.status !== 401) toast(errText(err));
  }
}

function toast(msg) {
  const el = $("#toast");
  el.textContent = msg;
  el.hidden = false;
  setTimeout(() => { el.hidden = true; }, 5000);
}

function renderLangSwitches() {
  document.querySelectorAll(".lang-switch").forEach((box) => {
    box.innerHTML = `<label><span class="lang-label">${esc(t("header.language"))}</span> <select class="lang-select">${LANGS.map((l) => `<option value="${l}" ${l === currentLang() ? "selected" : ""}>${l === "zh-CN" ? "中文" : "English"}</option>`).join("")}</select></label>`;
  });
  document.querySelectorAll(".lang-select").forEach((sel) => {
    sel.onchange = async () => {
      await loadLang(sel.value);
      renderAll();
    };
  });
}

function renderHeader() {
  const me = state.me;
  if (!me) return;
  $("#who-name").textContent = me.display_name || me.username;
  $("#who-station").textContent = me.station ? `${me.station.name} (${t(`tier.${me.station.tier}`)})` : t("header.county");
  $("#who-role").textContent = code("header.role", me.role);
  $(".top .who").title = $(".top .who").textContent; // the whole text when the header cuts it
  // the supervisors' pages only for those the reports API lets in
  document.querySelectorAll("nav .sv-only").forEach((a) => { a.hidden = !canOversee(me); });
  // a speaker, struck through when muted (inline SVG: no emoji font needed)
  $("#mute").innerHTML = `<svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true"><path d="M4 9h4l5-4v14l-5-4H4z" fill="currentColor"/>${state.muted
    ? '<path d="M16 9l5 6M21 9l-5 6" stroke="currentColor" stroke-width="2"/>'
    : '<path d="M16 8a5 5 0 0 1 0 8M18.5 5.5a9 9 0 0 1 0 13" fill="none" stroke="currentColor" stroke-width="2"/>'}</svg>`;
  $("#mute").setAttribute("aria-label", state.muted ? t("queue.unmute") : t("queue.mute"));
  $("#mute").setAttribute("aria-pressed", String(state.muted));
  $("#mute").title = t("alarm.p1_never_muted");
  $("#conn-state").textContent = state.connected ? t("conn.live") : t("conn.connecting");
}

function renderAll() {
  applyStatic();
  renderLangSwitches();
  renderHeader();
  if (state.me) {
    renderQueue();
    renderFailures();
    if (state.view === "queue") {
      if (state.detail) renderDetail();
      else loadDetail();
    } else route();
  }
}

async function startApp() {
  try {
    state.me = await api("/api/v1/console/me");
  } catch {
    return showLogin();
  }
  setZone(state.me.timezone);
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
  renderAll();
  startAlarm({ onOpen: (id) => { location.hash = `#/call/${id}`; } });
  connect();
  startStallWatch();
  await route();
}

function showLogin(message = "") {
  $("#app-view").hidden = true;
  $("#login-view").hidden = false;
  $("#login-error").textContent = message;
  applyStatic();
  renderLangSwitches();
  $("#login-username").focus();
}

// The sign-out button: end this token on the server too, so it is worthless if copied.
function logOut() {
  const tok = state.token;
  signOut();
  if (tok) {
    fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${tok}` } }).catch(() => {});
  }
}

function signOut(message = "") {
  if (state.es && state.es.close) state.es.close();
  state.es = null;
  state.token = null;
  state.me = null;
  state.calls.clear();
  state.selected = null;
  state.detail = null;
  state.lastEventId = null;
  state.connected = false;
  state.everConnected = false;
  failures.data = null;
  $("#failures").hidden = true;
  sessionStorage.removeItem("carecall.token");
  $("#conn-banner").hidden = true;
  stopStallWatch();
  stopAlarm();
  showLogin(message);
}

$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  unlockAudio();
  $("#login-error").textContent = "";
  try {
    const r = await api("/api/v1/auth/token", {
      method: "POST",
      form: { username: $("#login-username").value.trim(), password: $("#login-password").value },
    });
    state.token = r.access_token;
    sessionStorage.setItem("carecall.token", state.token);
    $("#login-password").value = "";
    await startApp();
  } catch (err) {
    $("#login-error").textContent = err.status === 401
      ? t("login.failed")
      : err.status === 423
        ? t("login.locked", { minutes: Math.max(1, Math.ceil((err.retryAfter || 60) / 60)) })
        : err.status === 429
          ? t("login.throttled", { seconds: err.retryAfter || 60 })
          : t("login.error", { message: errText(err) });
  }
});

$("#logout").addEventListener("click", () => logOut());
$("#mute").addEventListener("click", () => { state.muted = !state.muted; setMuted(state.muted); renderHeader(); });
$("#queue-list").addEventListener("click", (e) => {
  if (handleQueueClick(e)) return;
  const btn = e.target.closest(".call-btn");
  if (btn) select(Number(btn.dataset.id));
});
$("#detail").addEventListener("click", (e) => {
  const btn = e.target.closest(".act");
  if (btn) startAction(btn.dataset.action);
});
document.addEventListener("click", unlockAudio);
window.addEventListener("hashchange", route);

// Keyboard: ↑/↓ move through the queue; letters act on the selected call. Ignored while
// typing in a field or with a dialog open, so a note never triggers an action.
document.addEventListener("keydown", (e) => {
  if (!state.me || state.view !== "queue" || e.ctrlKey || e.metaKey || e.altKey) return;
  if ($("#action-dialog").open) return;
  const tag = (e.target.tagName || "").toLowerCase();
  if (["input", "textarea", "select"].includes(tag)) return;
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    const list = visible;
    if (!list.length) return;
    const i = list.findIndex((c) => c.id === state.selected);
    const next = e.key === "ArrowDown" ? Math.min(list.length - 1, i + 1) : Math.max(0, i - 1);
    e.preventDefault();
    select(list[i === -1 ? 0 : next].id);
    return;
  }
  const hit = ACTIONS.find(([, key]) => key === e.key.toUpperCase());
  if (hit) {
    e.preventDefault();
    startAction(hit[0]);
  }
});

(async () => {
  await loadLang(preferredLang(), false);
  if (state.token) await startApp();
  else showLogin();
})();
