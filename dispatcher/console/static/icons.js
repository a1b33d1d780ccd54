// Event-type icons as inline SVG (no icon font, no network): a shape per kind of
// trouble so a glance tells a fall from a fire. Paths are simple, 24×24, currentColor.
const P = {
  sos: '<circle cx="12" cy="12" r="9" fill="none" stroke="currentColor" stroke-width="2"/><text x="12" y="16" text-anchor="middle" font-size="8" font-weight="700" fill="currentColor">SOS</text>',
  fall: '<circle cx="15" cy="5" r="2.2" fill="currentColor"/><path d="M13 8l-5 5 3 2-4 6M11 10l6 3M4 21h17" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/>',
  vital_alert: '<path d="M2 12h4l2-5 4 10 2-5h8" fill="none" stroke="currentColor" stroke-width="2" stroke-linejoin="round"/>',
  smoke: '<path d="M6 20c-2-3 2-4 0-7s2-5 3-8M12 20c-2-3 2-4 0-7s2-5 3-8M18 20c-2-3 2-4 0-7s2-5 3-8" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/>',
  gas: '<path d="M12 2c3 5 6 7 6 12a6 6 0 0 1-12 0c0-3 2-5 3-7 1 2 2 3 3 3 0-3-1-5 0-8z" fill="none" stroke="currentColor" stroke-width="2"/>',
  water_leak: '<path d="M12 3c3 5 6 8 6 11a6 6 0 0 1-12 0c0-3 3-6 6-11z" fill="none" stroke="currentColor" stroke-width="2"/>',
  inactivity: '<circle cx="12" cy="12" r="9" fill="none" stroke="currentColor" stroke-width="2"/><path d="M12 7v5l3 3" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/>',
  bed_exit: '<path d="M3 18V8M3 14h18v4M7 14v-3h8a3 3 0 0 1 3 3" fill="none" stroke="currentColor" stroke-width="2"/>',
  door_open: '<path d="M5 21V3h10v18M15 5l4 2v14M12 12h.01" fill="none" stroke="currentColor" stroke-width="2"/>',
  offline: '<path d="M2 8a15 15 0 0 1 20 0M5 12a10 10 0 0 1 14 0M8.5 15.5a5 5 0 0 1 7 0M3 3l18 18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/>',
  low_battery: '<rect x="2" y="7" width="18" height="10" rx="2" fill="none" stroke="currentColor" stroke-width="2"/><rect x="4" y="9" width="4" height="6" fill="currentColor"/><path d="M22 10v4" stroke="currentColor" stroke-width="2"/>',
  other: '<path d="M12 3l10 18H2z" fill="none" stroke="currentColor" stroke-width="2" stroke-linejoin="round"/><path d="M12 10v5M12 18h.01" stroke="currentColor" stroke-width="2"/>',
};

export function eventIcon(type) {
  const body = P[type] || P.other;
  return `<svg class="ev-icon" viewBox="0 0 24 24" width="22" height="22" aria-hidden="true" focusable="false">${body}</svg>`;
}
