"""County and city scale: a fleet run that chooses its mode.

Up to 100,000 simulated devices. Each per-device connection costs a file descriptor in
this process and one in the broker, so ``run_fleet`` first raises RLIMIT_NOFILE as far as
the hard limit permits, then gives that many devices (minus a reserve for the database,
logs and the broker's own needs) a real connection of their own (``SimulatedDevice``:
per-device ACLs, wills, reconnects); the rest of the county speaks through one privileged
load-generator identity (``simulators.loadmode``). The report says which mode ran and how
many descriptors the process holds, so a figure is never quoted without its conditions.

The devices come as ``DeviceSpec``s from whoever registered them (the shell's
``carecall/shell/fleet_registry.py`` for ``carecall simulate --devices``).
"""

from __future__ import annotations

import asyncio
import resource
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from simulators.clock import SimClock
from simulators.device import DeviceSpec
from simulators.loadgen import LoadGenerator
from simulators.loadmode import LoadReport, LoadRun
from simulators.runner import LatencySummary, SimReport, SimStats, check_host, percentile, run_simulation
from simulators.scenario import Scenario

MAX_DEVICES = 100_000
# Descriptors kept back for the database pool, log files, the loop's self-pipe and the
# load generator's own sockets: running out mid-run would look like a broker failure.
FD_RESERVE = 256
# Every run is bounded by a count as well as by time: publishes by the simulator, all kinds.
DEFAULT_MAX_MESSAGES = 5_000_000


# --------------------------------------------------------------------------- fd limit


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit, which
    only root may raise, and we do not try). Returns (soft, hard) as now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def fd_soft_after_raise(wanted: int) -> int:
    """The soft limit ``raise_fd_limit(wanted)`` would reach, without raising it yet."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    return max(soft, target)


def plan_modes(devices: int, fd_soft: int, *, max_connections: int | None = None) -> tuple[int, int]:
    """How many devices get their own connection and how many go through the load
    generator, given the descriptors this process may hold."""
    room = max(0, fd_soft - FD_RESERVE)
    if max_connections is not None:
        room = min(room, max_connections)
    real = min(devices, room)
    return real, devices - real


def split_scenario(scenario: Scenario, connected: int, load: int) -> tuple[Scenario, Scenario]:
    """The parts of one county-wide scenario played by the per-device connections and by
    the load generator, so a mixed run does the scenario once, not once per mode.

    Counted stories (a burst's events, a power cut's devices) are shared in proportion to
    the devices in each part; one-device stories (scripted events, a flapping device, a
    device that resends forever) go to a real connection when there is one, since that
    is where they exercise wills and reconnects."""
    total = connected + load
    if total <= 0:
        raise ValueError("no devices")

    def share(n: int, *, of_devices: bool) -> tuple[int, int]:
        """Split ``n`` in proportion; a count of devices cannot exceed a part's devices."""
        mine = round(n * connected / total)
        if not of_devices:
            return mine, n - mine
        mine = min(connected, mine)
        return mine, min(load, n - mine)

    conn: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    if scenario.burst is not None:
        a, b = share(scenario.burst.total, of_devices=False)
        conn["burst"] = scenario.burst.model_copy(update={"total": a})
        rest["burst"] = scenario.burst.model_copy(update={"total": b})
    if scenario.power_cut is not None:
        a, b = share(scenario.power_cut.devices, of_devices=True)
        conn["power_cut"] = scenario.power_cut.model_copy(update={"devices": a}) if a else None
        rest["power_cut"] = scenario.power_cut.model_copy(update={"devices": b}) if b else None
    singles: dict[str, Any] = {"scripted": [], "flapping": [], "resend_forever": []}
    if connected:
        rest.update(singles)
    else:
        conn.update(singles)
    return scenario.model_copy(update=conn), scenario.model_copy(update=rest)


# --------------------------------------------------------------------------- fleet run


class FleetStats(BaseModel):
    """A live snapshot of a fleet run, for progress bars and plain progress lines."""

    model_config = ConfigDict(frozen=True)

    elapsed_s: float
    planned_s: float  # real seconds the run will take (simulated duration / speed)
    devices: int
    connections_planned: int
    connections_online: int
    load_devices: int
    messages: int
    max_messages: int
    msgs_per_s: float
    telemetry_sent: int
    events_sent: int
    events_acked: int
    acks_received: int
    resends: int
    offline_devices: int
    conn_ack_p50_ms: float | None
    conn_ack_p99_ms: float | None
    load_ack_p50_ms: float | None
    load_ack_p99_ms: float | None


class OpenFiles(BaseModel):
    """RLIMIT_NOFILE of the simulator process: what it was, what the run raised it to."""

    model_config = ConfigDict(frozen=True)

    soft_before: int
    hard_before: int
    soft_after: int
    hard_after: int


class FleetReport(BaseModel):
    """A fleet run: which mode ran for how many devices, and what each part saw."""

    model_config = ConfigDict(frozen=True)

    mode: str  # "connections", "load", or "mixed"
    modes: list[str]  # the parts that ran: "connections" and/or "load"
    scenario: str
    target: str  # host:port of the broker
    speed: float
    seed: int
    devices: int
    connected_devices: int  # devices planned with a connection of their own
    connections_held: int  # the most of them online at once
    load_mode_devices: int
    max_connections: int | None
    open_files: OpenFiles
    fd_soft_limit: int
    fd_hard_limit: int
    simulated_s: float
    real_s: float
    max_messages: int
    stopped_by: str  # "duration", "max_messages" or "stopped" (signal)
    messages: int  # MQTT publishes by the simulator: telemetry, events, resends, status
    msgs_per_s: float
    events_sent: int
    events_acked: int
    acks_received: int
    resends: int
    ack_latency: dict[str, LatencySummary]  # per part: "connections", "load"
    connections: SimReport | None
    load: LoadReport | None


def _conn_messages(st: SimStats | None) -> int:
    return 0 if st is None else st.telemetry_sent + st.events_raised + st.resends


class _Watch:
    """Live figures of both parts of a run: the latest per-device snapshot and the load run."""

    def __init__(
        self,
        devices: int,
        real_n: int,
        load: LoadRun | None,
        *,
        planned_s: float,
        max_messages: int,
        t0: float,
    ) -> None:
        self.devices = devices
        self.real_n = real_n
        self.load = load
        self.planned_s = planned_s
        self.max_messages = max_messages
        self.latest: list[SimStats] = []
        self.peak_online = 0
        self.t0 = t0

    def snapshot(self, prev: tuple[float, int]) -> FleetStats:
        cs = self.latest[-1] if self.latest else None
        load = self.load
        self.peak_online = max(self.peak_online, cs.online if cs else 0)
        lm = load.messages if load else 0
        msgs = _conn_messages(cs) + lm
        now = time.monotonic()
        rate = (msgs - prev[1]) / max(1e-6, now - prev[0])
        lat = sorted(load.gen.ack_latencies_ms()) if load else []
        lst = load.gen.stats if load else None
        return FleetStats(
            elapsed_s=round(now - self.t0, 1),
            planned_s=round(self.planned_s, 1),
            devices=self.devices,
            connections_planned=self.real_n,
            connections_online=cs.online if cs else 0,
            load_devices=self.devices - self.real_n,
            messages=msgs,
            max_messages=self.max_messages,
            msgs_per_s=round(rate, 1),
            telemetry_sent=(cs.telemetry_sent if cs else 0) + (lst.telemetry_sent if lst else 0),
            events_sent=(cs.events_raised if cs else 0) + (lst.events_sent if lst else 0),
            events_acked=(cs.events_received if cs else 0)
            + (sum(1 for e in list(load.gen.events.values()) if e.acked is not None) if load else 0),
            acks_received=(cs.events_received if cs else 0) + (lst.acks_seen if lst else 0),
            resends=(cs.resends if cs else 0) + (lst.resends if lst else 0),
            offline_devices=(cs.silent if cs else 0) + (len(load.offline) if load else 0),
            conn_ack_p50_ms=cs.ack_p50_ms if cs else None,
            conn_ack_p99_ms=cs.ack_p99_ms if cs else None,
            load_ack_p50_ms=round(percentile(lat, 0.5), 2) if lat else None,
            load_ack_p99_ms=round(percentile(lat, 0.99), 2) if lat else None,
        )

    async def monitor(
        self,
        interval_s: float,
        stop: asyncio.Event,
        on_stats: Callable[[FleetStats], None] | None,
        say: Callable[[str], None],
    ) -> None:
        """A snapshot every ``interval_s``; sets ``stop`` once the message budget is spent."""
        prev = (self.t0, 0)
        while True:
            await asyncio.sleep(interval_s)
            st = self.snapshot(prev)
            prev = (time.monotonic(), st.messages)
            if on_stats is not None:
                on_stats(st)
            if st.messages >= self.max_messages and not stop.is_set():
                say(f"message budget of {self.max_messages} spent: stopping")
                stop.set()


def _check_run(specs: Sequence[DeviceSpec], duration_s: float, max_messages: int) -> None:
    if not specs:
        raise ValueError("no devices")
    if len(specs) > MAX_DEVICES:
        raise ValueError(f"at most {MAX_DEVICES} devices")
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    if max_messages < 1:
        raise ValueError("max_messages must be positive")


async def run_fleet(
    *,
    host: str,
    port: int,
    specs: Sequence[DeviceSpec],
    scenario: Scenario,
    clock: SimClock,
    duration_s: float,
    loadgen_username: str | None = None,
    loadgen_password: str | None = None,
    observer_username: str | None = None,
    observer_password: str | None = None,
    max_connections: int | None = None,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    allow_remote: bool = False,
    stop: asyncio.Event | None = None,
    on_stats: Callable[[FleetStats], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
    stats_interval_s: float = 1.0,
    seed: int = 1,
    drain_s: float = 10.0,
) -> FleetReport:
    """Run up to 100,000 devices for ``duration_s`` simulated seconds: as many with their
    own connection as the descriptor limit (and ``max_connections``) allows, the rest
    through the privileged load generator, which plays their share of the scenario.

    Stops by itself: at the end of the duration, when ``max_messages`` publishes were
    made, or when ``stop`` is set. Acks in load mode are read by a second connection as
    ``observer_username`` (the platform account on a broker with an ACL: a device,
    privileged or not, may read only its own downlink); without one, as the load
    generator itself, which works on an anonymous broker."""
    check_host(host, allow_remote=allow_remote)
    _check_run(specs, duration_s, max_messages)
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = raise_fd_limit(len(specs) + FD_RESERVE)
    real_n, load_n = plan_modes(len(specs), soft, max_connections=max_connections)
    if load_n and loadgen_username is None:
        raise ValueError(
            f"{load_n} devices do not fit in {soft} descriptors: load mode needs the privileged "
            "load-generator identity (provision_fleet registers one)"
        )
    say = on_progress or (lambda _m: None)
    say(
        f"fleet: {len(specs)} devices; open-files limit {soft} (hard {hard}, was {before[0]}); "
        f"{real_n} with their own connection, {load_n} in load mode"
    )
    conn_scen, load_scen = split_scenario(scenario, real_n, load_n)
    stop = stop or asyncio.Event()
    speed = clock.speed
    t0 = time.monotonic()
    load: LoadRun | None = None
    load_thread: threading.Thread | None = None
    if load_n:
        # Started first, on purpose: paho's network loop uses select(), which cannot watch
        # a descriptor numbered 1024 or above; opened before the per-device sockets, the
        # load generator's sockets get low numbers.
        gen = LoadGenerator(
            host,
            port,
            username=loadgen_username,
            password=loadgen_password,
            ack_username=observer_username,
            ack_password=observer_password,
            client_id=f"{loadgen_username}-{secrets.token_hex(3)}",
            allow_remote=allow_remote,
            resend_s=scenario.resend.initial_s / speed,
            resend_factor=scenario.resend.factor,
            resend_max_s=scenario.resend.max_s / speed,
        )
        await asyncio.to_thread(gen.start)
        if gen.acks_observed is False:
            say("load mode: the broker refused the ack subscription; load-mode acks are not observed")
        load = LoadRun(
            gen,
            specs[real_n:],
            load_scen,
            speed=speed,
            duration_s=duration_s,
            max_messages=max_messages,
            seed=seed,
            drain_s=drain_s,
        )
        load_thread = threading.Thread(target=load.run, name="fleet-loadgen", daemon=True)
        load_thread.start()
    watch = _Watch(len(specs), real_n, load, planned_s=duration_s / speed, max_messages=max_messages, t0=t0)

    async def wait_load() -> None:
        if load_thread is not None:
            await asyncio.to_thread(load_thread.join)

    mon = asyncio.create_task(watch.monitor(stats_interval_s, stop, on_stats, say))
    conn_report: SimReport | None = None
    try:
        if real_n:
            conn_report = await run_simulation(
                host=host,
                port=port,
                devices=specs[:real_n],
                scenario=conn_scen,
                clock=clock,
                duration_s=duration_s,
                stop=stop,
                allow_remote=allow_remote,
                seed=seed,
                on_progress=watch.latest.append,
                progress_interval_s=stats_interval_s,
            )
        else:
            waiter = asyncio.create_task(stop.wait())
            loader = asyncio.create_task(wait_load())
            await asyncio.wait({waiter, loader}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if load is not None and stop.is_set():
            load.stop.set()
        await wait_load()
    finally:
        if load is not None:
            load.stop.set()
            await wait_load()
            await asyncio.to_thread(load.gen.close)
        mon.cancel()
        await asyncio.gather(mon, return_exceptions=True)
    final = watch.snapshot((watch.t0, 0))
    if on_stats is not None:
        on_stats(final)
    return _fleet_report(
        watch,
        final,
        conn_report,
        stop_set=stop.is_set(),
        scenario=scenario.name,
        target=f"{host}:{port}",
        speed=speed,
        seed=seed,
        max_connections=max_connections,
        open_files=OpenFiles(soft_before=before[0], hard_before=before[1], soft_after=soft, hard_after=hard),
    )


def _fleet_report(
    watch: _Watch,
    final: FleetStats,
    conn_report: SimReport | None,
    *,
    stop_set: bool,
    scenario: str,
    target: str,
    speed: float,
    seed: int,
    max_connections: int | None,
    open_files: OpenFiles,
) -> FleetReport:
    """Both parts' figures as one report (the per-device part's own report is inside)."""
    load = watch.load
    load_report = load.report() if load is not None else None
    real_s = time.monotonic() - watch.t0
    load_messages = load.messages if load else 0
    messages = _conn_messages(watch.latest[-1] if watch.latest else None) + load_messages
    if conn_report is not None:
        messages = conn_report.telemetry_sent + conn_report.sends + load_messages
    modes = (["connections"] if watch.real_n else []) + (["load"] if load is not None else [])
    if load_report is not None and load_report.stopped_by != "duration":
        stopped_by = load_report.stopped_by
    else:
        stopped_by = "stopped" if stop_set else "duration"
    if messages >= watch.max_messages:
        stopped_by = "max_messages"
    latency: dict[str, LatencySummary] = {}
    if conn_report is not None:
        latency["connections"] = conn_report.ack_latency
    if load_report is not None:
        latency["load"] = load_report.ack_latency
    return FleetReport(
        mode="mixed" if len(modes) == 2 else modes[0],
        modes=modes,
        scenario=scenario,
        target=target,
        speed=speed,
        seed=seed,
        devices=watch.devices,
        connected_devices=watch.real_n,
        connections_held=max(watch.peak_online, conn_report.online_at_end if conn_report else 0),
        load_mode_devices=watch.devices - watch.real_n,
        max_connections=max_connections,
        open_files=open_files,
        fd_soft_limit=open_files.soft_after,
        fd_hard_limit=open_files.hard_after,
        simulated_s=round(
            conn_report.simulated_s if conn_report else (load.real_s if load else 0.0) * speed, 1
        ),
        real_s=round(real_s, 2),
        max_messages=watch.max_messages,
        stopped_by=stopped_by,
        messages=messages,
        msgs_per_s=round(messages / max(real_s, 1e-6), 1),
        events_sent=(conn_report.events_raised if conn_report else 0)
        + (load_report.events_sent if load_report else 0),
        events_acked=(conn_report.events_received if conn_report else 0)
        + (load_report.events_acked if load_report else 0),
        acks_received=final.acks_received,
        resends=(conn_report.resends if conn_report else 0) + (load_report.resends if load_report else 0),
        ack_latency=latency,
        connections=conn_report,
        load=load_report,
    )
