// The call's map: Leaflet (vendored, served from here) over the county's street map, a
// PMTiles archive that CareCall serves itself at /console/basemap.pmtiles (a deployment's
// own county extract, or the demo county's generated map), read by the vendored pmtiles
// library with HTTP range requests. Nothing is fetched from anywhere else.
//
// drawMap() returns HTML at once (app.js puts it in the page with innerHTML): the SVG
// sketch drawn from lat/lon alone (stations, the home, where a watch said the resident
// is, the service circle). Right after, the Leaflet map is built in the same box and the
// sketch is hidden; if the basemap or Leaflet cannot be loaded, the sketch stays.
// With tile_url set (a tile server on the station's own network, which the CSP allows)
// Leaflet shows that instead of the archive.
import { t } from "./i18n.js";

const BASEMAP_URL = "/console/basemap.pmtiles";
const VENDOR = "/console/static/vendor";
const MAP_HEIGHT = 320;
const NEAREST = 3; // stations besides the chosen one kept in view
const COLORS = { home: "#dc2626", target: "#f59e0b", chosen: "#2563eb", station: "#6b7280", reach: "#2563eb" };

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

let seq = 0;
const live = new Set(); // Leaflet maps on the page (removed once their box is gone)
const views = new Map(); // call key → the view the operator moved to, kept across re-renders

export function drawMap(map, tileUrl) {
  const id = `callmap-${++seq}`;
  // app.js puts the HTML in the page synchronously after this returns
  setTimeout(() => mountMap(id, map, tileUrl).catch((err) => console.warn("map:", err.message)), 0);
  return `<div class="callmap" id="${id}">${drawSketch(map, tileUrl)}</div>`;
}

let leafletLoad = null;
function loadLeaflet() {
  if (!leafletLoad) {
    const css = new Promise((resolve, reject) => {
      const link = document.createElement("link");
      link.rel = "stylesheet";
      link.href = `${VENDOR}/leaflet/leaflet.css`;
      link.onload = resolve;
      link.onerror = () => reject(new Error("leaflet.css did not load"));
      document.head.append(link);
    });
    leafletLoad = Promise.all([import(`${VENDOR}/leaflet/leaflet-src.esm.js`), css]).then(([L]) => L);
    leafletLoad.catch(() => { leafletLoad = null; });
  }
  return leafletLoad;
}

let archiveLoad = null;
function loadArchive() {
  if (!archiveLoad) {
    archiveLoad = new Promise((resolve, reject) => {
      if (window.pmtiles) { resolve(window.pmtiles); return; }
      const script = document.createElement("script");
      script.src = `${VENDOR}/pmtiles/pmtiles.js`;
      script.onload = () => (window.pmtiles ? resolve(window.pmtiles) : reject(new Error("pmtiles.js did not load")));
      script.onerror = () => reject(new Error("pmtiles.js did not load"));
      document.head.append(script);
    }).then(async (pm) => {
      const archive = new pm.PMTiles(BASEMAP_URL);
      const header = await archive.getHeader(); // no basemap (404) → rejected
      let attribution = "";
      try { attribution = (await archive.getMetadata())?.attribution || ""; } catch { /* optional */ }
      return { archive, header, attribution };
    });
    // a missing archive is asked for again when the next call is opened
    archiveLoad.catch(() => { archiveLoad = null; });
  }
  return archiveLoad;
}

const MIME = { 2: "image/png", 3: "image/jpeg", 4: "image/webp", 5: "image/avif" };

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

// pmtiles' own leafletRasterLayer shows tiles through blob: URLs, which the console's CSP
// (img-src 'self' data:) refuses; the same tiles as data: URLs need no change to it.
function archiveLayer(L, { archive, header, attribution }) {
  const mime = MIME[header.tileType];
  if (!mime) throw new Error(`unsupported basemap tile type ${header.tileType}`);
  const Layer = L.GridLayer.extend({
    createTile(coords, done) {
      const img = document.createElement("img");
      img.alt = "";
      img.setAttribute("role", "presentation");
      archive.getZxy(coords.z, coords.x, coords.y).then((tile) => {
        if (!tile) { done(null, img); return; }
        img.onload = () => done(null, img);
        img.onerror = () => done(new Error("tile"), img);
        img.src = `data:${mime};base64,${base64(tile.data)}`;
      }, (err) => done(err, img));
      return img;
    },
  });
  return new Layer({
    minNativeZoom: header.minZoom,
    maxNativeZoom: header.maxZoom,
    maxZoom: 19,
    bounds: L.latLngBounds([header.minLat, header.minLon], [header.maxLat, header.maxLon]),
    attribution: esc(attribution),
  });
}

function km(a, b) {
  const rad = Math.PI / 180;
  const h = Math.sin(((b[0] - a[0]) * rad) / 2) ** 2
    + Math.cos(a[0] * rad) * Math.cos(b[0] * rad) * Math.sin(((b[1] - a[1]) * rad) / 2) ** 2;
  return 12742 * Math.asin(Math.sqrt(h));
}

function moved(map) {
  return Math.abs(map.target.lat - map.home.lat) > 1e-6 || Math.abs(map.target.lon - map.home.lon) > 1e-6;
}

// Styles are set as properties (CSSOM), never as style attributes: the CSP has no
// 'unsafe-inline' for styles.
function legend(L, map) {
  const Legend = L.Control.extend({
    onAdd() {
      const box = L.DomUtil.create("div", "leaflet-control map-legend-box");
      Object.assign(box.style, { background: "#ffffffe6", padding: "4px 8px", borderRadius: "4px", font: "12px/1.5 system-ui, sans-serif", color: "#1f2937" });
      const row = (color, text, round) => {
        const line = L.DomUtil.create("div", "", box);
        const dot = L.DomUtil.create("span", "", line);
        Object.assign(dot.style, { display: "inline-block", width: "10px", height: "10px", marginRight: "6px", background: color, borderRadius: round ? "50%" : "2px", verticalAlign: "middle" });
        line.append(document.createTextNode(text));
      };
      row(COLORS.home, t("map.home"), true);
      if (moved(map)) row(COLORS.target, t("map.target"), true);
      if (map.station_id) row(COLORS.chosen, t("map.chosen"), false);
      row(`${COLORS.reach}44`, t("map.reach", { min: map.limit_min, km: map.reach_km }), true);
      return box;
    },
  });
  return new Legend({ position: "bottomleft" });
}

async function mountMap(id, map, tileUrl) {
  for (const m of live) {
    if (!m.getContainer().isConnected) { m.remove(); live.delete(m); }
  }
  if (!document.getElementById(id)) return;
  const [L, base] = await Promise.all([loadLeaflet(), tileUrl ? null : loadArchive()]);
  const box = document.getElementById(id);
  if (!box) return; // the call was closed or re-drawn meanwhile
  const el = document.createElement("div");
  el.className = "callmap-leaflet";
  el.setAttribute("role", "region");
  el.setAttribute("aria-label", t("map.title"));
  el.style.height = `${MAP_HEIGHT}px`;
  el.style.borderRadius = "4px";
  box.prepend(el);
  const lmap = L.map(el, { zoomSnap: 1, scrollWheelZoom: false });
  live.add(lmap);
  lmap.attributionControl.setPrefix(false);
  (tileUrl ? L.tileLayer(tileUrl, { maxZoom: 19 }) : archiveLayer(L, base)).addTo(lmap);

  const home = [map.home.lat, map.home.lon];
  const target = [map.target.lat, map.target.lon];
  // the service circle around where help must go: a station inside it reaches in time
  L.circle(target, {
    radius: map.reach_km * 1000, color: COLORS.reach, weight: 2, dashArray: "6 4",
    fillOpacity: 0.06, interactive: false, className: "map-reach-area",
  }).addTo(lmap);
  const chosen = map.stations.find((s) => s.id === map.station_id);
  const nearest = map.stations
    .filter((s) => s !== chosen)
    .map((s) => [km(target, [s.lat, s.lon]), s])
    .sort((a, b) => a[0] - b[0])
    .slice(0, NEAREST)
    .map(([, s]) => s);
  for (const s of map.stations) {
    const isChosen = s === chosen;
    L.circleMarker([s.lat, s.lon], {
      radius: s.tier === "county" ? 9 : s.tier === "street" ? 7 : 6,
      color: "#ffffff", weight: 2, fillColor: isChosen ? COLORS.chosen : COLORS.station, fillOpacity: 1,
      className: isChosen ? "map-station-marker chosen" : "map-station-marker",
    })
      .addTo(lmap)
      .bindTooltip(esc(`${isChosen ? t("map.chosen") : t("map.station")}: ${s.name}`), {
        permanent: isChosen, direction: "right", offset: [8, 0],
      });
  }
  if (moved(map)) {
    L.polyline([home, target], { color: COLORS.target, weight: 2, dashArray: "4 4", interactive: false }).addTo(lmap);
    L.circleMarker(target, { radius: 8, color: "#ffffff", weight: 2, fillColor: COLORS.target, fillOpacity: 1, className: "map-target-marker" })
      .addTo(lmap)
      .bindTooltip(esc(t("map.target")), { permanent: true, direction: "top", offset: [0, -8] });
  }
  L.circleMarker(home, { radius: 8, color: "#ffffff", weight: 2, fillColor: COLORS.home, fillOpacity: 1, className: "map-home-marker" })
    .addTo(lmap)
    .bindTooltip(esc(`${t("map.home")}: ${map.home.address}`), { direction: "top", offset: [0, -8] });
  legend(L, map).addTo(lmap);

  const key = `${map.home.id}|${map.target.lat},${map.target.lon}`;
  const saved = views.get(key);
  if (saved) {
    lmap.setView(saved.center, saved.zoom, { animate: false });
  } else {
    const pts = [home, target, ...nearest.map((s) => [s.lat, s.lon])];
    if (chosen) pts.push([chosen.lat, chosen.lon]);
    lmap.fitBounds(L.latLngBounds(pts), { padding: [28, 28], maxZoom: 16, animate: false });
  }
  lmap.on("moveend", () => views.set(key, { center: lmap.getCenter(), zoom: lmap.getZoom() }));
  // the sketch stays in the page (hidden), as it was before the map loaded
  for (const node of box.querySelectorAll(":scope > svg.map, :scope > p")) node.style.display = "none";
}

function drawSketch(map, tileUrl) {
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
