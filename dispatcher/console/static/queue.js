// The queue in a storm: filter by priority, type, station and status, group by one of
// them, search by resident name, address, device or call number; a mass offline incident
// is one line with its device count that expands into its homes, never a card per home.
//
// The decisions (which calls match, how they group) are pure functions over the calls
// the stream sends, exported for the browser tests; the toolbar and the list markup are
// drawn by createQueueTools / queueHtml, which app.js calls when the queue renders.

export const FACETS = ["priority", "type", "station", "status"];
export const GROUP_BY = ["none", ...FACETS];
export const EMPTY = Object.freeze({ priority: "", type: "", station: "", status: "", q: "", group: "none" });
const STORE = "carecall.queue";
const ORDER = {
  priority: ["P1", "P2", "P3", "P4"],
  status: ["open", "assigned", "acknowledged", "dispatched", "en_route", "on_scene"],
};

export function callTypes(c) {
  const types = [];
  for (const e of c.events || []) if (!types.includes(e.type)) types.push(e.type);
  return types.length ? types : [c.event_class];
}

export function isIncident(c) {
  return !!c.incident;
}

// A call's value for one facet (types: every type among its events).
export function facetValues(c, facet) {
  if (facet === "priority") return [c.priority];
  if (facet === "type") return isIncident(c) ? [c.event_class] : callTypes(c);
  if (facet === "station") return [c.station_id || ""];
  if (facet === "status") return [c.status];
  throw new Error(`unknown facet ${facet}`);
}

// Everything a search looks through, lower case: resident, address, home, devices (of
// the call's events and, for an incident, of every home still dark), station, call number.
export function searchText(c) {
  const parts = [c.resident_name, c.address, c.home_id, c.station_name, c.station_id, String(c.id)];
  for (const e of c.events || []) parts.push(e.device_id);
  if (c.incident) {
    parts.push(c.incident.area_name, c.incident.area_station_id);
    for (const it of c.incident.items || []) parts.push(it.device_id, it.home_id, it.address);
  }
  return parts.filter(Boolean).join("\n").toLowerCase();
}

// Words of the query must all appear (in any field): "幸福路 12" finds 幸福路12号.
export function matches(c, filters) {
  const f = { ...EMPTY, ...filters };
  for (const facet of FACETS) {
    if (f[facet] && !facetValues(c, facet).includes(f[facet])) return false;
  }
  const words = String(f.q || "").toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return true;
  const text = searchText(c);
  return words.every((w) => text.includes(w));
}

export function filterCalls(calls, filters) {
  return calls.filter((c) => matches(c, filters));
}

// For an incident line found by a search: the homes the words matched (all when none did
// in particular, e.g. the search hit the area's name).
export function matchingItems(c, q) {
  const items = (c.incident && c.incident.items) || [];
  const words = String(q || "").toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return items;
  const hit = items.filter((it) => {
    const text = [it.device_id, it.home_id, it.address].join("\n").toLowerCase();
    return words.every((w) => text.includes(w));
  });
  return hit.length ? hit : items;
}

// Groups in the calls' order (they come sorted by urgency), or the fixed order of
// priorities and statuses; a call with several types is grouped under its first.
export function groupCalls(calls, by) {
  if (!by || by === "none") return [{ key: null, calls: [...calls] }];
  if (!FACETS.includes(by)) throw new Error(`unknown grouping ${by}`);
  const groups = new Map();
  for (const c of calls) {
    const key = facetValues(c, by)[0];
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(c);
  }
  const order = ORDER[by];
  const keys = [...groups.keys()];
  if (order) keys.sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  return keys.map((key) => ({ key, calls: groups.get(key) }));
}

// The values present among the calls, with counts, for the filter menus.
export function facetOptions(calls, facet) {
  const counts = new Map();
  for (const c of calls) for (const v of new Set(facetValues(c, facet))) counts.set(v, (counts.get(v) || 0) + 1);
  return [...counts.entries()].map(([value, n]) => ({ value, n }));
}

// Normalise what was stored or typed: unknown values fall back to "all".
export function cleanFilters(raw) {
  const f = { ...EMPTY };
  if (!raw || typeof raw !== "object") return f;
  for (const k of [...FACETS, "q"]) if (typeof raw[k] === "string") f[k] = raw[k].slice(0, 200);
  if (GROUP_BY.includes(raw.group)) f.group = raw.group;
  return f;
}

export function isFiltered(f) {
  return FACETS.some((k) => f[k]) || !!String(f.q || "").trim();
}

// ------------------------------------------------------------------ drawing

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loadFilters() {
  try {
    return cleanFilters(JSON.parse(sessionStorage.getItem(STORE) || "null"));
  } catch {
    return { ...EMPTY };
  }
}

const view = { filters: loadFilters(), expanded: new Set(), onChange: null };

export function currentFilters() {
  return { ...view.filters };
}

function setFilters(next) {
  view.filters = cleanFilters(next);
  sessionStorage.setItem(STORE, JSON.stringify(view.filters));
  if (view.onChange) view.onChange();
}

// The label of a facet value in the menus and group headers.
function valueLabel(facet, value, calls, { t, eventLabel }) {
  if (facet === "priority") return value;
  if (facet === "type") return eventLabel(value);
  if (facet === "status") return t(`status.${value}`);
  const c = calls.find((x) => (x.station_id || "") === value);
  return value ? (c && c.station_name) || value : t("queue.no_station");
}

// The toolbar above the list: search, the four filters, grouping, clear. Drawn once;
// `sync` refreshes the menus' options (values present now) keeping the choices.
export function createQueueTools(root, { t, eventLabel, onChange }) {
  view.onChange = onChange;
  const ctx = { t, eventLabel };
  root.innerHTML = "";
  root.className = "queue-tools";
  const search = document.createElement("input");
  search.type = "search";
  search.id = "queue-search";
  search.value = view.filters.q;
  search.addEventListener("input", () => setFilters({ ...view.filters, q: search.value }));
  root.append(search);
  const selects = {};
  for (const facet of [...FACETS, "group"]) {
    const sel = document.createElement("select");
    sel.id = `queue-${facet}`;
    sel.addEventListener("change", () => setFilters({ ...view.filters, [facet]: sel.value }));
    selects[facet] = sel;
    root.append(sel);
  }
  const clear = document.createElement("button");
  clear.type = "button";
  clear.id = "queue-clear";
  clear.addEventListener("click", () => {
    search.value = "";
    setFilters({ ...EMPTY, group: view.filters.group });
  });
  root.append(clear);

  function sync(calls) {
    search.placeholder = t("queue.search");
    search.setAttribute("aria-label", t("queue.search"));
    clear.textContent = t("queue.clear_filters");
    clear.hidden = !isFiltered(view.filters);
    for (const facet of FACETS) {
      const sel = selects[facet];
      const chosen = view.filters[facet];
      const opts = facetOptions(calls, facet);
      if (chosen && !opts.some((o) => o.value === chosen)) opts.push({ value: chosen, n: 0 });
      const order = ORDER[facet];
      if (order) opts.sort((a, b) => (order.indexOf(a.value) + 1 || 99) - (order.indexOf(b.value) + 1 || 99));
      sel.setAttribute("aria-label", t(`queue.filter.${facet}`));
      redraw(sel, `<option value="">${esc(t(`queue.filter.${facet}_all`))}</option>${opts
        .map((o) => `<option value="${esc(o.value)}"${o.value === chosen ? " selected" : ""}>${esc(valueLabel(facet, o.value, calls, ctx))} (${o.n})</option>`)
        .join("")}`);
    }
    const g = selects.group;
    g.setAttribute("aria-label", t("queue.group.label"));
    redraw(g, GROUP_BY.map((k) => `<option value="${k}"${k === view.filters.group ? " selected" : ""}>${esc(t(`queue.group.${k}`))}</option>`).join(""));
  }
  // a menu is only redrawn when its options changed: one the operator has open stays open
  const drawn = new WeakMap();
  function redraw(sel, html) {
    if (drawn.get(sel) === html) return;
    drawn.set(sel, html);
    sel.innerHTML = html;
  }
  root.addEventListener("keydown", (e) => { if (e.key === "Escape" && e.target === search) { search.value = ""; setFilters({ ...view.filters, q: "" }); } });
  return { sync };
}

// The incident line's extra: its count, and the homes still dark when expanded.
function incidentExtra(c, { t }) {
  const inc = c.incident;
  const open = view.expanded.has(c.id) || (view.filters.q.trim() !== "");
  const items = matchingItems(c, view.filters.q);
  const dark = inc.devices - inc.back;
  const list = open
    ? `<ul class="inc-items">${items.map((it) => `<li data-device="${esc(it.device_id)}"><code>${esc(it.device_id)}</code> · ${esc(it.address || it.home_id)}</li>`).join("")}${
      dark > items.length && !view.filters.q.trim() ? `<li class="muted">${esc(t("queue.incident.more", { n: dark - items.length }))}</li>` : ""}</ul>`
    : "";
  return `<div class="inc-line"><span class="tag inc-count" data-devices="${inc.devices}" data-back="${inc.back}">${esc(t("queue.incident.count", { n: dark, total: inc.devices, back: inc.back }))}</span>
    <span class="inc-area">${esc(t(`queue.incident.cause.${inc.cause === "broker_restart" ? "broker_restart" : "mass_offline"}`))} · ${esc(inc.area_name)}</span>
    <button type="button" class="inc-toggle" data-id="${c.id}" aria-expanded="${open}">${esc(t(open ? "queue.incident.hide" : "queue.incident.show", { n: dark }))}</button></div>${list}`;
}

// The list's markup: filtered, grouped (a header with the count per group), each call
// drawn by app.js's `rowHtml(call, {cls, extra})`, an incident with its count and homes.
export function queueHtml(calls, { t, eventLabel, rowHtml }) {
  const shown = filterCalls(calls, view.filters);
  const groups = groupCalls(shown, view.filters.group);
  const html = groups.map((g) => {
    const head = g.key === null ? "" : `<li class="group-head" data-group="${esc(g.key)}" role="presentation"><span class="group-name">${esc(valueLabel(view.filters.group, g.key, calls, { t, eventLabel }))}</span> <span class="group-count">${g.calls.length}</span></li>`;
    return head + g.calls.map((c) => (isIncident(c) ? rowHtml(c, { cls: " incident", extra: incidentExtra(c, { t }) }) : rowHtml(c, {}))).join("");
  }).join("");
  return { html, shown };
}

// An incident's expand/collapse button (the list's click handler in app.js selects calls).
export function handleQueueClick(e) {
  const btn = e.target.closest(".inc-toggle");
  if (!btn) return false;
  const id = Number(btn.dataset.id);
  if (view.expanded.has(id)) view.expanded.delete(id);
  else view.expanded.add(id);
  if (view.onChange) view.onChange();
  return true;
}
