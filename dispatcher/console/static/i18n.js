// Message catalogues and time formatting. Every visible string comes from
// i18n/<lang>.json; times are shown in the station's time zone, not the browser's,
// so an operator on a county PC set to UTC still reads local (Asia/Shanghai) times.
export const LANGS = ["zh-CN", "en"];
const CHOSEN = "carecall.lang"; // set only when the person picks a language
let lang = "zh-CN";
let messages = {};
let zone = "Asia/Shanghai";
// Keys asked for but missing from the catalogue: shown as the key itself on the page and
// collected here, so a browser test (and a curious admin in devtools) can list them.
const missing = new Set();
globalThis.carecallI18nMissing = missing;

// The browser's languages decide until the person picks one: any zh* → 中文, else English.
export function browserLang(langs = navigator.languages || [navigator.language || ""]) {
  const first = (langs.find((l) => l) || "").toLowerCase();
  return first.startsWith("zh") ? "zh-CN" : "en";
}

export function preferredLang() {
  const chosen = localStorage.getItem(CHOSEN);
  return LANGS.includes(chosen) ? chosen : browserLang();
}

// remember: the person chose it (the language switch), so it sticks on the next visit.
export async function loadLang(wanted, remember = true) {
  lang = LANGS.includes(wanted) ? wanted : "zh-CN";
  const r = await fetch(`/console/static/i18n/${lang}.json`);
  messages = await r.json();
  missing.clear();
  document.documentElement.lang = lang;
  if (remember) localStorage.setItem(CHOSEN, lang);
  return lang;
}

export function currentLang() { return lang; }
export function setZone(z) { zone = z || "Asia/Shanghai"; }

export function t(key, vars = {}) {
  const text = messages[key];
  if (text === undefined) { // a missing key shows itself, never silently blank
    missing.add(key);
    return key;
  }
  return text.replace(/\{(\w+)\}/g, (_, k) => (vars[k] === undefined ? `{${k}}` : String(vars[k])));
}

export function has(key) { return Object.prototype.hasOwnProperty.call(messages, key); }

// A code the server sends (a status, a reason, a role…) as words: the catalogue's
// "<domain>.<value>". A code without a translation shows as that key (visible, and listed
// in carecallI18nMissing), never as a bare code that looks deliberate.
export function code(domain, value) {
  if (value === null || value === undefined || value === "") return "";
  return t(`${domain}.${value}`);
}

// Who did something on a timeline: a person's name; devices, family contacts and the
// dispatcher's own workers ("intake", "host-1:watchdog"…) in words.
export function actorLabel(actor) {
  const [kind, ...rest] = String(actor || "").split(":");
  const who = rest.join(":");
  if (kind === "user" && who) return who;
  if (kind === "device" && who) return t("actor.device", { id: who });
  if (kind === "contact" && who) return t("actor.contact");
  return t("actor.system");
}

// A list of codes, e.g. a call's priority reasons, in the language's list style.
export function codes(domain, values) {
  return (values || []).map((v) => code(domain, v)).join(lang === "zh-CN" ? "；" : "; ");
}

// Fill every [data-i18n] / [data-i18n-label] element under root.
export function applyStatic(root = document) {
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll("[data-i18n-label]").forEach((el) => {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  });
  document.title = t("app.title");
}

export function fmtTime(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(lang, {
    timeZone: zone, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  }).format(new Date(iso));
}

export function fmtDateTime(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(lang, {
    timeZone: zone, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hour12: false,
  }).format(new Date(iso));
}

// A running clock: 0:42, 12:05, 1:02:03.
export function fmtDuration(ms) {
  const neg = ms < 0;
  let s = Math.floor(Math.abs(ms) / 1000);
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const pad = (n) => String(n).padStart(2, "0");
  const body = h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  return neg ? `-${body}` : body;
}
