// The phone app's service worker: caches the app shell (page, script, style, catalogues,
// icon) so the app opens without a signal, and NEVER caches call data: every /api/
// request goes to the network, and fails plainly when offline.
const SHELL = "carecall-phone-v1";
const FILES = [
  "/m/",
  "/m/static/phone.js",
  "/m/static/phone.css",
  "/m/static/i18n/zh-CN.json",
  "/m/static/i18n/en.json",
  "/m/static/icon.svg",
  "/m/manifest.webmanifest",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== SHELL).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/api/")) return; // call data: network only, never stored
  if (!FILES.includes(url.pathname)) return;
  // network first (a new release shows at once), the cached shell when offline
  event.respondWith(
    fetch(event.request)
      .then((r) => {
        const copy = r.clone();
        if (r.ok) caches.open(SHELL).then((c) => c.put(event.request, copy));
        return r;
      })
      .catch(() => caches.match(event.request)),
  );
});
