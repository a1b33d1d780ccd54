// The stall alarm's banner: while automatic dispatch is delayed (a stored alarm not taken
// into a call, a timer not firing, device acks or notifications not going out, a
// dispatcher loop stuck), every operator sees a red banner naming the part, until it
// clears. The server's monitor checks every few seconds (docs/operations.md); the page
// asks GET /api/v1/health/dispatch every POLL_MS, which the server answers from memory.
import { fmtDuration, fmtTime, has, t } from "./i18n.js";

const POLL_MS = 3000;
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

let timer = null;
let last = []; // the stalled parts last shown, re-rendered on a language change

function partLabel(p) {
  if (p.part.startsWith("loop:")) return t("stall.part.loop", { loop: p.part.slice(5) });
  return has(`stall.part.${p.part}`) ? t(`stall.part.${p.part}`) : p.part;
}

export function renderStall(parts = last) {
  last = parts;
  const el = document.querySelector("#stall-banner");
  if (!el) return;
  if (!parts.length) {
    el.hidden = true;
    el.innerHTML = "";
    delete el.dataset.parts;
    return;
  }
  el.dataset.parts = parts.map((p) => p.part).join(" ");
  el.innerHTML = `<strong class="stall-title">${esc(t("stall.title"))}</strong>
    <ul class="stall-parts">${parts.map((p) => `<li data-part="${esc(p.part)}">${esc(partLabel(p))}${p.reporter ? ` <span class="small">(${esc(p.reporter)})</span>` : ""}:
      ${esc(t("stall.age", { age: fmtDuration(p.age_s * 1000), limit: fmtDuration(p.limit_s * 1000) }))}${p.since ? ` · ${esc(t("stall.since", { time: fmtTime(p.since) }))}` : ""}</li>`).join("")}</ul>`;
  el.hidden = false;
}

async function poll() {
  const token = sessionStorage.getItem("carecall.token");
  if (!token) return;
  try {
    const r = await fetch("/api/v1/health/dispatch", { headers: { Accept: "application/json", Authorization: `Bearer ${token}` } });
    if (!r.ok) return; // signed out or a server not answering: the connection banner says so
    const body = await r.json();
    renderStall(Array.isArray(body.stalled) ? body.stalled : []);
  } catch {
    // offline: keep what was last known; the connection banner shows the outage
  }
}

export function startStallWatch() {
  stopStallWatch();
  poll();
  timer = setInterval(poll, POLL_MS);
}

export function stopStallWatch() {
  if (timer !== null) clearInterval(timer);
  timer = null;
  renderStall([]);
}
