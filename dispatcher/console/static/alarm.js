// Alarm sound, tab title and desktop notifications: everything the console does to be
// heard and seen when a call comes in. One place, so no second beep loop hides elsewhere.
//
// * Every priority has its own tone, generated with WebAudio (no sound files): P1 a loud
//   four-note square-wave siren that repeats every two seconds until the call is
//   *acknowledged* (opening it is not enough), P2 a two-note chime, P3 one note, P4 a
//   soft low note. P2–P4 sound once when the call arrives.
// * Browsers only allow sound after a click on the page. After a reload nobody has clicked
//   yet, so the AudioContext stays suspended: the page then says so plainly (a banner
//   with a button) and blinks the tab title until the first click, which starts the sound.
// * Desktop notifications (Notification API) when the operator allowed them: asked on the
//   first click, shown for each new call (and for ringing P1 calls while sound is blocked).
// * The mute button silences P2–P4 only: a P1 is never silent.
//
// `window.carecallAlarm.snapshot()` reports the state (context running, blocked, ringing
// calls, the tones scheduled) for diagnostics and the browser tests.
import { t } from "./i18n.js";

// [frequency Hz, start s, length s] per note; repeatMs 0: once.
export const PATTERNS = {
  P1: { wave: "square", gain: 0.35, repeatMs: 2000, notes: [[1047, 0, 0.17], [784, 0.2, 0.17], [1047, 0.4, 0.17], [784, 0.6, 0.17]] },
  P2: { wave: "square", gain: 0.2, repeatMs: 0, notes: [[880, 0, 0.2], [660, 0.24, 0.2]] },
  P3: { wave: "triangle", gain: 0.16, repeatMs: 0, notes: [[660, 0, 0.3]] },
  P4: { wave: "sine", gain: 0.1, repeatMs: 0, notes: [[440, 0, 0.4]] },
};
const RANK = { P1: 1, P2: 2, P3: 3, P4: 4 };
// Not yet acknowledged: a P1 in one of these rings on.
const UNANSWERED = new Set(["open", "assigned"]);

export function patternFor(priority) {
  return PATTERNS[priority] || PATTERNS.P4;
}

export function rings(call) {
  return call.priority === "P1" && UNANSWERED.has(call.status);
}

// What should sound now, given the ids already known (null: the page's first look, when
// nothing counts as new) and the open calls: the calls that are new, the P1 calls that
// ring, and the tone to play once for the new ones (the most urgent; none when a P1 rings,
// whose own loop covers it).
export function plan(known, calls) {
  const fresh = known === null ? [] : calls.filter((c) => !known.has(c.id));
  const ringing = calls.filter(rings);
  const top = fresh.map((c) => c.priority).sort((a, b) => (RANK[a] || 9) - (RANK[b] || 9))[0] || null;
  return { fresh, ringing, once: top && top !== "P1" ? top : null };
}

const alarm = {
  ctx: null,
  muted: false,
  known: null, // Set of call ids seen, null before the first snapshot
  ringing: [], // P1 calls not yet acknowledged
  blocked: false,
  loop: null,
  blink: null,
  baseTitle: null,
  plays: [], // the last tones scheduled: {priority, at, notes}
  notified: new Set(),
  onOpen: null,
  resuming: null, // a resume started by a click, not settled yet
  asked: false, // notification permission asked on this page
};

function audioContext() {
  if (!alarm.ctx) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (Ctx) alarm.ctx = new Ctx();
  }
  return alarm.ctx;
}

function running() {
  return !!alarm.ctx && alarm.ctx.state === "running";
}

function play(priority) {
  if (!running()) return false;
  if (alarm.muted && priority !== "P1") return false;
  const ctx = alarm.ctx;
  const p = patternFor(priority);
  const now = ctx.currentTime + 0.02;
  for (const [freq, start, len] of p.notes) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = p.wave;
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, now + start);
    gain.gain.exponentialRampToValueAtTime(p.gain, now + start + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + start + len);
    osc.connect(gain).connect(ctx.destination);
    osc.start(now + start);
    osc.stop(now + start + len + 0.02);
  }
  alarm.plays.push({ priority, at: now, wall: Date.now(), notes: p.notes.length });
  if (alarm.plays.length > 50) alarm.plays.shift();
  return true;
}

function syncLoop() {
  if (alarm.ringing.length && running()) {
    if (alarm.loop === null) {
      play("P1");
      alarm.loop = setInterval(() => play("P1"), PATTERNS.P1.repeatMs);
    }
  } else if (alarm.loop !== null) {
    clearInterval(alarm.loop);
    alarm.loop = null;
  }
}

// The tab title blinks while sound is blocked, and while a P1 rings in a hidden tab.
function syncBlink() {
  const want = alarm.blocked || (alarm.ringing.length > 0 && document.hidden);
  if (want && alarm.blink === null) {
    alarm.baseTitle = document.title;
    let on = false;
    alarm.blink = setInterval(() => {
      on = !on;
      const text = alarm.ringing.length ? t("alarm.title_p1", { n: alarm.ringing.length }) : t("alarm.title_blocked");
      document.title = on ? text : alarm.baseTitle;
    }, 700);
  } else if (!want && alarm.blink !== null) {
    clearInterval(alarm.blink);
    alarm.blink = null;
    document.title = alarm.baseTitle || document.title;
  }
}

function notice() {
  let el = document.getElementById("sound-notice");
  if (!el) return null;
  if (!el.dataset.ready) {
    el.dataset.ready = "1";
    el.addEventListener("click", () => unlock());
  }
  return el;
}

function renderNotice() {
  const el = notice();
  if (!el) return;
  el.hidden = !alarm.blocked;
  if (alarm.blocked) {
    el.innerHTML = "";
    const text = document.createElement("span");
    text.textContent = alarm.ringing.length ? t("alarm.blocked_p1", { n: alarm.ringing.length }) : t("alarm.blocked");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.id = "sound-enable";
    btn.textContent = t("alarm.enable");
    el.append(text, " ", btn);
  }
}

function setBlocked(blocked) {
  alarm.blocked = blocked;
  renderNotice();
  syncBlink();
}

function notify(call) {
  if (!("Notification" in window) || Notification.permission !== "granted" || alarm.notified.has(call.id)) return;
  alarm.notified.add(call.id);
  const title = t("alarm.notify_title", { priority: call.priority, id: call.id });
  const body = [call.resident_name, call.address || call.home_id, call.station_name].filter(Boolean).join(" · ");
  try {
    const n = new Notification(title, { body, tag: `carecall-call-${call.id}`, requireInteraction: call.priority === "P1", silent: true });
    n.onclick = () => {
      window.focus();
      if (alarm.onOpen) alarm.onOpen(call.id);
      n.close();
    };
  } catch {
    // some browsers only allow notifications from a service worker: the sound and title still work
  }
}

// A user gesture: start (or resume) the sound, and ask once for notifications.
export function unlock() {
  const ctx = audioContext();
  if (!alarm.asked && "Notification" in window && Notification.permission === "default") {
    alarm.asked = true; // once per page: browsers quieten sites that ask on every click
    try {
      const asked = Notification.requestPermission();
      if (asked && asked.catch) asked.catch(() => {});
    } catch {
      // an old browser with the callback-only form: no notifications, nothing else lost
    }
  }
  if (!ctx) return;
  const done = () => {
    if (running()) {
      setBlocked(false);
      syncLoop();
    }
  };
  if (ctx.state === "suspended") {
    const resuming = ctx.resume();
    alarm.resuming = resuming;
    resuming.then(done, () => {}).finally(() => { if (alarm.resuming === resuming) alarm.resuming = null; });
  } else done();
}

// The console has signed in (or come back after a reload): is sound allowed yet?
export function startAlarm({ onOpen } = {}) {
  alarm.onOpen = onOpen || null;
  const ctx = audioContext();
  if (!ctx) return;
  if (ctx.state === "running") setBlocked(false);
  else if (alarm.resuming) {
    // the sign-in click is starting the sound right now: no notice unless it fails
    const decide = () => setBlocked(!running());
    alarm.resuming.then(decide, decide);
  } else {
    setBlocked(true);
    ctx.resume().then(() => { if (running()) unlock(); }, () => {});
  }
}

// The open calls changed (a snapshot or a change on the stream).
export function updateAlarm(calls) {
  const list = [...calls];
  const { fresh, ringing, once } = plan(alarm.known, list);
  const firstLook = alarm.known === null;
  alarm.known = new Set(list.map((c) => c.id));
  alarm.ringing = ringing;
  if (once) play(once);
  for (const c of fresh) notify(c);
  if (firstLook && alarm.blocked) ringing.forEach(notify);
  syncLoop();
  syncBlink();
  if (alarm.blocked) renderNotice();
}

export function setMuted(muted) {
  alarm.muted = !!muted;
}

// Signed out: silence everything and forget the calls.
export function stopAlarm() {
  alarm.known = null;
  alarm.ringing = [];
  alarm.notified.clear();
  syncLoop();
  setBlocked(false);
}

document.addEventListener("visibilitychange", syncBlink);

window.carecallAlarm = {
  snapshot: () => ({
    context: alarm.ctx ? alarm.ctx.state : "none",
    blocked: alarm.blocked,
    muted: alarm.muted,
    ringing: alarm.ringing.map((c) => c.id),
    looping: alarm.loop !== null,
    blinking: alarm.blink !== null,
    plays: alarm.plays.map((p) => ({ ...p })),
    notifications: "Notification" in window ? Notification.permission : "unsupported",
  }),
};
