"""Run a county of simulated devices against a broker and report what the platform did with them.

The report is the point: it turns "the demo looked fine" into numbers (events stored, still
pending, resends, ack latency) that a load test can assert on. Event times come from seeded
random streams per device, so the same seed, scenario and device list raise the same
events at the same simulated moments, whatever the speed and however the tasks interleave.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import random
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from simulators.clock import SimClock
from simulators.device import DeviceSpec, EventRecord, SimulatedDevice
from simulators.scenario import EMITTERS, Flapping, PowerCut, ResendForever, Scenario

log = logging.getLogger(__name__)

_STOP_SLICE = 250
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class SimStats(BaseModel):
    """A live snapshot for progress bars; cheap enough to compute every second."""

    model_config = ConfigDict(frozen=True)

    simulated_s: float
    real_s: float
    devices: int
    online: int
    silent: int
    events_raised: int
    events_received: int
    events_rejected: int
    pending: int
    resends: int
    telemetry_sent: int
    reconnects: int
    # first publish → ``received`` so far, real milliseconds (None before the first ack)
    ack_p50_ms: float | None = None
    ack_p99_ms: float | None = None


class LatencySummary(BaseModel):
    """First publish → ``received`` ack, in real milliseconds (not scaled by ``--speed``)."""

    model_config = ConfigDict(frozen=True)

    count: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


class SimReport(BaseModel):
    """Outcome of a run. ``events_raised == events_received + events_rejected + pending``."""

    model_config = ConfigDict(frozen=True)

    scenario: str
    seed: int
    speed: float
    simulated_s: float
    real_s: float
    devices: int
    connected: int  # connected at least once
    online_at_end: int
    events_raised: int
    events_received: int
    events_rejected: int
    pending: int
    sends: int
    resends: int
    ack_latency: LatencySummary
    telemetry_sent: int
    reconnects: int
    connect_failures: int
    drops: int
    events_by_type: dict[str, int]
    later_acks: dict[str, int]  # assigned, en_route, on_scene, resolved, rejected
    rejected_reasons: dict[str, int]
    pending_events: list[str]  # "device_id/event_id", first 100
    # copies of ``received`` a misbehaving device (scenario ``resend_forever``) ignored
    acks_ignored: int = 0


def check_host(host: str, *, allow_remote: bool = False) -> None:
    """Refuse non-loopback targets: hundreds of clients hammering a real deployment is an outage."""
    if allow_remote:
        return
    if host.lower() in LOOPBACK_NAMES:
        return
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"refusing to run simulated devices against {host!r}: load tests target loopback "
            "(127.0.0.1) only; pass allow_remote=True if you really mean a remote broker"
        )


@dataclass(frozen=True)
class _Planned:
    at_s: float
    device: int
    type: str
    sensor: str | None
    data: dict[str, Any] | None


async def run_simulation(
    *,
    host: str,
    port: int,
    devices: Sequence[DeviceSpec],
    scenario: Scenario,
    clock: SimClock,
    duration_s: float | None,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[SimStats], None] | None = None,
    tls: bool = False,
    seed: int = 1,
    allow_remote: bool = False,
    tls_context: ssl.SSLContext | None = None,
    connect_stagger_s: float = 0.002,
    max_concurrent_connects: int = 64,
    drain_s: float = 3.0,
    progress_interval_s: float = 1.0,
    run_id: str | None = None,
) -> SimReport:
    """Run the scenario until ``duration_s`` simulated seconds pass or ``stop`` is set.

    ``duration_s=None`` falls back to ``scenario.duration_s``; when both are None the run
    lasts until ``stop``. After the end, pending events get ``drain_s`` real seconds to be
    acknowledged before devices disconnect cleanly. Stagger and drain are real time on
    purpose: they protect the broker, which does not run faster with ``--speed``.
    """
    check_host(host, allow_remote=allow_remote)
    ids = [d.device_id for d in devices]
    if len(set(ids)) != len(ids):
        dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise ValueError(f"duplicate device ids: {', '.join(dupes[:5])}")
    duration = duration_s if duration_s is not None else scenario.duration_s
    if duration is not None and duration <= 0:
        raise ValueError("duration_s must be positive")
    if tls and tls_context is None:
        tls_context = ssl.create_default_context()

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(_quiet_closed_sockets)
    gate = asyncio.Semaphore(max(1, max_concurrent_connects))
    run_id = run_id or secrets.token_hex(4)
    sims = [
        SimulatedDevice(
            spec,
            host=host,
            port=port,
            clock=clock,
            scenario=scenario,
            seed=seed,
            run_id=run_id,
            tls_context=tls_context if tls else None,
            connect_gate=gate,
        )
        for spec in devices
    ]
    start = clock.now()
    real0 = time.monotonic()

    def stats() -> SimStats:
        return _stats(sims, simulated_s=(clock.now() - start).total_seconds(), real0=real0)

    drivers = [asyncio.create_task(_start_all(sims, connect_stagger_s))]
    drivers += _start_drivers(sims, scenario, clock, start, seed)
    if on_progress is not None:
        drivers.append(asyncio.create_task(_report_progress(on_progress, stats, progress_interval_s)))

    simulated_s = 0.0
    try:
        await _wait_end(stop, clock, duration)
    finally:
        # The run ends here: cancelled drivers raise nothing more, and the seconds their
        # cancellation takes on a busy machine are not simulated time the run covered.
        simulated_s = (clock.now() - start).total_seconds()
        for task in drivers:
            task.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
        await _drain(sims, drain_s)
        online_at_end = sum(1 for s in sims if s.online)
        # In slices: 5,000 devices disconnecting in one go starve the loop, a device's
        # DISCONNECT misses its 5 s stop window, its socket is cut, and the broker fires
        # its will, which the platform rightly takes for a device losing power.
        for first in range(0, len(sims), _STOP_SLICE):
            await asyncio.gather(
                *(s.stop() for s in sims[first : first + _STOP_SLICE]), return_exceptions=True
            )
        await asyncio.sleep(0)  # let callbacks queued by the last disconnects run under our handler
        loop.set_exception_handler(previous_handler)
    if on_progress is not None:
        on_progress(stats())
    return _report(
        sims,
        scenario=scenario.name,
        seed=seed,
        speed=clock.speed,
        simulated_s=simulated_s,
        real_s=time.monotonic() - real0,
        online_at_end=online_at_end,
    )


def _start_drivers(
    sims: Sequence[SimulatedDevice], scenario: Scenario, clock: SimClock, start: datetime, seed: int
) -> list[asyncio.Task[None]]:
    """One task per story of the scenario: each device's random events and drops, the
    planned burst and scripted events, the power cut, flapping and resending devices."""
    drivers: list[asyncio.Task[None]] = []
    for sim in sims:
        rng = random.Random(f"{seed}:{sim.device_id}:schedule")
        if scenario.peak_rate_per_s(sim.spec.kind) > 0:
            drivers.append(asyncio.create_task(_drive_events(sim, scenario, clock, start, rng)))
        if scenario.offline.rate_per_s > 0:
            off_rng = random.Random(f"{seed}:{sim.device_id}:offline")
            drivers.append(asyncio.create_task(_drive_offline(sim, scenario, clock, start, off_rng)))
    planned = _plan(scenario, sims, random.Random(f"{seed}:plan"))
    if planned:
        drivers.append(asyncio.create_task(_drive_planned(planned, sims, clock, start)))
    if scenario.power_cut is not None and sims:
        cut = _power_cut_victims(scenario.power_cut, sims, random.Random(f"{seed}:power_cut"))
        drivers.append(asyncio.create_task(_drive_power_cut(scenario.power_cut, cut, clock, start)))
    for flap in scenario.flapping:
        flapper = _pick(sims, flap.kind, flap.device_index)
        if flapper is not None:
            drivers.append(asyncio.create_task(_drive_flapping(flap, flapper, clock, start)))
    for item in scenario.resend_forever:
        resender = _pick(sims, item.kind, item.device_index)
        if resender is not None:
            drivers.append(asyncio.create_task(_drive_resend_forever(item, resender, clock, start)))
    return drivers


def _quiet_closed_sockets(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Thousands of clients disconnecting at once: paho asks the loop to watch a socket for
    writing (``add_writer``/``add_reader`` via call_soon_threadsafe) and closes it before
    the callback runs, so the callback fails with EBADF. Nothing is lost (the connection
    is over); every other error still goes to the default handler."""
    exc = context.get("exception")
    handle = repr(context.get("handle", ""))
    if (
        isinstance(exc, OSError)
        and exc.errno == errno.EBADF
        and ("add_writer" in handle or "add_reader" in handle)
    ):
        log.debug("callback on a socket already closed: %s", handle)
        return
    loop.default_exception_handler(context)


# ---------------------------------------------------------------------- drivers


async def _start_all(sims: Sequence[SimulatedDevice], stagger_s: float) -> None:
    """Start devices one by one so hundreds of CONNECTs do not land in the same millisecond."""
    for sim in sims:
        sim.start()
        if stagger_s > 0:
            await asyncio.sleep(stagger_s)


async def _wait_end(stop: asyncio.Event, clock: SimClock, duration: float | None) -> None:
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    if duration is not None:
        waiters.append(asyncio.ensure_future(clock.sleep(duration)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _sleep_until(clock: SimClock, start: datetime, at_s: float) -> None:
    await clock.sleep(at_s - (clock.now() - start).total_seconds())


# A device-raised event is a human-scale moment: under the demo's catch-up clock the
# simulated time around it runs at the fine rate, so the alarm's timestamp, its arrival
# and the call it opens are seconds apart, not minutes. A constant-speed clock ignores holds.
HOLD_BEFORE_S = 2.0
HOLD_AFTER_S = 15.0


def _hold_around(clock: SimClock, start: datetime, at_s: float) -> None:
    clock.hold(
        start + timedelta(seconds=at_s - HOLD_BEFORE_S), start + timedelta(seconds=at_s + HOLD_AFTER_S)
    )


def _is_night(scenario: Scenario, moment: datetime, tz: ZoneInfo) -> bool:
    return scenario.day_night_rhythm and scenario.night.contains(moment.astimezone(tz).hour)


async def _drive_events(
    sim: SimulatedDevice, scenario: Scenario, clock: SimClock, start: datetime, rng: random.Random
) -> None:
    """A Poisson process per event type, day/night-modulated by thinning.

    Candidate times come at the peak rate and each is kept with probability rate(now)/peak,
    which yields exact time-varying rates from one random stream per device. Night is judged
    at the scheduled simulated time, not the moment the task wakes, to stay reproducible.
    """
    kind = sim.spec.kind
    peak = scenario.peak_rate_per_s(kind)
    types = sorted(scenario.rates.get(kind, {}))
    tz = ZoneInfo(scenario.timezone)
    at_s = 0.0
    while True:
        at_s += rng.expovariate(peak)
        night = _is_night(scenario, start + timedelta(seconds=at_s), tz)
        pick = rng.random() * peak
        chosen: str | None = None
        for event_type in types:
            pick -= scenario.rate_per_s(kind, event_type, night=night)
            if pick < 0:
                chosen = event_type
                break
        if chosen is None:
            continue
        _hold_around(clock, start, at_s)
        await _sleep_until(clock, start, at_s)
        sim.raise_event(chosen)


async def _drive_offline(
    sim: SimulatedDevice, scenario: Scenario, clock: SimClock, start: datetime, rng: random.Random
) -> None:
    policy = scenario.offline
    at_s = 0.0
    while True:
        at_s += rng.expovariate(policy.rate_per_s)
        _hold_around(clock, start, at_s)
        await _sleep_until(clock, start, at_s)
        await sim.go_silent()
        at_s += rng.uniform(policy.min_s, policy.max_s)
        _hold_around(clock, start, at_s)
        await _sleep_until(clock, start, at_s)
        sim.come_back()


def _plan(scenario: Scenario, sims: Sequence[SimulatedDevice], rng: random.Random) -> list[_Planned]:
    """Burst and scripted events, fixed up front so the storm is the same on every run."""
    by_kind: dict[str, list[int]] = {}
    for index in sorted(range(len(sims)), key=lambda i: sims[i].device_id):
        by_kind.setdefault(sims[index].spec.kind, []).append(index)

    def senders(event_type: str, kind: str | None) -> list[int]:
        kinds = [kind] if kind is not None else [k.value for k in EMITTERS.get(event_type, ())]
        found = [i for k in kinds for i in by_kind.get(k, [])]
        return found if found or kind is not None else list(range(len(sims)))

    out: list[_Planned] = []
    for item in scenario.scripted:
        candidates = senders(item.type, item.kind)
        if not candidates:
            log.warning("scripted %s at %ss: no device of kind %s", item.type, item.at_s, item.kind)
            continue
        device = candidates[item.device_index % len(candidates)]
        out.append(_Planned(item.at_s, device, item.type, item.sensor, item.data or None))
    burst = scenario.burst
    if burst is not None and sims:
        types = sorted(burst.types)
        weights = [burst.types[t] for t in types]
        for _ in range(burst.total):
            event_type = rng.choices(types, weights)[0]
            candidates = senders(event_type, None)
            at_s = burst.start_s + rng.random() * burst.duration_s
            out.append(_Planned(at_s, rng.choice(candidates), event_type, None, None))
    out.sort(key=lambda p: p.at_s)
    return out


async def _drive_planned(
    planned: Sequence[_Planned], sims: Sequence[SimulatedDevice], clock: SimClock, start: datetime
) -> None:
    for item in planned:
        _hold_around(clock, start, item.at_s)
        await _sleep_until(clock, start, item.at_s)
        sims[item.device].raise_event(item.type, sensor=item.sensor, data=item.data)


def _pick(sims: Sequence[SimulatedDevice], kind: str | None, index: int) -> SimulatedDevice | None:
    """The ``index``-th device (by id, wrapping) of ``kind``; any kind when None."""
    found = sorted((s for s in sims if kind is None or s.spec.kind == kind), key=lambda s: s.device_id)
    if not found:
        log.warning("no device of kind %s for a fault story", kind)
        return None
    return found[index % len(found)]


def _power_cut_victims(
    cut: PowerCut, sims: Sequence[SimulatedDevice], rng: random.Random
) -> list[SimulatedDevice]:
    """Up to ``cut.devices`` devices (all when fewer), chosen reproducibly per seed."""
    kinds = set(cut.kinds) if cut.kinds is not None else None
    pool = sorted((s for s in sims if kinds is None or s.spec.kind in kinds), key=lambda s: s.device_id)
    if len(pool) <= cut.devices:
        return pool
    return rng.sample(pool, cut.devices)


async def _drive_power_cut(
    cut: PowerCut, victims: Sequence[SimulatedDevice], clock: SimClock, start: datetime
) -> None:
    await _sleep_until(clock, start, cut.at_s)
    # All at once: start every drop before waiting for any of them to finish.
    await asyncio.gather(*(v.go_silent() for v in victims))
    log.info("power cut: %d devices offline", len(victims))
    await _sleep_until(clock, start, cut.at_s + cut.duration_s)
    for victim in victims:
        victim.come_back()
    log.info("power restored: %d devices reconnecting", len(victims))


async def _drive_flapping(flap: Flapping, sim: SimulatedDevice, clock: SimClock, start: datetime) -> None:
    at_s = flap.start_s
    for _ in range(flap.max_drops):
        await _sleep_until(clock, start, at_s)
        await sim.go_silent()
        await _sleep_until(clock, start, at_s + flap.down_s)
        sim.come_back()
        at_s += flap.period_s


async def _drive_resend_forever(
    item: ResendForever, sim: SimulatedDevice, clock: SimClock, start: datetime
) -> None:
    await _sleep_until(clock, start, item.at_s)
    sim.raise_event(
        item.type,
        sensor=item.sensor,
        ignore_acks=True,
        resend_interval_s=item.interval_s,
        max_sends=item.max_sends,
    )


async def _report_progress(
    on_progress: Callable[[SimStats], None], stats: Callable[[], SimStats], interval_s: float
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        on_progress(stats())


async def _drain(sims: Sequence[SimulatedDevice], drain_s: float) -> None:
    """Give events raised just before the end a chance to be stored, so they are not miscounted."""
    step = 0.02
    for _ in range(max(1, math.ceil(drain_s / step))):
        if not any(s.online and s.pending for s in sims):
            return
        await asyncio.sleep(step)


# ---------------------------------------------------------------------- numbers


def _records(sims: Sequence[SimulatedDevice]) -> list[tuple[str, EventRecord]]:
    return [(s.device_id, r) for s in sims for r in list(s.records.values())]


def _stats(sims: Sequence[SimulatedDevice], *, simulated_s: float, real0: float) -> SimStats:
    records = [r for _, r in _records(sims)]
    received = sum(1 for r in records if r.received)
    rejected = sum(1 for r in records if r.rejected)
    latencies = sorted(v for r in records if (v := r.latency_ms) is not None)
    return SimStats(
        simulated_s=simulated_s,
        real_s=time.monotonic() - real0,
        devices=len(sims),
        online=sum(1 for s in sims if s.online),
        silent=sum(1 for s in sims if s.silent),
        events_raised=len(records),
        events_received=received,
        events_rejected=rejected,
        pending=len(records) - received - rejected,
        resends=sum(r.resends for r in records),
        telemetry_sent=sum(s.telemetry_sent for s in sims),
        reconnects=sum(s.reconnects for s in sims),
        ack_p50_ms=round(percentile(latencies, 0.50), 2) if latencies else None,
        ack_p99_ms=round(percentile(latencies, 0.99), 2) if latencies else None,
    )


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: always a value that was actually observed."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _latency(records: Sequence[EventRecord]) -> LatencySummary:
    values = sorted(v for r in records if (v := r.latency_ms) is not None)
    if not values:
        return LatencySummary()
    return LatencySummary(
        count=len(values),
        p50_ms=round(percentile(values, 0.50), 3),
        p90_ms=round(percentile(values, 0.90), 3),
        p99_ms=round(percentile(values, 0.99), 3),
        max_ms=round(values[-1], 3),
    )


def _report(
    sims: Sequence[SimulatedDevice],
    *,
    scenario: str,
    seed: int,
    speed: float,
    simulated_s: float,
    real_s: float,
    online_at_end: int,
) -> SimReport:
    pairs = _records(sims)
    records = [r for _, r in pairs]
    received = sum(1 for r in records if r.received)
    rejected = sum(1 for r in records if r.rejected)
    later = Counter(a.state for r in records for a in r.later)
    reasons = Counter(a.reason or "unspecified" for r in records for a in r.later if a.state == "rejected")
    pending = [f"{d}/{r.event_id}" for d, r in pairs if not r.settled]
    return SimReport(
        scenario=scenario,
        seed=seed,
        speed=speed,
        simulated_s=round(simulated_s, 3),
        real_s=round(real_s, 3),
        devices=len(sims),
        connected=sum(1 for s in sims if s.connects > 0),
        online_at_end=online_at_end,
        events_raised=len(records),
        events_received=received,
        events_rejected=rejected,
        pending=len(pending),
        sends=sum(r.sends for r in records),
        resends=sum(r.resends for r in records),
        ack_latency=_latency(records),
        telemetry_sent=sum(s.telemetry_sent for s in sims),
        reconnects=sum(s.reconnects for s in sims),
        connect_failures=sum(s.connect_failures for s in sims),
        drops=sum(s.drops for s in sims),
        events_by_type=dict(sorted(Counter(r.type for r in records).items())),
        later_acks=dict(sorted(later.items())),
        rejected_reasons=dict(sorted(reasons.items())),
        pending_events=pending[:100],
        acks_ignored=sum(r.acks_ignored for r in records),
    )
