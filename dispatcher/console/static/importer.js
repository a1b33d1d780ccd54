// Registry files from the console (admins only): pick a CSV or XLSX file, send it as it
// is to POST /api/v1/registry/import, and show what became of it: the counts, or every
// problem as a table (file, row, column, value, reason). The import is all-or-nothing,
// so a refused file wrote nothing; fix the rows and send it again.
import { code, has, t } from "./i18n.js";

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const KINDS = ["stations", "staff", "homes", "residents", "devices"];
const COLUMNS = ["file", "row", "column", "value", "reason"];

// Parameters that are codes themselves: worded by their own catalogue domain.
const CODED_PARAMS = {
  tier: "tier", parent_tier: "tier", child_tier: "tier", expected: "tier", kind: "importer.kind", noun: "importer.noun",
};

// A problem in the reader's language: the server's reason code and parameters through
// the catalogue (importer.reason.<code>); the server's English text when it sent no
// code (or one this console does not know yet).
export function reasonText(e) {
  const key = `importer.reason.${e.code}`;
  if (!e.code || !has(key)) return e.reason;
  const params = { ...(e.params || {}) };
  for (const [name, domain] of Object.entries(CODED_PARAMS)) {
    if (params[name] !== undefined && has(`${domain}.${params[name]}`)) params[name] = code(domain, params[name]);
  }
  const reason = t(key, params);
  if (params.contact !== undefined && params.field !== undefined) return t("importer.reason.at_contact", { ...params, reason });
  if (params.at !== undefined) return t("importer.reason.at", { at: params.at, reason });
  return reason;
}

function cell(e, c) {
  if (c === "row") return e.row || "";
  return c === "reason" ? reasonText(e) : e[c];
}

function errorTable(errors) {
  const head = COLUMNS.map((c) => `<th>${esc(t(`importer.col_${c}`))}</th>`).join("");
  const rows = errors
    .map((e) => `<tr>${COLUMNS.map((c) => `<td>${esc(cell(e, c))}</td>`).join("")}</tr>`)
    .join("");
  return `<table class="import-errors"><thead><tr>${head}</tr></thead><tbody>${rows}</tbody></table>`;
}

function showResult(out, status, data) {
  if (status === 200) {
    out.innerHTML = data.files
      .map((f) => `<p>${esc(t("importer.done", { file: f.file, rows: f.rows, created: f.created, updated: f.updated }))}</p>`)
      .join("");
    return;
  }
  const detail = data && data.detail;
  if (status === 422 && detail && Array.isArray(detail.errors)) {
    out.innerHTML = `<p role="alert">${esc(t("importer.refused", { count: detail.errors.length }))}</p>${errorTable(detail.errors)}`;
    return;
  }
  const message = typeof detail === "string" ? detail : `HTTP ${status}`;
  out.innerHTML = `<p role="alert">${esc(t("importer.failed", { message }))}</p>`;
}

// Adds the import panel to `container`; `token()` gives the signed-in bearer token.
export function mountImporter(container, token) {
  const panel = document.createElement("section");
  panel.className = "panel importer";
  panel.setAttribute("aria-labelledby", "h-importer");
  const options = KINDS.map((k) => `<option value="${k}">${esc(code("registry.kind", k))}</option>`).join("");
  panel.innerHTML = `<h3 id="h-importer">${esc(t("importer.title"))}</h3>
    <p class="muted">${esc(t("importer.hint"))}</p>
    <form id="importer-form">
      <label>${esc(t("importer.file"))}<input id="importer-file" type="file" accept=".csv,.xlsx" required></label>
      <label>${esc(t("importer.kind"))}<select id="importer-kind"><option value="">${esc(t("importer.kind_auto"))}</option>${options}</select></label>
      <button type="submit">${esc(t("importer.send"))}</button>
    </form>
    <div id="importer-result" aria-live="polite"></div>`;
  container.appendChild(panel);
  const out = panel.querySelector("#importer-result");
  panel.querySelector("#importer-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = panel.querySelector("#importer-file").files[0];
    if (!file) return;
    const params = new URLSearchParams({ filename: file.name });
    const kind = panel.querySelector("#importer-kind").value;
    if (kind) params.set("kind", kind);
    out.textContent = t("importer.sending");
    try {
      const r = await fetch(`/api/v1/registry/import?${params}`, {
        method: "POST",
        headers: { Accept: "application/json", "Content-Type": "application/octet-stream", Authorization: `Bearer ${token()}` },
        body: file,
      });
      showResult(out, r.status, await r.json().catch(() => null));
    } catch (err) {
      out.innerHTML = `<p role="alert">${esc(t("importer.failed", { message: err.message }))}</p>`;
    }
  });
}
