"""What ``carecall bench`` measures (carecall/shell/bench.py drives it): the broker alone
(the baseline), then the platform through the same broker with the same client library
and payload size: ingest, the alarm path, the storm, and escalation timers' lateness.
Every phase is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import paho.mqtt.client as paho

from carecall.core import heap
from carecall.shell.bench_acklog import ack_log_path, ack_slice_ms, acks_logged
from carecall.shell.bench_readings import readings_behind
from carecall.shell.bench_targets import BenchConfig, Progress, Target, gateway_messages
from simulators.loadgen import LoadGenerator, latency_summary, paho_client

PAYLOAD_BYTES = 200


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# --------------------------------------------------------------------------- baseline


_BASELINE_SUBSCRIBER = r"""
import json, socket, sys, threading, time
import paho.mqtt.client as paho
host, port, topic, expect, user, pwd = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
got, first, last, lat = [0], [0.0], [0.0], []
done = threading.Event()
def on_message(c, u, m):
    now = time.time()
    if got[0] == 0:
        first[0] = now
    got[0] += 1
    last[0] = now
    if m.payload[:5] == b'{"t":':
        try:
            lat.append((now - json.loads(m.payload)["t"]) * 1000)
        except (ValueError, KeyError):
            pass
    if got[0] >= expect:
        done.set()
def on_subscribe(c, u, mid, rc, props):
    print("ready", flush=True)
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-sub-" + topic.rsplit("/", 2)[-2], clean_session=True)
if user != "-":
    c.username_pw_set(user, pwd)
c.on_message, c.on_subscribe = on_message, on_subscribe
c.connect(host, port)
c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.subscribe(topic, 1)
c.loop_start()
deadline = time.time() + float(sys.argv[7])
# stop at the expected count, or 2 s after the last message (the broker dropped the rest)
while not done.wait(0.2) and time.time() < deadline and not (got[0] and time.time() - last[0] > 2):
    pass
c.disconnect(); c.loop_stop()
print(json.dumps({"received": got[0], "first": first[0], "last": last[0], "lat_ms": lat}), flush=True)
"""


def _subscriber(
    host: str, port: int, topic: str, expect: int, creds: tuple[str | None, str | None], wait_s: float
) -> subprocess.Popen[str]:
    """The baseline's subscriber in its own process: in one process, two paho network
    threads fight over the GIL and QoS 1 collapses to a few hundred msg/s, which would
    measure Python's threading rather than the broker."""
    user, pwd = creds
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _BASELINE_SUBSCRIBER,
            host,
            str(port),
            topic,
            str(expect),
            user or "-",
            pwd or "-",
            str(wait_s),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"baseline subscriber did not start: {line!r}")
    return proc


def _subscriber_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=120)
    return dict(json.loads(out.strip().splitlines()[-1]))


def baseline(
    host: str, port: int, creds: tuple[str | None, str | None], cfg: BenchConfig, say: Progress
) -> dict[str, Any]:
    """Raw paho → broker → paho, QoS 1, 200-byte JSON, without CareCall: throughput (median
    of repeats) and latency at 1,000 msg/s. Publisher here, subscriber in its own process."""
    user, pwd = creds
    tag = secrets.token_hex(3)
    topic = f"carecall/bench/{tag}/baseline"
    pub = paho_client(host, port, f"bench-pub-{tag}", username=user, password=pwd, max_inflight=200)
    rates: list[float] = []
    lat: list[float] = []
    try:
        body = json.dumps({"k": "x" * (PAYLOAD_BYTES - 10)}).encode()[:PAYLOAD_BYTES]
        for r in range(cfg.repeats):
            sub = _subscriber(host, port, topic, cfg.baseline_messages, creds, 60)
            t0 = time.time()
            for _ in range(cfg.baseline_messages):
                while pub.publish(topic, body, qos=1).rc == paho.MQTT_ERR_QUEUE_SIZE:
                    time.sleep(0.001)
            res = _subscriber_result(sub)
            rate = res["received"] / max(res["last"] - t0, 1e-6) if res["received"] else 0.0
            rates.append(rate)
            say(
                f"baseline throughput run {r + 1}/{cfg.repeats}: {rate:,.0f} msg/s ({res['received']} received)"
            )
        # latency at 1,000 msg/s, wall-clock stamps inside the same 200-byte payload
        n = int(1000 * cfg.latency_s)
        sub = _subscriber(host, port, topic, n, creds, 30)
        t0 = time.monotonic()
        for i in range(n):
            while time.monotonic() < t0 + i / 1000:
                time.sleep(0.0002)
            head = f'{{"t":{time.time():.6f},"p":"'
            payload = head + "x" * max(0, PAYLOAD_BYTES - len(head) - 2) + '"}'
            pub.publish(topic, payload.encode(), qos=1)
        lat = list(_subscriber_result(sub)["lat_ms"])
    finally:
        pub.disconnect()
        pub.loop_stop()
    summary = latency_summary(lat)
    say(f"baseline latency at 1,000 msg/s: p50 {summary['p50']} ms, p99 {summary['p99']} ms")
    return {
        "throughput_msg_s": round(_median(rates)),
        "throughput_runs": [round(x) for x in rates],
        "latency_ms_at_1k": summary,
        "messages": cfg.baseline_messages,
        "payload_bytes": PAYLOAD_BYTES,
        "qos": 1,
        "client": f"paho-mqtt {paho_version()} (publisher and subscriber in separate processes)",
    }


def paho_version() -> str:
    from importlib.metadata import version

    return version("paho-mqtt")


# docs/protocol.md "Resending events": a device resends after 5 s, then doubles the wait up
# to 60 s. The storm's devices follow it; a fixed 2 s resend (the other phases', a stricter
# device) turned a platform that was seconds behind into 2,500 resends/s on top of the
# storm (117,875 resends for 5,000 alarms, embedded target, 2026-12-06).
PROTOCOL_RESEND = (5.0, 2.0, 60.0)


def make_loadgen(
    t: Target, tag: str, *, resend: tuple[float, float, float] = (2.0, 1.0, 2.0)
) -> LoadGenerator:
    """A load generator on the target; ``resend`` is (first wait s, factor, cap s)."""
    first, factor, cap = resend
    gen = LoadGenerator(
        t.host,
        t.port,
        username=t.loadgen_creds[0],
        password=t.loadgen_creds[1],
        ack_username=t.observer_creds[0],
        ack_password=t.observer_creds[1],
        client_id=f"bench-{tag}-{secrets.token_hex(3)}",
        resend_s=first,
        resend_factor=factor,
        resend_max_s=cap,
        max_inflight=1000,
    )
    gen.start()
    return gen


def ingest(t: Target, base_rate: float, cfg: BenchConfig, say: Progress) -> dict[str, Any]:
    """A rising ramp of telemetry from a quarter of the baseline; the sustained figure is
    the last step with no loss and the backlog gone within 1.5 s of the step's end. When
    the first step already fails, the ramp steps down until one passes."""
    gen = make_loadgen(t, "ingest")
    steps: list[dict[str, Any]] = []
    rate = max(500.0, round(base_rate * 0.25, -2))
    sustained = 0.0
    descending = False
    try:
        for _ in range(7 if cfg.quick else 10):
            before = gateway_messages(t.gateways)
            sent0 = gen.stats.telemetry_sent
            t0 = time.monotonic()
            gen.run_paced(
                telemetry_per_s=rate,
                events_per_s=0,
                duration_s=cfg.ingest_step_s,
                devices=t.fleet.devices,
                tick_s=0.002,
            )
            send_s = time.monotonic() - t0
            sent = gen.stats.telemetry_sent - sent0
            deadline = time.monotonic() + 1.5
            got = gateway_messages(t.gateways) - before
            while got < sent and time.monotonic() < deadline:
                time.sleep(0.05)
                got = gateway_messages(t.gateways) - before
            # anything still arriving after the deadline is backlog, not loss: wait it out
            settle = time.monotonic() + 8
            last = got
            while got < sent and time.monotonic() < settle:
                time.sleep(0.25)
                got = gateway_messages(t.gateways) - before
                if got == last:
                    break
                last = got
            drained = time.monotonic() - t0 - send_s
            ok = got >= sent and drained <= 1.5 + 0.1 and sent >= 0.95 * rate * cfg.ingest_step_s
            steps.append(
                {
                    "rate": rate,
                    "sent": sent,
                    "counted": got,
                    "lost": max(0, sent - got),
                    "drain_s": round(drained, 2),
                    "ok": ok,
                }
            )
            say(
                f"ingest {rate:,.0f} msg/s: sent {sent}, gateway counted {got}, drained in {drained:.2f} s → {'ok' if ok else 'over the limit'}"
            )
            time.sleep(0.5)
            if ok:
                sustained = rate
                if descending:
                    break  # coming down from a failed first step: this is the figure
                rate = round(rate * 1.3, -2)
            elif sustained or rate <= 500:
                break
            else:
                # the first step was already too much (a busy shared machine): step down
                # rather than report 0
                descending = True
                rate = max(500.0, round(rate * 0.7, -2))
    finally:
        gen.close()
    return {"sustained_msg_s": sustained, "steps": steps}


def _event_rows(db_url: str, prefix: str) -> list[tuple[str, str, str | None, int | None]]:
    """(device_id, event_id, decision, call_id) of stored events whose id starts with prefix."""
    from sqlalchemy import select

    from carecall.core.db import make_engine, make_sessionmaker
    from device_gateway.models import DeviceEvent
    from dispatcher.calls.models import EventIntake

    async def go() -> list[tuple[str, str, str | None, int | None]]:
        engine = make_engine(db_url)
        try:
            async with make_sessionmaker(engine)() as s:
                rows = (
                    await s.execute(
                        select(
                            DeviceEvent.device_id,
                            DeviceEvent.event_id,
                            EventIntake.decision,
                            EventIntake.call_id,
                        )
                        .outerjoin(EventIntake, EventIntake.event_pk == DeviceEvent.id)
                        .where(DeviceEvent.event_id.like(f"{prefix}-%"))
                    )
                ).all()
        finally:
            await engine.dispose()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    return asyncio.run(go())


def timer_lateness(db_url: str) -> list[float]:
    from sqlalchemy import select

    from carecall.core.db import make_engine, make_sessionmaker
    from dispatcher.calls.models import Timer

    async def go() -> list[float]:
        engine = make_engine(db_url)
        try:
            async with make_sessionmaker(engine)() as s:
                rows = (
                    await s.execute(select(Timer.due_at, Timer.fired_at).where(Timer.fired_at.is_not(None)))
                ).all()
        finally:
            await engine.dispose()
        return [(r.fired_at - r.due_at).total_seconds() * 1000 for r in rows]

    return asyncio.run(go())


def phase_timers(
    db_url: str, home_prefix: str, start: datetime, end: datetime, wait_s: float
) -> dict[str, Any]:
    """Escalation timers of the calls at the homes under ``home_prefix`` (a phase's own
    fleet) that came due between ``start`` and ``end``: fired − due, and how many had not
    fired after waiting (bounded by ``wait_s``) for the last of them."""
    from sqlalchemy import select

    from carecall.core.db import make_engine, make_sessionmaker
    from carecall.shell.bench_verdicts import window_timers
    from dispatcher.calls.models import Call, Timer, TimerStatus

    done = (TimerStatus.fired.value, TimerStatus.stale.value)

    async def rows() -> list[tuple[float, float | None]]:
        engine = make_engine(db_url)
        try:
            async with make_sessionmaker(engine)() as s:
                got = (
                    await s.execute(
                        select(Timer.due_at, Timer.fired_at, Timer.status)
                        .join(Call, Call.id == Timer.call_id)
                        .where(
                            Call.home_id.startswith(f"{home_prefix}-h", autoescape=True),
                            Timer.status != TimerStatus.cancelled.value,
                            Timer.due_at >= start,
                            Timer.due_at <= end,
                        )
                    )
                ).all()
        finally:
            await engine.dispose()
        return [(r[0].timestamp(), r[1].timestamp() if r[2] in done and r[1] else None) for r in got]

    deadline = time.monotonic() + wait_s
    a, b = start.timestamp(), end.timestamp()
    late, due, unfired = window_timers(asyncio.run(rows()), a, b)
    while unfired and time.monotonic() < deadline:
        time.sleep(0.5)
        late, due, unfired = window_timers(asyncio.run(rows()), a, b)
    return {"due": due, "fired": len(late), "unfired": unfired, "late_ms": latency_summary(late)}


def wait_routed(
    db_url: str, prefix: str, n: int, timeout_s: float
) -> list[tuple[str, str, str | None, int | None]]:
    deadline = time.monotonic() + timeout_s
    rows = _event_rows(db_url, prefix)
    while time.monotonic() < deadline:
        if len(rows) >= n and all(r[2] is not None for r in rows):
            break
        time.sleep(0.5)
        rows = _event_rows(db_url, prefix)
    return rows


def alarm_path(
    t: Target,
    cfg: BenchConfig,
    sustained: float,
    say: Progress,
    wait_s: float | None = None,
    duration_s: float | None = None,
) -> dict[str, Any]:
    """100 events/s for alarm_s with 5,000 telemetry msg/s behind them; each event from
    another home so most open a call (the console figure needs first-of-call events).

    A target whose sustained ingest is below 5,000 msg/s (the embedded amqtt broker) gets
    80 % of what it sustains instead: driving it past saturation would measure an
    ever-growing queue, not the alarm path. The figure used is reported with the result.
    ``wait_s`` bounds each wait (acks, routing) and ``duration_s`` the sending instead of
    the run length's defaults.
    """
    behind = 5000.0 if sustained <= 0 or sustained >= 6250 else round(0.8 * sustained, -2)
    if behind < 5000:
        say(f"alarm path: telemetry behind capped at {behind:,.0f} msg/s (80 % of the sustained ingest)")
    gen = make_loadgen(t, "alarm")
    prefix = f"al{secrets.token_hex(3)}"
    acks_before = {w.name: acks_logged(w.stats()) for w in t.gateways}
    shed_before = readings_shed(t)
    started = time.monotonic()
    try:
        secs = duration_s or cfg.alarm_s
        # the readings come from a process of their own (carecall/shell/bench_readings.py)
        with readings_behind(t, t.fleet.devices, behind, secs) as readings:
            keys = gen.run_paced(
                telemetry_per_s=0,
                events_per_s=100,
                duration_s=secs,
                devices=t.fleet.devices,
                event_devices=t.fleet.devices,
                event_prefix=prefix,
                tick_s=0.002,
                on_tick=lambda f: None,
            )
        acked_all = gen.wait_acked(wait_s or (10 if cfg.quick else 30))
        lat = gen.ack_latencies_ms(keys)
        sent_at = {k: gen.events[k].first_sent for k in keys}
        resends = gen.stats.resends
    finally:
        gen.close()
    summary = latency_summary(lat)
    say(
        f"alarm path: {len(keys)} events at 100/s + {behind:,.0f} telemetry/s "
        f"({readings['sent']:,.0f} readings sent by their own process, "
        f"{100 * readings['cpu_s'] / secs:.0f} % of a core): "
        f"ack p50 {summary['p50']} ms, p99 {summary['p99']} ms"
    )
    ended = time.monotonic()
    inside = gateway_share(t, acks_before)  # (waits for the workers' next stats write)
    paused = gc_pauses(t, started, ended)
    say(
        "  longest garbage-collector pause meanwhile (carecall/core/heap.py): "
        + ", ".join(f"{name} {p['longest_ms']} ms" for name, p in paused.items())
    )
    shed = {k: v - shed_before[k] for k, v in readings_shed(t).items()}
    say(
        f"  readings shed by the gateway meanwhile (device_gateway/shedding.py): "
        f"{shed['merged']:,} merged, {shed['dropped']:,} dropped"
    )
    say(
        f"  of which inside the gateway (event received → ack handed to its broker client, "
        f"the commit between): p50 {inside['p50']} ms, p99 {inside['p99']} ms ({inside['count']} acks)"
    )
    rows = wait_routed(t.db_url, prefix, len(keys), wait_s or (10 if cfg.quick else 30))
    opened = [(r[0], r[1], r[3]) for r in rows if r[2] == "opened" and r[3] is not None]
    # the console may still be catching up (a stream reopening): wait for it, bounded
    console = wait_seen(t.console, {cid for _d, _e, cid in opened}, wait_s or 10)
    console_ms, console_missing = sighting_ms(opened, sent_at, console)
    csum = latency_summary(console_ms)
    say(
        f"event → call on a console ({t.console_via}): p50 {csum['p50']} ms, p99 {csum['p99']} ms "
        f"({csum['count']} calls, {console_missing} never shown)"
    )
    out: dict[str, Any] = {
        "events": len(keys),
        "telemetry_behind_msg_s": behind,
        "readings_sent": int(readings["sent"]),
        # the readings sender shares the platform's cores (bench_readings): its share
        "readings_sender_cpu_pct": round(100 * readings["cpu_s"] / secs, 1),
        "readings_merged": shed["merged"],
        "readings_dropped": shed["dropped"],
        "acked": len(lat),
        "unacked": len(keys) - len(lat),
        "all_acked": acked_all,
        "resends": resends,
        "ack_ms": summary,
        "gateway_ack_ms": inside,
        "routed": sum(1 for r in rows if r[2] is not None),
        "opened": len(opened),
        "console_via": t.console_via,
        "console_ms": csum,
        "console_missing": console_missing,
        "gc_pauses": paused,
    }
    if t.bus is not None:
        bus_ms, bus_missing = sighting_ms(opened, sent_at, t.bus())
        out.update({"bus_via": t.bus_via, "bus_ms": latency_summary(bus_ms), "bus_missing": bus_missing})
        say(f"event → call on the bus ({t.bus_via}): p99 {out['bus_ms']['p99']} ms")
    return out


def readings_shed(t: Target) -> dict[str, int]:
    """Readings the gateways merged or dropped under overload so far, summed."""
    snaps = [w.stats().get("gateway") or {} for w in t.gateways]
    return {how: sum(int(g.get(f"readings_{how}", 0)) for g in snaps) for how in ("merged", "dropped")}


def gc_pauses(t: Target, start: float, end: float) -> dict[str, dict[str, float | int]]:
    """Each process's garbage-collector pauses of 10 ms or more between ``start`` and
    ``end``: the workers' from their stats files, the bench's own (it plays the devices
    and the consoles: a pause of its own is counted in every latency it measures)."""
    out = {w.name: heap.pauses_between(w.stats().get("gc_long") or [], start, end) for w in t.workers}
    out["bench"] = heap.pauses_between(heap.PAUSES.recent(), start, end)
    return out


def gateway_share(t: Target, before: dict[str, int]) -> dict[str, float | int | None]:
    """The gateways' own ack times (bench_acklog) since ``before`` (acks logged per worker)."""
    time.sleep(0.3)  # the workers write their logs every 0.2 s
    values: list[float] = []
    for w in t.gateways:
        values += ack_slice_ms(ack_log_path(w.stats_path), before.get(w.name, 0))
    return latency_summary(values)


def wait_seen(seen: Callable[[], dict[int, float]], ids: set[int], timeout_s: float) -> dict[int, float]:
    """The console's sightings once every id in ``ids`` is among them, or at the timeout."""
    deadline = time.monotonic() + timeout_s
    got = seen()
    while not ids <= got.keys() and time.monotonic() < deadline:
        time.sleep(0.1)
        got = seen()
    return got


def sighting_ms(
    opened: list[tuple[str, str, int]],
    sent_at: dict[tuple[str, str], float],
    seen: dict[int, float],
) -> tuple[list[float], int]:
    """(event sent → its call first seen, in ms, per call it opened; calls never seen)."""
    ms = [(seen[cid] - sent_at[(d, e)]) * 1000 for d, e, cid in opened if cid in seen and (d, e) in sent_at]
    return ms, sum(1 for _d, _e, cid in opened if cid not in seen)


def storm(
    t: Target,
    cfg: BenchConfig,
    say: Progress,
    wait_s: float | None = None,
    size: tuple[int, float] | None = None,
) -> dict[str, Any]:
    """The storm (5,000 alarms in 10 s; --quick 1,000 in 2 s): stored, acked, routed.
    ``wait_s`` bounds each wait (acks, routing) and ``size`` is (alarms, seconds) instead
    of the run length's defaults."""
    n, secs = size or cfg.storm
    gen = make_loadgen(t, "storm", resend=PROTOCOL_RESEND)
    prefix = f"st{secrets.token_hex(3)}"
    try:
        t0 = time.monotonic()
        keys = gen.run_paced(
            telemetry_per_s=0,
            events_per_s=n / secs,
            duration_s=secs + 0.05,
            devices=t.fleet.devices,
            event_prefix=prefix,
            max_messages=n,
            tick_s=0.002,
        )
        acked_all = gen.wait_acked(wait_s or (10 if cfg.quick else 60))
        ack_s = time.monotonic() - t0
        lat = gen.ack_latencies_ms(keys)
        resends = gen.stats.resends
    finally:
        gen.close()
    summary = latency_summary(lat)
    say(f"storm: {len(keys)} alarms in {secs:g} s: {len(lat)} acked, p99 {summary['p99']} ms")
    rows = wait_routed(t.db_url, prefix, len(keys), wait_s or (10 if cfg.quick else 90))
    stored = {(r[0], r[1]) for r in rows}
    routed = sum(1 for r in rows if r[3] is not None)
    lost = len(set(keys) - stored)
    say(f"storm: stored {len(stored)}, routed into calls {routed}, lost {lost}")
    return {
        "events": len(keys),
        "seconds": secs,
        "stored": len(stored),
        "stored_rows": len(rows),
        "acked": len(lat),
        "all_acked": acked_all,
        "routed_into_calls": routed,
        "calls": len({r[3] for r in rows if r[3] is not None}),
        "lost": lost,
        "resends": resends,
        "ack_ms": summary,
        "all_acked_after_s": round(ack_s, 2),
    }
