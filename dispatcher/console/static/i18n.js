// Message catalogues and time formatting. Every visible string comes from
// i18n/<lang>.json; times are shown in the station's time zone, not the browser's,
// so an operator on a county PC set to UTC still reads local (Asia/Shanghai) times.
export const LANGS = ["zh-CN", "en"];
let lang = "zh-CN";
let messages = {};
let zone = "Asia/Shanghai";

export async function loadLang(wanted) {
  lang = LANGS.includes(wanted) ? wanted : "zh-CN";
  const r = await fetch(`/console/static/i18n/${lang}.json`);
  messages = await r.json();
  document.documentElement.lang = lang;
  localStorage.setItem("carecall.lang", lang);
  return lang;
}

export function currentLang() { return lang; }
export function setZone(z) { zone = z || "Asia/Shanghai"; }

export function t(key, vars = {}) {
  const text = messages[key];
  if (text === undefined) return key; // a missing key shows itself, never silently blank
  return text.replace(/\{(\w+)\}/g, (_, k) => (vars[k] === undefined ? `{${k}}` : String(vars[k])));
}

export function has(key) { return Object.prototype.hasOwnProperty.call(messages, key); }

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
