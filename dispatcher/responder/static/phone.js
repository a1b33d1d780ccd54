// The responder's phone: pages pushed live, one-handed actions, sound until answered.
// Every string comes from i18n/<lang>.json; every asset is served by CareCall.
const $ = (sel, root = document) => root.querySelector(sel);
const LANGS = ["zh-CN", "en"];
const OUTCOMES = [
  "helped_on_site", "taken_to_hospital", "false_alarm", "no_access",
  "handed_to_120", "handed_to_110", "handed_to_119", "other",
];
const state = {
  token: sessionStorage.getItem("carecall.m.token"),
  lang: "zh-CN",
  messages: {},
  cards: [],
  es: null,
  audio: null,
  beeping: null,
  notified: new Set(),
  tab: sessionStorage.getItem("carecall.m.tab") || "calls",
  orders: [],
  visits: [],
  poll: null,
};

// ---------------------------------------------------------------- i18n
// remember: the person tapped a language; until then the browser's languages decide.
async function loadLang(wanted, remember = true) {
  state.lang = LANGS.includes(wanted) ? wanted : "zh-CN";
  const r = await fetch(`/m/static/i18n/${state.lang}.json`);
  state.messages = await r.json();
  missing.clear();
  document.documentElement.lang = state.lang;
  if (remember) localStorage.setItem("carecall.lang", state.lang);
  applyStatic();
  renderLangSwitch();
  render();
  renderOrders();
  renderVisits();
}

// Keys asked for but missing (shown as the key, or as the code itself for a code):
// listed for tests and for anyone checking a catalogue in devtools.
const missing = new Set();
globalThis.carecallI18nMissing = missing;
// free text from the registry, shown as written when the catalogue has no word for it
const FREE_TEXT = new Set(["condition", "relation"]);

function t(key, vars = {}) {
  const text = state.messages[key];
  if (text === undefined) { missing.add(key); return key; }
  return text.replace(/\{(\w+)\}/g, (_, k) => (vars[k] === undefined ? `{${k}}` : String(vars[k])));
}

function tr(prefix, code) {
  const key = `${prefix}.${code}`;
  if (Object.prototype.hasOwnProperty.call(state.messages, key)) return state.messages[key];
  if (!FREE_TEXT.has(prefix)) missing.add(key);
  return code;
}

function applyStatic() {
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  if (state.conn) $("#conn").textContent = t(state.conn);
  document.title = t("app.title");
}

function renderLangSwitch() {
  document.querySelectorAll(".lang-switch").forEach((box) => {
    box.replaceChildren(...LANGS.map((code) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = code === "zh-CN" ? "中文" : "English";
      b.setAttribute("aria-pressed", String(code === state.lang));
      b.addEventListener("click", () => loadLang(code));
      return b;
    }));
  });
}

function fmtTime(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(state.lang, { hour: "2-digit", minute: "2-digit", hour12: false }).format(new Date(iso));
}

// ---------------------------------------------------------------- network
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = "GET", json, form } = {}) {
  const headers = {};
  let body;
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = new URLSearchParams(form);
  let r;
  try {
    r = await fetch(path, { method, headers, body });
  } catch (err) {
    setOffline(true);
    throw new ApiError(0, t("offline"));
  }
  setOffline(false);
  if (r.status === 401 && state.token) { signOut(); throw new ApiError(401, t("login.again")); }
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) {
    const detail = data && data.detail;
    const message = typeof detail === "string" ? detail : (detail && detail.message) || r.statusText;
    throw new ApiError(r.status, message);
  }
  return data;
}

function setOffline(off) { $("#offline").hidden = !off && navigator.onLine; }
window.addEventListener("online", () => { setOffline(false); if (state.token) connect(); });
window.addEventListener("offline", () => setOffline(true));

// ---------------------------------------------------------------- sound & notifications
function audio() {
  if (!state.audio) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    state.audio = Ctx ? new Ctx() : null;
  }
  return state.audio;
}

function unlockAudio() {
  const ctx = audio();
  if (ctx && ctx.state === "suspended") ctx.resume().catch(() => {});
  $("#sound-blocked").hidden = true;
}

function beep() {
  const ctx = audio();
  if (!ctx) return;
  if (ctx.state !== "running") { $("#sound-blocked").hidden = false; return; }
  const osc = ctx.createOscillator();
  const gain = ctx.createGain();
  osc.type = "square";
  osc.frequency.value = 880;
  gain.gain.value = 0.25;
  osc.connect(gain).connect(ctx.destination);
  osc.start();
  osc.stop(ctx.currentTime + 0.35);
}

// Keeps sounding while any page waits for this person's answer.
function updateAlarm() {
  const waiting = state.cards.filter((c) => c.page_outcome === "pending");
  if (waiting.length && !state.beeping) {
    beep();
    state.beeping = setInterval(beep, 1200);
  } else if (!waiting.length && state.beeping) {
    clearInterval(state.beeping);
    state.beeping = null;
  }
  document.title = waiting.length ? `(${waiting.length}) ${t("app.title")}` : t("app.title");
  for (const c of waiting) {
    if (state.notified.has(c.page_id)) continue;
    state.notified.add(c.page_id);
    if ("Notification" in window && Notification.permission === "granted") {
      try {
        new Notification(t("notify.title"), { body: cardHeadline(c), tag: `page-${c.page_id}`, requireInteraction: true });
      } catch { /* some browsers only allow notifications from the service worker */ }
    }
  }
}

// ---------------------------------------------------------------- stream
// the connection line keeps its key, so a language switch rewrites it at once
function setConn(key) {
  state.conn = key;
  $("#conn").textContent = t(key);
}

async function connect() {
  if (state.es && state.es.close) state.es.close();
  const marker = {};
  state.es = marker;
  let ticket;
  try {
    ticket = (await api("/api/v1/auth/stream-ticket", { method: "POST" })).ticket;
  } catch (err) {
    if (state.es !== marker || !state.token) return;
    setConn("conn.retrying");
    setTimeout(() => { if (state.es === marker && state.token) connect(); }, 2000);
    return;
  }
  if (state.es !== marker || !state.token) return;
  const es = new EventSource(`/api/v1/m/stream?${new URLSearchParams({ ticket })}`);
  state.es = es;
  es.addEventListener("cards", (e) => {
    state.cards = JSON.parse(e.data).cards;
    setConn("conn.live");
    render();
  });
  es.addEventListener("ping", () => { setConn("conn.live"); });
  es.addEventListener("reconnect", () => { es.close(); if (state.es === es) connect(); });
  es.addEventListener("bye", () => { es.close(); signOut(); });
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED && state.es === es) {
      setConn("conn.retrying");
      setTimeout(() => { if (state.es === es && state.token) connect(); }, 2000);
    }
  };
}

// ---------------------------------------------------------------- rendering
function cardHeadline(c) {
  const types = c.event_types.map((x) => tr("event", x)).join(" · ") || tr("class", c.event_class);
  const who = c.resident ? c.resident.name : "";
  return `${c.priority} ${types}${who ? ` — ${who}` : ""}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((x) => x !== null && x !== undefined));
  return node;
}

function navLinks(c) {
  const name = encodeURIComponent(c.address || "");
  return [
    el("a", { href: `geo:${c.lat},${c.lon}?q=${c.lat},${c.lon}(${name})`, "data-nav": "geo" }, t("nav.map")),
    el("a", { href: `amapuri://route/plan/?dlat=${c.lat}&dlon=${c.lon}&dname=${name}&dev=1&t=0`, "data-nav": "amap" }, t("nav.amap")),
    el("a", { href: `baidumap://map/direction?destination=latlng:${c.lat},${c.lon}|name:${name}&coord_type=wgs84&mode=driving`, "data-nav": "baidu" }, t("nav.baidu")),
  ];
}

function actionButtons(c) {
  const buttons = [];
  const act = (label, cls, fn, wide = false) => buttons.push(
    el("button", { type: "button", class: `${cls}${wide ? " wide" : ""}`, onclick: fn }, label),
  );
  if (c.page_outcome === "pending") {
    act(t("action.accept"), "primary", () => answer(c, true), true);
    act(t("action.decline"), "danger", () => declineDialog(c), true);
    return buttons;
  }
  const s = c.assignment_state;
  if (s === "dispatched") act(t("action.en_route"), "go", () => phoneAct(c, "en-route"));
  if (s === "dispatched" || s === "en_route") act(t("action.on_scene"), "go", () => phoneAct(c, "arrive"));
  if (s === "on_scene") act(t("action.resolve"), "primary", () => resolveDialog(c));
  act(t("action.help"), "danger", () => phoneAct(c, "escalate", { reason: "responder_asked_for_help" }));
  return buttons;
}

function renderCard(c) {
  const r = c.resident;
  const resident = r ? el("div", { class: "resident" },
    el("div", {}, `${r.name} · ${tr("sex", r.sex)} · ${t("resident.age", { age: r.age })} · ${t("resident.capacity", { level: r.capacity_level })}${r.living_alone ? ` · ${t("resident.alone")}` : ""}`),
    r.conditions.length ? el("div", { class: "conditions" }, r.conditions.map((x) => tr("condition", x)).join("、")) : null,
    r.notes ? el("div", { class: "notes" }, `${t("resident.notes")}: ${r.notes}`) : null,
  ) : null;
  const contacts = c.contacts.map((k) => el("a", { href: `tel:${k.phone}`, "data-tel": "contact" }, `${t("call.contact")} ${k.name}（${tr("relation", k.relation)}）`));
  const stateLabel = c.page_outcome === "pending"
    ? t("state.paged", { time: fmtTime(c.paged_at) })
    : tr("assignment", c.assignment_state || "accepted");
  return el("article", {
    class: `call ${c.priority.toLowerCase()}${c.page_outcome === "pending" ? " paged" : ""}`,
    "data-call": String(c.call_id),
  },
  el("h2", {}, cardHeadline(c)),
  el("p", { class: "meta" }, el("span", { class: "state" }, stateLabel), ` ${c.station_name} · ${fmtTime(c.first_event_at)}`),
  resident,
  el("p", { class: "addr" }, c.address),
  el("div", { class: "links" }, ...navLinks(c), ...contacts),
  el("div", { class: "actions" }, ...actionButtons(c)));
}

function render() {
  if (!state.messages || $("#app-view").hidden) return;
  const box = $("#cards");
  box.replaceChildren(...state.cards.map(renderCard));
  $("#empty").hidden = state.cards.length > 0;
  const paged = state.cards.filter((c) => c.page_outcome === "pending").length;
  setBadge("calls", state.cards.length, paged > 0);
  updateAlarm();
}

// ---------------------------------------------------------------- actions
async function run(fn) {
  try {
    await fn();
  } catch (err) {
    alert(err.message || String(err));
  }
}

function answer(c, accept, reason = "") {
  unlockAudio();
  return run(async () => {
    const path = `/api/v1/m/pages/${c.page_id}/${accept ? "accept" : "decline"}`;
    await api(path, { method: "POST", json: accept ? undefined : { reason } });
    await refresh();
  });
}

function phoneAct(c, action, body = undefined) {
  unlockAudio();
  return run(async () => {
    await api(`/api/v1/m/calls/${c.call_id}/${action}`, { method: "POST", json: body });
    await refresh();
  });
}

function declineDialog(c) {
  const d = $("#decline-dialog");
  $("#decline-ok").onclick = (e) => { e.preventDefault(); d.close(); answer(c, false, $("#decline-reason").value); };
  $("#decline-cancel").onclick = () => d.close();
  d.showModal();
}

function resolveDialog(c) {
  const d = $("#resolve-dialog");
  $("#resolve-outcome").replaceChildren(...OUTCOMES.map((o) => el("option", { value: o }, tr("outcome", o))));
  $("#resolve-ok").onclick = (e) => {
    e.preventDefault();
    d.close();
    phoneAct(c, "resolve", { outcome: $("#resolve-outcome").value, note: $("#resolve-note").value || undefined });
  };
  $("#resolve-cancel").onclick = () => d.close();
  d.showModal();
}

async function refresh() {
  state.cards = await api("/api/v1/m/cards");
  render();
}

// ---------------------------------------------------------------- tabs: calls, orders, visits
// Orders and visits are not on the page stream: the open tab's list is fetched every
// POLL_MS while the app is visible, the other lists every BACKGROUND_MS (for the badges).
// Calls stay on the stream and are drawn above every tab.
const POLL_MS = 5000;
const BACKGROUND_MS = 30000;
const TABS = ["calls", "orders", "visits"];
const SERVICE_KINDS = ["meal", "mobility", "medical", "cleaning", "shopping", "bathing", "repair", "chat", "other"];
const RECENT_MS = 12 * 3600 * 1000;

function showTab(tab) {
  state.tab = TABS.includes(tab) ? tab : "calls";
  sessionStorage.setItem("carecall.m.tab", state.tab);
  for (const name of TABS) {
    $(`#${name}-panel`).hidden = name !== state.tab;
    const b = $(`#tab-${name}`);
    b.setAttribute("aria-selected", String(name === state.tab));
  }
  renderOrders();
  renderVisits();
  if (state.token && state.tab !== "calls") pollWork(true).catch(() => {});
}

function setBadge(tab, n, alert = false) {
  const badge = $(`#tab-${tab} .badge`);
  badge.hidden = !n;
  badge.textContent = String(n);
  badge.classList.toggle("alert", alert);
}

let pollTick = 0;
async function pollWork(onlyActive = false) {
  const wanted = [];
  const all = !onlyActive && pollTick % Math.round(BACKGROUND_MS / POLL_MS) === 0;
  if (all || state.tab === "orders") wanted.push(refreshOrders());
  if (all || state.tab === "visits") wanted.push(refreshVisits());
  await Promise.all(wanted);
}

function startPolling() {
  stopPolling();
  pollTick = 0;
  pollWork().catch(() => {});
  state.poll = setInterval(() => {
    pollTick += 1;
    if (document.visibilityState === "visible" && state.token) pollWork().catch(() => {});
  }, POLL_MS);
}

function stopPolling() {
  if (state.poll) clearInterval(state.poll);
  state.poll = null;
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.token && state.poll) pollWork(true).catch(() => {});
});

// ---------------------------------------------------------------- dates and durations
function fmtWhen(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  const opts = today
    ? { hour: "2-digit", minute: "2-digit", hour12: false }
    : { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false };
  return new Intl.DateTimeFormat(state.lang, opts).format(d);
}

function fmtDuration(seconds) {
  const minutes = Math.max(0, Math.round(seconds / 60));
  if (minutes < 60) return t("duration.min", { n: minutes });
  return t("duration.h_min", { h: Math.floor(minutes / 60), m: minutes % 60 });
}

function plusSeconds(iso, s) { return new Date(new Date(iso).getTime() + s * 1000); }

// When each service level falls due in the order's status (dispatcher/orders/levels.py).
function orderDeadlines(o) {
  const out = [];
  const lv = o.levels || {};
  if (["created", "assigned"].includes(o.status) && lv.accept_within_s !== undefined) {
    out.push(["accept", plusSeconds(o.created_at, lv.accept_within_s)]);
  }
  if (["created", "assigned", "accepted"].includes(o.status)) {
    if (o.booked_for) out.push(["start", plusSeconds(o.booked_for, lv.start_grace_s || 0)]);
    else if (lv.start_by_s !== undefined) out.push(["start", plusSeconds(o.created_at, lv.start_by_s)]);
  }
  if (o.status === "started" && o.started_at && lv.done_within_s !== undefined) {
    out.push(["done", plusSeconds(o.started_at, lv.done_within_s)]);
  }
  return out;
}

// ---------------------------------------------------------------- orders
const ORDER_RANK = { started: 0, accepted: 1, assigned: 2, created: 3 };

async function refreshOrders() {
  state.orders = await api("/api/v1/m/orders?status=all");
  renderOrders();
}

function showFlash(which, text) {
  const box = $(`#${which}-flash`);
  box.textContent = text;
  box.hidden = !text;
}

function orderCard(o) {
  const now = Date.now();
  const deadlines = orderDeadlines(o).map(([level, at]) => el("span", {
    class: `deadline${at.getTime() <= now ? " late" : ""}`, "data-level": level,
  }, t(`order.due.${level}`, { time: fmtWhen(at.toISOString()) })));
  const breached = (o.breached || []).map((level) => el("span", { class: "deadline late" }, t(`order.breached.${level}`)));
  const when = o.booked_for ? t("order.booked", { time: fmtWhen(o.booked_for) }) : t("order.asap");
  const progress = [];
  if (o.started_at && !o.done_at) {
    progress.push(el("p", { class: "progress" }, t("order.checked_in", {
      time: fmtTime(o.started_at), duration: fmtDuration((now - new Date(o.started_at).getTime()) / 1000),
    })));
  }
  const buttons = [];
  const act = (label, cls, fn) => buttons.push(el("button", { type: "button", class: `${cls} wide`, onclick: fn }, label));
  if (o.status === "assigned") act(t("order.accept"), "primary", () => orderAct(o, "accept"));
  if (o.status === "accepted") act(t("order.check_in"), "go", () => orderAct(o, "start"));
  if (o.status === "started") act(t("order.check_out"), "primary", () => checkoutDialog(o));
  return el("article", { class: `order st-${o.status}`, "data-order": String(o.id), "data-status": o.status },
    el("h2", {}, `${tr("kind", o.kind)} — ${o.resident_name}`),
    el("p", { class: "meta" }, el("span", { class: "state" }, tr("order.status", o.status)), ` #${o.id} · ${when}`),
    el("p", { class: "addr" }, o.address),
    el("div", { class: "links" }, ...navLinks(o)),
    o.request_notes ? el("p", { class: "notes" }, `${t("order.request_notes")}: ${o.request_notes}`) : null,
    o.visit_id ? el("p", { class: "source", "data-visit": String(o.visit_id) }, t("order.from_visit", { id: o.visit_id })) : null,
    deadlines.length || breached.length ? el("p", { class: "deadlines" }, ...deadlines, ...breached) : null,
    ...progress,
    buttons.length ? el("div", { class: "actions" }, ...buttons) : null);
}

function doneRow(o) {
  const text = o.status === "cancelled"
    ? t("order.cancelled_line", { reason: o.cancel_reason || "" })
    : t("order.done_line", { time: fmtTime(o.done_at), duration: fmtDuration(o.duration_s || 0) });
  return el("article", { class: `order done st-${o.status}`, "data-order": String(o.id), "data-status": o.status },
    el("p", {}, el("strong", {}, `${tr("kind", o.kind)} — ${o.resident_name}`), ` · ${tr("order.status", o.status)}`),
    el("p", { class: "meta" }, text),
    o.done_notes ? el("p", { class: "notes" }, `${t("checkout.notes")}: ${o.done_notes}`) : null);
}

function renderOrders() {
  if ($("#app-view").hidden) return;
  const open = state.orders.filter((o) => o.status in ORDER_RANK)
    .sort((a, b) => ORDER_RANK[a.status] - ORDER_RANK[b.status] || a.id - b.id);
  const since = Date.now() - RECENT_MS;
  const recent = state.orders.filter((o) => !(o.status in ORDER_RANK)
    && new Date(o.done_at || o.cancelled_at || o.closed_at || 0).getTime() >= since);
  setBadge("orders", open.filter((o) => o.status === "assigned").length || open.length,
    open.some((o) => o.status === "assigned"));
  // only the open tab's list is in the page (a hidden tab holds no links nor buttons)
  const shown = state.tab === "orders";
  $("#orders").replaceChildren(...(shown ? open.map(orderCard) : []));
  $("#orders-empty").hidden = !shown || open.length > 0;
  $("#orders-done-title").hidden = !shown || recent.length === 0;
  $("#orders-done").replaceChildren(...(shown ? recent.map(doneRow) : []));
}

function orderAct(o, action, body = undefined) {
  return run(async () => {
    const after = await api(`/api/v1/m/orders/${o.id}/${action}`, { method: "POST", json: body });
    if (action === "done") {
      showFlash("orders", t("order.done_flash", {
        kind: tr("kind", after.kind), name: o.resident_name, duration: fmtDuration(after.duration_s || 0),
      }));
    } else {
      showFlash("orders", "");
    }
    await refreshOrders();
  });
}

function checkoutDialog(o) {
  const d = $("#checkout-dialog");
  $("#checkout-notes").value = "";
  $("#checkout-duration").textContent = t("checkout.so_far", {
    duration: fmtDuration((Date.now() - new Date(o.started_at).getTime()) / 1000),
  });
  $("#checkout-ok").onclick = (e) => {
    e.preventDefault();
    d.close();
    orderAct(o, "done", { notes: $("#checkout-notes").value.trim() || undefined });
  };
  $("#checkout-cancel").onclick = () => d.close();
  d.showModal();
}

// ---------------------------------------------------------------- visits
async function refreshVisits() {
  state.visits = await api("/api/v1/m/visits");
  renderVisits();
}

function categoryLabel(category) {
  if (category.startsWith("risk:")) {
    // a risk rule's name comes from config/visits.yaml: its own words when the catalogue has them
    const rule = category.slice(5);
    return t("category.risk", { rule: state.messages[`risk.${rule}`] ?? rule });
  }
  return tr("category", category);
}

function visitCard(v) {
  const checkedIn = v.checkin_at ? el("p", { class: "progress", "data-checkin": v.checkin_lat === null ? "no-location" : "located" },
    t(v.checkin_lat === null ? "visit.checked_in_no_location" : "visit.checked_in_located", { time: fmtTime(v.checkin_at) })) : null;
  const buttons = [];
  if (!v.checkin_at) {
    buttons.push(el("button", { type: "button", class: "go visit-checkin", onclick: () => visitCheckIn(v) }, t("visit.check_in")));
  }
  buttons.push(el("button", { type: "button", class: `primary visit-record${v.checkin_at ? " wide" : ""}`, onclick: () => visitDialog(v) }, t("visit.record")));
  const mapQuery = encodeURIComponent(v.address || "");
  return el("article", { class: `visit st-${v.status}`, "data-visit": String(v.id), "data-status": v.status },
    el("h2", {}, `${v.resident_name} — ${categoryLabel(v.category)}`),
    el("p", { class: "meta" }, el("span", { class: "state" }, tr("visit.status", v.status)),
      ` ${t("visit.due", { time: fmtWhen(v.due_at) })}`,
      v.escalation_level > 0 ? el("span", { class: "deadline late" }, t("visit.escalated")) : null),
    el("p", { class: "addr" }, v.address),
    el("div", { class: "links" }, el("a", { href: `geo:0,0?q=${mapQuery}`, "data-nav": "geo" }, t("nav.map"))),
    checkedIn,
    el("div", { class: "actions" }, ...buttons));
}

const VISIT_RANK = { missed: 0, late: 1, due: 2 };
function renderVisits() {
  if ($("#app-view").hidden) return;
  const rows = [...state.visits].sort((a, b) => (VISIT_RANK[a.status] ?? 3) - (VISIT_RANK[b.status] ?? 3)
    || new Date(a.due_at) - new Date(b.due_at));
  const overdue = rows.filter((v) => v.status !== "due").length;
  setBadge("visits", rows.length, overdue > 0);
  const shown = state.tab === "visits";
  $("#visits").replaceChildren(...(shown ? rows.map(visitCard) : []));
  $("#visits-empty").hidden = !shown || rows.length > 0;
}

// The phone's position when the browser gives it within `ms`; otherwise none.
function here(ms = 8000) {
  return new Promise((resolve) => {
    if (!("geolocation" in navigator)) { resolve(null); return; }
    const timer = setTimeout(() => resolve(null), ms + 500);
    navigator.geolocation.getCurrentPosition(
      (p) => { clearTimeout(timer); resolve({ lat: +p.coords.latitude.toFixed(6), lon: +p.coords.longitude.toFixed(6) }); },
      () => { clearTimeout(timer); resolve(null); },
      { enableHighAccuracy: true, timeout: ms, maximumAge: 60000 },
    );
  });
}

function visitCheckIn(v) {
  return run(async () => {
    showFlash("visits", t("visit.locating"));
    const where = await here();
    await api(`/api/v1/m/visits/${v.id}/checkin`, { method: "POST", json: where || {} });
    showFlash("visits", "");
    await refreshVisits();
  });
}

// What an order the form opened is doing now, in the visitor's words (not "assigned to
// you": routing hands it to a provider or a station).
function openedState(status) {
  return status === "created" || status === "assigned" ? t(`visit.order_state.${status}`) : tr("order.status", status);
}

// After the form is saved: the visit, then each order it opened (kind, number, state).
function showRecorded(v, done) {
  const parts = [el("span", {}, t("visit.recorded", { name: v.resident_name }))];
  for (const o of done.orders || []) {
    parts.push(el("span", { class: "opened-order", "data-order": String(o.id), "data-kind": o.kind },
      t("visit.order_opened", { id: o.id, kind: tr("kind", o.kind), state: openedState(o.status) })));
  }
  if (!(done.orders || []).length && done.follow_up_needed) parts.push(el("span", {}, ` ${t("visit.follow_up_noted")}`));
  const box = $("#visits-flash");
  box.replaceChildren(...parts);
  box.hidden = false;
}

function visitDialog(v) {
  const d = $("#visit-dialog");
  $("#visit-form").reset();
  $("#visit-title").textContent = t("visit.form_title", { name: v.resident_name });
  const kinds = $("#visit-kinds");
  kinds.replaceChildren(el("legend", {}, t("visit.service_kinds")),
    ...SERVICE_KINDS.map((k) => el("label", { class: "choice" },
      el("input", { type: "checkbox", name: "kind", value: k, id: `visit-kind-${k}` }), el("span", {}, tr("kind", k)))));
  // a service to order is a follow-up: offered once follow-up is ticked
  kinds.disabled = true;
  $("#visit-service-note").disabled = true;
  $("#visit-error").textContent = "";
  $("#visit-follow-up").onchange = (e) => {
    kinds.disabled = !e.target.checked;
    $("#visit-service-note").disabled = !e.target.checked;
    if (!e.target.checked) {
      kinds.querySelectorAll("input").forEach((i) => { i.checked = false; });
      $("#visit-service-note").value = "";
    }
  };
  $("#visit-ok").onclick = async (e) => {
    e.preventDefault();
    const followUp = $("#visit-follow-up").checked;
    const chosen = followUp ? [...kinds.querySelectorAll("input:checked")].map((i) => i.value) : [];
    const form = {
      seen: $("#visit-form").elements.seen.value,
      health: $("#visit-health").value.trim(),
      living_conditions: $("#visit-living").value.trim(),
      needs_found: $("#visit-needs").value.trim(),
      follow_up_needed: followUp,
      service_kinds: chosen,
      service_note: chosen.length ? $("#visit-service-note").value.trim() : "",
      notes: $("#visit-notes").value.trim(),
    };
    try {
      // a retry of the same form (the answer was lost) answers the same visit and orders
      const done = await api(`/api/v1/m/visits/${v.id}/done`, { method: "POST", json: form });
      d.close();
      showRecorded(v, done);
      await refreshVisits();
      if (done.orders && done.orders.length) await refreshOrders();
    } catch (err) {
      $("#visit-error").textContent = err.message || String(err);
    }
  };
  $("#visit-cancel").onclick = () => d.close();
  d.showModal();
}

// ---------------------------------------------------------------- sign in / out
function signOut() {
  state.token = null;
  sessionStorage.removeItem("carecall.m.token");
  if (state.es && state.es.close) state.es.close();
  state.es = null;
  state.cards = [];
  state.orders = [];
  state.visits = [];
  stopPolling();
  if (state.beeping) { clearInterval(state.beeping); state.beeping = null; }
  $("#app-view").hidden = true;
  $("#login-view").hidden = false;
}

async function startApp() {
  const me = await api("/api/v1/m/me");
  $("#me-name").textContent = me.name;
  $("#me-station").textContent = me.station_name;
  $("#availability").value = me.availability;
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
  await refresh();
  connect();
  showTab(state.tab);
  startPolling();
}

$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  unlockAudio();
  if ("Notification" in window && Notification.permission === "default") Notification.requestPermission().catch(() => {});
  $("#login-error").textContent = "";
  try {
    const r = await api("/api/v1/auth/token", {
      method: "POST",
      form: { username: $("#login-username").value.trim(), password: $("#login-password").value },
    });
    state.token = r.access_token;
    sessionStorage.setItem("carecall.m.token", state.token);
    $("#login-password").value = "";
    await startApp();
  } catch (err) {
    $("#login-error").textContent = err.status === 401 ? t("login.failed")
      : err.status === 403 ? t("login.not_responder") : err.message;
    if (err.status === 403) signOut();
  }
});

$("#availability").addEventListener("change", (e) => run(async () => {
  await api("/api/v1/m/availability", { method: "PUT", json: { availability: e.target.value } });
}));
$("#logout").addEventListener("click", () => {
  if (state.token) fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${state.token}` } }).catch(() => {});
  signOut();
});
document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
$("#sound-enable").addEventListener("click", () => { unlockAudio(); beep(); });
document.addEventListener("click", unlockAudio, { once: true });

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/m/sw.js", { scope: "/m/" }).catch(() => {});
}

(async () => {
  const stored = localStorage.getItem("carecall.lang");
  const first = ((navigator.languages || []).find((l) => l) || navigator.language || "").toLowerCase();
  await loadLang(LANGS.includes(stored) ? stored : first.startsWith("zh") ? "zh-CN" : "en", false);
  setOffline(!navigator.onLine);
  if (state.token) {
    try { await startApp(); return; } catch { signOut(); }
  }
  signOut();
})();
