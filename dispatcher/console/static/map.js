// The call's map, drawn as SVG from lat/lon alone: stations, the home (or where a watch
// said the resident is), the chosen station and its service-circle reach. Web Mercator
// pixel space, so an optional tile server (tile_url, on the station's own network)
// lines up underneath; without one nothing is fetched from anywhere.
import { t } from "./i18n.js";

const TILE = 256;
const W = 640;
const H = 360;

function project(lat, lon, z) {
  const scale = TILE * 2 ** z;
  const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return [((lon + 180) / 360) * scale, (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * scale];
}

function metersPerPixel(lat, z) {
  return (156543.03392 * Math.cos((lat * Math.PI) / 180)) / 2 ** z;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function drawMap(map, tileUrl) {
  const chosen = map.stations.find((s) => s.id === map.station_id);
  const pts = [[map.home.lat, map.home.lon], [map.target.lat, map.target.lon]];
  map.stations.forEach((s) => pts.push([s.lat, s.lon]));
  if (chosen) {
    // keep the whole circle on screen
    const dLat = map.reach_km / 111.32;
    const dLon = dLat / Math.cos((chosen.lat * Math.PI) / 180);
    pts.push([chosen.lat + dLat, chosen.lon + dLon], [chosen.lat - dLat, chosen.lon - dLon]);
  }
  // the largest integer zoom at which everything fits, with a margin
  let z = 17;
  let box;
  for (; z > 3; z--) {
    const xy = pts.map(([la, lo]) => project(la, lo, z));
    const xs = xy.map((p) => p[0]);
    const ys = xy.map((p) => p[1]);
    box = [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
    if (box[2] - box[0] < W * 0.9 && box[3] - box[1] < H * 0.9) break;
  }
  const cx = (box[0] + box[2]) / 2;
  const cy = (box[1] + box[3]) / 2;
  const x0 = cx - W / 2;
  const y0 = cy - H / 2;
  const at = (lat, lon) => {
    const [x, y] = project(lat, lon, z);
    return [x - x0, y - y0];
  };
  const parts = [];
  if (tileUrl) {
    const n = 2 ** z;
    for (let tx = Math.floor(x0 / TILE); tx <= Math.floor((x0 + W) / TILE); tx++) {
      for (let ty = Math.floor(y0 / TILE); ty <= Math.floor((y0 + H) / TILE); ty++) {
        if (ty < 0 || ty >= n) continue;
        const href = tileUrl.replace("{z}", z).replace("{x}", ((tx % n) + n) % n).replace("{y}", ty);
        parts.push(`<image href="${esc(href)}" x="${tx * TILE - x0}" y="${ty * TILE - y0}" width="${TILE}" height="${TILE}"/>`);
      }
    }
  } else {
    parts.push(`<rect width="${W}" height="${H}" class="map-bg"/>`);
    // a 1 km grid gives distances a feel without a base map
    const km = 1000 / metersPerPixel(map.home.lat, z);
    if (km > 12) {
      for (let x = (-x0 % km + km) % km; x < W; x += km) parts.push(`<line x1="${x}" y1="0" x2="${x}" y2="${H}" class="map-grid"/>`);
      for (let y = (-y0 % km + km) % km; y < H; y += km) parts.push(`<line x1="0" y1="${y}" x2="${W}" y2="${y}" class="map-grid"/>`);
    }
  }
  if (chosen) {
    const [sx, sy] = at(chosen.lat, chosen.lon);
    const r = (map.reach_km * 1000) / metersPerPixel(chosen.lat, z);
    parts.push(`<circle cx="${sx}" cy="${sy}" r="${r}" class="map-reach"><title>${esc(t("map.reach", { min: map.limit_min, km: map.reach_km }))}</title></circle>`);
  }
  for (const s of map.stations) {
    const [x, y] = at(s.lat, s.lon);
    const isChosen = s.id === map.station_id;
    const size = s.tier === "county" ? 9 : s.tier === "street" ? 7 : 5;
    // only the chosen station and the centres are labelled: community stations crowd
    // together, and their names are in the tooltip
    const label = isChosen || s.tier !== "community" ? `<text x="${x + size + 3}" y="${y + 4}">${esc(s.name)}</text>` : "";
    parts.push(`<g class="map-station${isChosen ? " chosen" : ""}" data-station="${esc(s.id)}"><rect x="${x - size}" y="${y - size}" width="${size * 2}" height="${size * 2}"/>${label}<title>${esc(isChosen ? t("map.chosen") : t("map.station"))}: ${esc(s.name)}</title></g>`);
  }
  const [hx, hy] = at(map.home.lat, map.home.lon);
  parts.push(`<g class="map-home"><circle cx="${hx}" cy="${hy}" r="7"/><title>${esc(t("map.home"))}: ${esc(map.home.address)}</title></g>`);
  if (Math.abs(map.target.lat - map.home.lat) > 1e-6 || Math.abs(map.target.lon - map.home.lon) > 1e-6) {
    const [tx, ty] = at(map.target.lat, map.target.lon);
    parts.push(`<g class="map-target"><path d="M${tx} ${ty - 12}l6 12h-12z"/><title>${esc(t("map.target"))}</title></g>`);
  }
  const legend = `<g class="map-legend" transform="translate(8 ${H - 52})"><rect class="legend-bg" width="230" height="46" rx="4"/>`
    + `<circle cx="14" cy="14" r="6" class="legend-home"/><text x="26" y="18">${esc(t("map.home"))}</text>`
    + `<rect x="90" y="8" width="12" height="12" class="legend-chosen"/><text x="108" y="18">${esc(t("map.chosen"))}</text>`
    + `<text x="8" y="38">${esc(t("map.reach", { min: map.limit_min, km: map.reach_km }))}</text></g>`;
  return `<svg class="map" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(t("map.title"))}">${parts.join("")}${legend}</svg>`
    + (tileUrl ? "" : `<p class="muted small">${esc(t("map.offline_note"))}</p>`);
}

// A small trend line for one series (hr or rr), with the resident's range shaded.
export function sparkline(points, key, range) {
  const vals = points.filter((p) => p[key] !== null && p[key] !== undefined);
  const w = 220;
  const h = 44;
  if (!vals.length) return "";
  const ys = vals.map((p) => p[key]).concat(range);
  const lo = Math.min(...ys) - 2;
  const hi = Math.max(...ys) + 2;
  const t0 = new Date(vals[0].at).getTime();
  const t1 = new Date(vals[vals.length - 1].at).getTime();
  const x = (p) => (t1 === t0 ? w - 4 : 4 + ((new Date(p.at).getTime() - t0) / (t1 - t0)) * (w - 8));
  const y = (v) => h - 3 - ((v - lo) / (hi - lo)) * (h - 6);
  const line = vals.map((p, i) => `${i ? "L" : "M"}${x(p).toFixed(1)} ${y(p[key]).toFixed(1)}`).join("");
  const band = `<rect x="0" y="${y(range[1])}" width="${w}" height="${Math.max(1, y(range[0]) - y(range[1]))}" class="spark-band"/>`;
  const dots = vals.map((p) => {
    const out = p[key] < range[0] || p[key] > range[1];
    return `<circle cx="${x(p).toFixed(1)}" cy="${y(p[key]).toFixed(1)}" r="2.5" class="${out ? "spark-out" : "spark-dot"}"/>`;
  }).join("");
  return `<svg class="spark" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${esc(t(key === "hr" ? "detail.hr" : "detail.rr"))}">${band}<path d="${line}" class="spark-line"/>${dots}</svg>`;
}
