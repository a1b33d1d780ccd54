"""``carecall bench``'s lane phases (issue 15; carecall/shell/bench.py drives them):

- **contended**: the alarm path and the storm again, on homes of their own, while a
  bounded helper process (carecall/shell/bench_hog.py) keeps one core busy; and the
  escalation timers of those homes' calls that came due meanwhile (fired − due);
- **flood**: one device sends malformed messages (1,000 a second) while other devices
  send alarms; the other devices' SOS ack latency is measured in a quiet leg and then
  during the flood, in the same run, at the same alarm rate. The flooding device also
  sends one genuine SOS mid-flood, which must still be taken.

Every leg is bounded in count and time; the hog and the junk sender are always stopped.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho

from carecall.shell.bench_hog import CpuHog
from carecall.shell.bench_phases import alarm_path, make_loadgen, phase_timers, storm
from carecall.shell.bench_targets import BenchConfig, Progress, Target, Worker
from simulators.loadgen import ROOT, latency_summary, paho_client

# What a broken or hostile device sends on its events topic: not JSON, not an object,
# no id, a wrong type, bytes that are not UTF-8. Each must be refused, none may crash.
JUNK: tuple[bytes, ...] = (
    b"{not json",
    b"[1,2,3]",
    b'{"type":"sos"}',
    b'{"id":42,"ts":"yesterday","type":"sos"}',
    b"\xff\xfe\x00junk",
    b'"sos"',
)


def _gateway_sum(workers: list[Worker], key: str) -> int:
    return sum(int(w.stats().get("gateway", {}).get(key, 0) or 0) for w in workers)


def settle(t: Target, max_s: float, say: Progress) -> float:
    """Wait (bounded) until the gateways' intake queues are empty, so a phase does not
    start behind the previous phase's backlog; returns the seconds waited."""
    t0 = time.monotonic()
    deadline = t0 + max_s
    while time.monotonic() < deadline and _gateway_sum(t.gateways, "queue") > 0:
        time.sleep(0.2)
    waited = time.monotonic() - t0
    left = _gateway_sum(t.gateways, "queue")
    if left:
        say(f"settle: {left} messages still queued in the gateway after {max_s:g} s; going on")
    return round(waited, 2)


def contended(t: Target, cfg: BenchConfig, sustained: float, say: Progress) -> dict[str, Any]:
    """The alarm path and the storm while a helper process holds one core."""
    fleet = t.fleets.get("contended")
    if fleet is None:
        raise RuntimeError("the contended phase needs its own homes (none were registered)")
    tc = dataclasses.replace(t, fleet=fleet)
    settle(t, 5 if cfg.quick else 60, say)
    hog = CpuHog(cfg.hog_limit_s)
    with hog:
        say(
            f"contended: CPU hog pid {hog.pid} keeps one core busy (stops itself after {cfg.hog_limit_s:g} s)"
        )
        held_from = datetime.now(UTC)
        alarm = alarm_path(tc, cfg, sustained, say, cfg.lane_wait_s, cfg.lane_alarm_s)
        st = storm(tc, cfg, say, cfg.lane_wait_s, cfg.lane_storm)
        held_to = datetime.now(UTC)
    rep = hog.report()
    if rep["exit_code"] == 0:
        say("contended: WARNING the CPU hog reached its own time limit before the phase ended")
    say(
        f"contended: CPU hog pid {rep['pid']} stopped (exit {rep['exit_code']}), {rep['cpu_pct']} % of a core"
    )
    # the timers of this phase's calls that came due while the core was held (a timer due
    # then but fired later counts with its whole lateness)
    timers = phase_timers(t.db_url, fleet.prefix, held_from, held_to, cfg.lane_wait_s or 30)
    say(
        f"contended: escalation timers due while the core was held: {timers['due']}, fired "
        f"{timers['fired']} (late p50 {timers['late_ms']['p50']} ms, p99 {timers['late_ms']['p99']} ms), "
        f"not fired {timers['unfired']}"
    )
    return {"hog": rep, "alarm": alarm, "storm": st, "timers": timers}


class JunkFlood:
    """Malformed messages on one device's events topic at a steady rate, from a thread,
    over a connection of its own (a device floods through its own socket). Bounded by
    count and by a deadline; ``stop`` ends it early."""

    def __init__(
        self, t: Target, device_id: str, secret: str | None, per_s: float, duration_s: float
    ) -> None:
        self._t = t
        self.device_id = device_id
        self._secret = secret
        self.topic = f"{ROOT}/{device_id}/events"
        self.per_s = per_s
        self.duration_s = duration_s
        self.limit = int(per_s * duration_s)
        self.sent = 0
        self.errors = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._client: paho.Client | None = None
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        client = self._client
        assert client is not None
        t0 = time.monotonic()
        end = t0 + self.duration_s
        while not self._stop.is_set() and self.sent < self.limit:
            now = time.monotonic()
            if now >= end:
                break
            due = min(self.limit, int((now - t0) * self.per_s)) - self.sent
            for _ in range(max(0, due)):
                info = client.publish(self.topic, JUNK[self.sent % len(JUNK)], qos=1)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    self.errors += 1
                self.sent += 1
            time.sleep(0.002)
        self.seconds = time.monotonic() - t0

    def __enter__(self) -> JunkFlood:
        # the device's own connection where the broker checks keys (embedded: client id =
        # device id); an open broker (the real target's Mosquitto) takes it without a login
        keyed = self._t.loadgen_creds[0] is not None
        self._client = paho_client(
            self._t.host,
            self._t.port,
            self.device_id,
            username=self.device_id if keyed else None,
            password=self._secret if keyed else None,
            max_inflight=1000,
        )
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-junk")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _alarm_leg(
    t: Target, cfg: BenchConfig, devices: list[str], prefix: str, own: str | None
) -> dict[str, Any]:
    """Alarms at ``flood_alarms_per_s`` for ``flood_s`` from ``devices``; with ``own``, that
    device also sends one genuine SOS half-way through. Returns ack latencies."""
    gen = make_loadgen(t, prefix)
    own_key: list[tuple[str, str]] = []

    def halfway(fraction: float) -> None:
        if own is not None and not own_key and fraction >= 0.5:
            ev = gen.event(own, f"{prefix}-own")
            own_key.append((ev.device_id, ev.event_id))

    try:
        keys = gen.run_paced(
            telemetry_per_s=0,
            events_per_s=cfg.flood_alarms_per_s,
            duration_s=cfg.flood_s,
            devices=devices,
            event_prefix=prefix,
            tick_s=0.002,
            on_tick=halfway,
        )
        gen.wait_acked(cfg.lane_wait_s or 30)
        lat = gen.ack_latencies_ms(keys)
        own_lat = gen.ack_latencies_ms(own_key) if own_key else []
        resends = gen.stats.resends
    finally:
        gen.close()
    return {
        "events": len(keys),
        "acked": len(lat),
        "unacked": len(keys) - len(lat),
        "ack_ms": latency_summary(lat),
        "resends": resends,
        "own_sos_sent": bool(own_key),
        "own_sos_ack_ms": round(own_lat[0], 2) if own_lat else None,
    }


def flood(t: Target, cfg: BenchConfig, say: Progress) -> dict[str, Any]:
    """Other devices' SOS ack latency, quiet and then during one device's junk flood."""
    fleet = t.fleets.get("flood")
    if fleet is None or len(fleet.devices) < 3:
        raise RuntimeError("the flood phase needs its own homes (none were registered)")
    flooder, others = fleet.devices[0], fleet.devices[1:]
    half = len(others) // 2
    tag = secrets.token_hex(2)
    settle(t, 5 if cfg.quick else 60, say)
    quiet = _alarm_leg(t, cfg, others[:half], f"fq{tag}", None)
    say(
        f"flood, quiet leg: {quiet['events']} SOS at {cfg.flood_alarms_per_s:g}/s: "
        f"ack p50 {quiet['ack_ms']['p50']} ms, p99 {quiet['ack_ms']['p99']} ms"
    )
    settle(t, 5 if cfg.quick else 60, say)
    rejected0 = _gateway_sum(t.gateways, "rejected")
    # the junk starts first and outlasts the alarms, so every alarm is sent inside it
    junk = JunkFlood(t, flooder, fleet.device_secrets.get(flooder), cfg.flood_junk_per_s, cfg.flood_s + 1.0)
    with junk:
        say(f"flood: {flooder} sends {cfg.flood_junk_per_s:,.0f} malformed messages/s")
        time.sleep(0.3)
        leg = _alarm_leg(t, cfg, others[half:], f"ff{tag}", flooder)
    rejected = _gateway_sum(t.gateways, "rejected") - rejected0
    rate = junk.sent / junk.seconds if junk.seconds > 0 else 0.0
    say(
        f"flood: {junk.sent} junk messages ({rate:,.0f}/s), gateway rejections counted {rejected}; "
        f"{leg['events']} SOS from other devices: ack p50 {leg['ack_ms']['p50']} ms, p99 {leg['ack_ms']['p99']} ms; "
        f"the flooding device's own SOS acked in {leg['own_sos_ack_ms']} ms"
    )
    return {
        "flooding_device": flooder,
        "junk_sent": junk.sent,
        "junk_per_s": round(rate),
        "junk_publish_errors": junk.errors,
        "gateway_rejections": rejected,
        "alarms_per_s": cfg.flood_alarms_per_s,
        "quiet": quiet,
        "flood": leg,
    }
