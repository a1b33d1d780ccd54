"""Process wiring: which parts run in this process, and how they stop.

``carecall gateway`` / ``serve`` run one part each against real services; ``carecall demo``
runs the embedded broker, the gateway, the web server and simulated homes in one process.
Everything stops on SIGINT/SIGTERM after draining what it already accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from config.settings import Settings
from device_gateway.service import Gateway, MqttTarget
from dispatcher.api import create_app
from dispatcher.auth import TokenSigner
from dispatcher.bus import MemoryBus, RedisBus, make_bus
from dispatcher.clock import CatchUpClock, Clock, make_clock
from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.engine import Dispatcher, load_context
from dispatcher.migrate import upgrade_async

if TYPE_CHECKING:
    from device_gateway.store import EventRow
    from simulators.device import DeviceSpec
    from simulators.operators import SimulatedOperators
    from simulators.runner import SimStats

log = structlog.get_logger("carecall.runtime")

PLATFORM_USER = "carecall-platform"
DEMO_SECRETS_FILE = "carecall-demo-secrets.json"


@dataclass
class Core:
    settings: Settings
    engine: AsyncEngine
    maker: async_sessionmaker[AsyncSession]
    bus: MemoryBus | RedisBus
    clock: Clock

    async def close(self) -> None:
        await self.bus.close()
        await self.engine.dispose()


async def open_core(settings: Settings, *, migrate: bool = True) -> Core:
    if migrate:
        await upgrade_async(settings.database_url)
    engine = make_engine(settings.database_url)
    return Core(
        settings, engine, make_sessionmaker(engine), make_bus(settings.redis_url), make_clock(settings.speed)
    )


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's stop event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task


async def run_gateway(settings: Settings, stop: asyncio.Event) -> None:
    if settings.mqtt_url is None:
        raise SystemExit(
            "carecall gateway needs CARECALL_MQTT_URL (a real broker); use `carecall demo` for the embedded one"
        )
    core = await open_core(settings)
    try:
        gw = Gateway(
            settings=settings,
            maker=core.maker,
            bus=core.bus,
            clock=core.clock,
            mqtt=MqttTarget.from_url(settings.mqtt_url),
            shared_group=settings.mqtt_shared_group,
        )
        await gw.run(stop)
    finally:
        await core.close()


def signer_for(settings: Settings) -> TokenSigner:
    from dispatcher.auth import load_secret_key

    configured = settings.secret_key.get_secret_value() if settings.secret_key else None
    return TokenSigner(load_secret_key(configured=configured))


async def ensure_first_admin(core: Core, announce: Callable[[str], None] = print) -> str | None:
    """Create the first admin when there is no user; print a generated password once."""
    from dispatcher.auth import ensure_admin

    given = core.settings.admin_password.get_secret_value() if core.settings.admin_password else None
    password = await ensure_admin(core.maker, password=given, now=datetime.now(UTC))
    if password is not None and given is None:
        announce(f"first admin created: username admin, password {password}  (shown once; change it)")
    return password


def full_app(core: Core, *, mqtt_connected: Callable[[], bool] | None = None) -> Any:
    from dispatcher.engine import load_context

    return create_app(
        core.maker,
        signer=signer_for(core.settings),
        ctx=load_context(core.settings),
        clock=core.clock,
        bus=core.bus,
        mqtt_connected=mqtt_connected,
    )


async def run_serve(settings: Settings, stop: asyncio.Event, host: str, port: int) -> None:
    core = await open_core(settings)
    try:
        await ensure_first_admin(core)
        await serve_http(full_app(core), host, port, stop)
    finally:
        await core.close()


def make_dispatcher(core: Core, mqtt: MqttTarget | None, settings: Settings | None = None) -> Dispatcher:
    from dispatcher.notifiers import make_notifier

    return Dispatcher(
        settings=settings or core.settings,
        maker=core.maker,
        bus=core.bus,
        clock=core.clock,
        mqtt=mqtt,
        notifier=make_notifier(core.settings.notifier, core.settings.webhook_url),
    )


async def run_dispatcher(settings: Settings, stop: asyncio.Event) -> None:
    if settings.mqtt_url is None:
        raise SystemExit(
            "carecall dispatcher needs CARECALL_MQTT_URL (to send device acks); use `carecall demo` for one process"
        )
    core = await open_core(settings)
    try:
        await make_dispatcher(core, MqttTarget.from_url(settings.mqtt_url)).run(stop)
    finally:
        await core.close()


def load_secrets(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_secrets(path: Path, secrets_: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(secrets_, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


async def ensure_demo_county(
    core: Core, secrets_path: Path, *, now: datetime | None = None
) -> dict[str, str]:
    """Load the demo county on first run; make sure we hold a secret for every demo device."""
    from sqlalchemy import select

    from dispatcher.models import Device
    from dispatcher.registry.demo_county import load_demo_county, rekey_devices

    now = now or datetime.now(UTC)
    issued = await load_demo_county(core.maker, now=now)
    known = load_secrets(secrets_path)
    known.update(issued)
    async with core.maker() as session:
        device_ids = list(await session.scalars(select(Device.id).where(Device.privileged.is_(False))))
    missing = [d for d in device_ids if d not in known]
    if missing:
        known.update(await rekey_devices(core.maker, missing, now=now))
    if issued or missing:
        save_secrets(secrets_path, known)
    return {d: known[d] for d in device_ids}


# ----------------------------------------------------------------------------- history
#
# ``carecall demo --speed N --history-days D`` starts the clock D days ago and runs the
# county at ×N until simulated time reaches the real now, then at ×1 (CatchUpClock).
# Around every human-scale moment (a device event, an operator's step, an escalation
# timer that will fire, an event the platform derives itself) the clock runs at
# HISTORY_FINE_SPEED, so answer times are seconds, not minutes of smeared processing time.
#
# One process carries about 150 device messages a second next to everything else; the
# county's 514 devices at their registry heartbeats (60 s for hubs, radars, mattresses)
# would send 5 a second, 25,000 at ×5,000. So while catching up:
#
# - devices report twice a day (HISTORY_HEARTBEAT_S, set in the registry for the
#   catch-up and put back after it, so the gateway's supervision agrees with what devices
#   send; the originals wait in HISTORY_HEARTBEATS_FILE in case the process is killed);
# - the no-movement rule waits HISTORY_INACTIVITY_HOURS: with a reading every 12 hours
#   it cannot see movement, and at 4 hours it would call every radar and mattress daily
#   (device-raised inactivity events still open calls);
# - the gateway flushes device state and sweeps for silent devices in simulated minutes,
#   not seconds (at ×10,000 two simulated seconds are 0.2 real milliseconds);
# - the dispatcher polls its timers every 10 real ms instead of 250.
#
# Alarms are never thinned. After the catch-up the gateway and the dispatcher restart
# with the normal settings, and the simulated homes with their registry heartbeats.

HISTORY_FINE_SPEED = 50.0
HISTORY_HEARTBEAT_S = 12 * 3600
HISTORY_INACTIVITY_HOURS = 72.0
HISTORY_HEARTBEATS_FILE = "carecall-demo-heartbeats.json"
HISTORY_TUNING: dict[str, float] = {
    "state_flush_interval_s": 600.0,
    "supervision_interval_s": 1800.0,
    "timer_poll_s": 0.01,
}


def history_settings(settings: Settings, workdir: Path) -> Settings:
    """The gateway's and dispatcher's settings while catching up (see above)."""
    import yaml

    from device_gateway.rules import load_rules

    rules = load_rules(settings.rules_file).model_dump(mode="json")
    rules["inactivity"]["hours"] = max(float(rules["inactivity"]["hours"]), HISTORY_INACTIVITY_HOURS)
    path = workdir / "history-rules.yaml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    return settings.model_copy(update={**HISTORY_TUNING, "rules_file": path})


def history_heartbeat(registry_s: int) -> int:
    """A device's heartbeat while catching up: never shorter than it is registered."""
    return max(registry_s, HISTORY_HEARTBEAT_S)


async def history_heartbeats(core: Core, path: Path) -> None:
    """Registry heartbeats for the catch-up; the originals are saved first."""
    from sqlalchemy import select, update

    from dispatcher.models import Device

    async with core.maker() as s, s.begin():
        rows = (
            await s.execute(
                select(Device.id, Device.kind, Device.heartbeat_s).where(Device.privileged.is_(False))
            )
        ).all()
        changes = {r.id: (r.heartbeat_s, history_heartbeat(r.heartbeat_s)) for r in rows}
        changes = {d: v for d, v in changes.items() if v[1] != v[0]}
        if not changes:
            return
        saved = load_secrets(path)  # same {str: str} file format
        saved.update({d: str(old) for d, (old, _) in changes.items() if d not in saved})
        save_secrets(path, saved)
        by_new: dict[int, list[str]] = {}
        for d, (_, new) in changes.items():
            by_new.setdefault(new, []).append(d)
        for new, ids in by_new.items():
            await s.execute(update(Device).where(Device.id.in_(ids)).values(heartbeat_s=new))


async def restore_heartbeats(core: Core, path: Path) -> int:
    """Put back the heartbeats saved by ``history_heartbeats`` (also after a killed run)."""
    from sqlalchemy import update

    from dispatcher.models import Device

    saved = load_secrets(path)
    by_value: dict[int, list[str]] = {}
    for device_id, value in saved.items():
        with contextlib.suppress(ValueError):
            by_value.setdefault(int(value), []).append(device_id)
    if by_value:
        async with core.maker() as s, s.begin():
            for hb, ids in by_value.items():
                await s.execute(update(Device).where(Device.id.in_(ids)).values(heartbeat_s=hb))
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # noqa: ASYNC240 (a small file, twice a run)
    return sum(len(v) for v in by_value.values())


async def last_recorded(core: Core) -> datetime | None:
    """The newest audit row's time: a second history run resumes there, never overlaps."""
    from sqlalchemy import func, select

    from dispatcher.models import AuditRow

    async with core.maker() as s:
        at: datetime | None = await s.scalar(select(func.max(AuditRow.at)))
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def count_calls(core: Core) -> int:
    from sqlalchemy import func, select

    from dispatcher.models import Call

    async with core.maker() as s:
        return int(await s.scalar(select(func.count()).select_from(Call)) or 0)


async def _history_progress(
    core: Core, clock: CatchUpClock, days: float, say: Callable[[str], None], every_s: float
) -> None:
    t0 = clock.now()
    while True:
        await asyncio.sleep(every_s)
        done = (clock.now() - t0).total_seconds() / 86400
        say(f"history: {min(done, days):.1f} of {days:.1f} days, {await count_calls(core)} calls")


def _say_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


DERIVED_HOLD_S = 15.0


def _hold_after_derived(clock: CatchUpClock) -> Callable[[list[EventRow]], Awaitable[None]]:
    """Events the platform derives itself (rules, supervision) cannot be foreseen like a
    device's; fine time from the moment one is stored, so its call opens and is seen
    at human scale (what passed between its receipt and its commit is already gone)."""

    async def hold(rows: list[EventRow]) -> None:
        if any(r.source != "device" for r in rows):
            now = clock.now()
            clock.hold(now, now + timedelta(seconds=DERIVED_HOLD_S))

    return hold


BACK_PRESSURE_EVERY_S = 0.02
BACK_PRESSURE_HOLD_S = 3.0
BACK_PRESSURE_LAG_S = 0.05
DEVICES_CONNECT_S = 120.0
STUCK_S = 2.0


async def _back_pressure(
    clock: CatchUpClock, parts: _Parts, stop: asyncio.Event, maker: async_sessionmaker[AsyncSession]
) -> None:
    """The history never runs ahead of the platform: while work is in flight (devices
    still connecting, a device waiting for its "received", a stored event not yet a call)
    or the event loop lags,
    the clock runs at the fine rate. At ×10,000 a 50 ms stall would otherwise be eight
    simulated minutes in which devices resend, timers fire and nobody could answer."""
    started = time.monotonic()
    while clock.paused and not stop.is_set():
        # Simulated time starts once every device is connected (and the simulated
        # operators have their logins): hundreds of logins and retained configs at once
        # would otherwise smear the first simulated hours.
        ready = parts.devices_away == 0 and all(t.done() for t in parts.starting)
        if ready or time.monotonic() - started > DEVICES_CONNECT_S:
            # Everything alive now (the county, its devices and their sessions) stays
            # alive: out of the collector's sight. A full collection over it pauses the
            # loop for up to half a second, which is an hour of simulated time.
            gc.collect()
            gc.freeze()
            clock.resume()
            log.info("demo.history_started", after_s=round(time.monotonic() - started, 1))
            break
        await asyncio.sleep(BACK_PRESSURE_EVERY_S)
    from sqlalchemy import func, select

    from dispatcher.models import DeviceEvent

    async with maker() as s:
        since_pk = int(await s.scalar(select(func.max(DeviceEvent.id))) or 0)
    settled = time.monotonic()
    while not stop.is_set() and not clock.caught_up.is_set():
        if time.monotonic() - settled > 1.0:
            settled = time.monotonic()
            await parts.settle_intake(maker, since_pk)
        t = time.monotonic()
        await asyncio.sleep(BACK_PRESSURE_EVERY_S)
        lag = time.monotonic() - t - BACK_PRESSURE_EVERY_S
        if lag > BACK_PRESSURE_LAG_S or parts.backlog() > 0:
            now = clock.now()
            clock.hold(now, now + timedelta(seconds=BACK_PRESSURE_HOLD_S))


@dataclass
class _Parts:
    """The gateway, dispatcher and simulated homes of one phase (history or live)."""

    gateway: Gateway
    dispatcher: Dispatcher
    stop: asyncio.Event
    tasks: list[asyncio.Task[object]]
    devices_pending: int = 0  # simulated devices' events not yet acknowledged as received
    devices_away: int = 0  # simulated devices not (yet) connected, other than those gone silent on purpose
    starting: list[asyncio.Task[object]] = field(default_factory=list)  # to finish before the clock starts

    intake_offset: int = 0
    _pending_seen: tuple[int, float] = (0, 0.0)

    def backlog(self) -> int:
        """Work in flight: events the devices still wait to hear "received" for, and
        stored events the dispatcher has not turned into calls yet (by the counters; an
        event handled off the counted path is corrected by ``settle_intake``)."""
        intake = self.gateway.stats.events_stored - self.dispatcher.stats.events - self.intake_offset
        pending = self.devices_pending
        # a device gone silent keeps its events pending until it is back (simulated
        # minutes to hours): that is no work the platform can do, so a count that has
        # not moved for STUCK_S real seconds does not hold the clock
        now = time.monotonic()
        if pending != self._pending_seen[0]:
            self._pending_seen = (pending, now)
        elif now - self._pending_seen[1] > STUCK_S:
            pending = 0
        return pending + self.devices_away + max(0, intake)

    async def settle_intake(self, maker: async_sessionmaker[AsyncSession], since_pk: int) -> None:
        """When the counters say events wait but the database says none do (the
        dispatcher handled one singly, or a batch twice), believe the database."""
        from sqlalchemy import exists, func, select

        from dispatcher.models import DeviceEvent, EventIntake

        intake = self.gateway.stats.events_stored - self.dispatcher.stats.events - self.intake_offset
        if intake <= 0:
            return
        async with maker() as s:
            waiting = await s.scalar(
                select(func.count())
                .select_from(DeviceEvent)
                .where(
                    DeviceEvent.id > since_pk,
                    ~exists().where(EventIntake.event_pk == DeviceEvent.id),
                )
            )
        if not waiting:
            self.intake_offset += intake

    async def close(self) -> None:
        self.stop.set()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.error("demo.task_failed", error=repr(r))


async def run_demo(
    settings: Settings,
    stop: asyncio.Event,
    *,
    simulate: bool,
    scenario: str = "normal",
    announce: Callable[[str], None] = print,
    ready: Callable[[Gateway], Awaitable[None]] | None = None,
    history_days: float = 0.0,
    operators: str = "history",
    progress: Callable[[str], None] = _say_stderr,
    progress_every_s: float = 5.0,
    fine_speed: float = HISTORY_FINE_SPEED,
) -> None:
    """The demo in one process. ``history_days`` > 0 first fills that many days of history
    at ×``settings.speed`` (see above); ``operators``: when simulated operators answer the
    calls — ``history`` (while catching up), ``always`` or ``never``."""
    from device_gateway.broker import EmbeddedBroker

    if operators not in ("history", "always", "never"):
        raise ValueError("operators must be history, always or never")
    host, mport, hport = settings.embedded_mqtt_host, settings.embedded_mqtt_port, settings.http_port
    for what, port in (("MQTT", mport), ("HTTP", hport)):
        if not port_free(host if what == "MQTT" else settings.http_host, port):
            raise SystemExit(
                f"carecall demo: {what} port {port} is in use; pick another with --{'mqtt-' if what == 'MQTT' else ''}port"
            )
    core = await open_core(settings)
    secrets_path = Path(DEMO_SECRETS_FILE).resolve()  # noqa: ASYNC240 (once, at start)
    heartbeats_path = Path(HISTORY_HEARTBEATS_FILE).resolve()  # noqa: ASYNC240
    await restore_heartbeats(core, heartbeats_path)  # a killed catch-up left them thinned
    begin: datetime | None = None
    if history_days > 0:
        real_now = datetime.now(UTC)
        begin = real_now - timedelta(days=history_days)
        last = await last_recorded(core)
        if last is not None and last > begin:
            begin = min(last, real_now)  # resume where the record ends
        if (real_now - begin).total_seconds() < 60:
            begin = None
    device_secrets = await ensure_demo_county(core, secrets_path, now=begin or datetime.now(UTC))
    platform_password = secrets.token_urlsafe(24)
    broker = EmbeddedBroker(
        host=host,
        port=mport,
        maker=core.maker,
        platform_username=PLATFORM_USER,
        platform_password=platform_password,
    )
    await broker.start()
    target = MqttTarget(host, mport, PLATFORM_USER, platform_password, tls=False)
    tasks: list[asyncio.Task[object]] = []
    phase: _Parts | None = None

    async def start_phase(s: Settings, sim_seed: int) -> _Parts:
        phase_stop = asyncio.Event()
        gw = Gateway(
            settings=s,
            maker=core.maker,
            bus=core.bus,
            clock=core.clock,
            mqtt=target,
            shared_group=None,  # one gateway in the demo: a plain subscription
        )
        if isinstance(core.clock, CatchUpClock):
            gw.on_stored = _hold_after_derived(core.clock)
        dsp = make_dispatcher(core, target, s)
        parts = _Parts(gw, dsp, phase_stop, [asyncio.create_task(gw.run(phase_stop))])
        parts.tasks.append(asyncio.create_task(dsp.run(phase_stop)))
        await asyncio.wait_for(gw.connected.wait(), timeout=30)
        if simulate:

            def seen(st: SimStats) -> None:
                parts.devices_pending = st.pending
                parts.devices_away = max(0, st.devices - st.online - st.silent)

            parts.devices_away = len(device_secrets)  # until the first report: all still connecting

            parts.tasks.append(
                asyncio.create_task(
                    _simulate_demo(
                        core,
                        host,
                        mport,
                        device_secrets,
                        scenario,
                        phase_stop,
                        seed=sim_seed,
                        on_progress=seen if isinstance(core.clock, CatchUpClock) else None,
                    )
                )
            )
        if isinstance(core.clock, CatchUpClock):
            parts.tasks.append(asyncio.create_task(_back_pressure(core.clock, parts, phase_stop, core.maker)))
        return parts

    ops_stop = asyncio.Event()
    workdir = tempfile.TemporaryDirectory(prefix="carecall-demo-")
    sim_ops: SimulatedOperators | None = None
    preparing: asyncio.Task[object] | None = None
    clock: CatchUpClock | None = None
    try:
        if operators == "always" or (operators == "history" and begin is not None):
            from simulators.operators import SimulatedOperators

            sim_ops = SimulatedOperators(
                maker=core.maker, clock=core.clock, ctx=load_context(settings), bus=core.bus
            )
            # their logins are hashed while the devices connect (the clock waits for both)
            preparing = asyncio.create_task(sim_ops.prepare())
        if begin is not None:
            await history_heartbeats(core, heartbeats_path)
            # The clock starts only now, with everything loaded: a slow start must not
            # eat simulated hours before the first device is up.
            real_now = datetime.now(UTC)
            history_days = (real_now - begin).total_seconds() / 86400
            clock = CatchUpClock(
                start=begin, until=real_now, fast=settings.speed, fine=fine_speed, paused=simulate
            )
            core.clock = clock
            if sim_ops is not None:
                sim_ops.clock = clock
        phase = await start_phase(
            history_settings(settings, Path(workdir.name)) if clock is not None else settings, 1
        )
        if preparing is not None:
            phase.starting.append(preparing)
        current = phase

        def mqtt_connected() -> bool:
            return current.gateway.connected.is_set()

        app = full_app(core, mqtt_connected=mqtt_connected)
        tasks.append(asyncio.create_task(serve_http(app, settings.http_host, hport, stop)))
        if sim_ops is not None:
            if clock is None and preparing is not None:
                await preparing  # live only: nothing waits for the clock, so wait here
            tasks.append(asyncio.create_task(sim_ops.run(ops_stop)))
        login = await demo_login(core)
        announce(
            "\n".join(
                [
                    "CareCall demo is running (Ctrl-C stops it).",
                    f"  console:   http://{settings.http_host}:{hport}/console/  (API docs /docs, health /healthz, metrics /metrics)",
                    f"  login:     {login}",
                    f"  MQTT:      mqtt://{host}:{mport}  (devices: client id = username = device id, password = its secret)",
                    f"  database:  {settings.database_url}",
                    f"  devices:   {len(device_secrets)} demo devices, secrets in {secrets_path}",
                    (
                        f"  history:   {history_days:.1f} days from {clock.now():%Y-%m-%d %H:%M} UTC at ×{settings.speed:g}"
                        f" (×{clock.fine:g} around alarms and operators' steps), then ×1; progress on stderr"
                        if clock is not None
                        else f"  speed:     ×{settings.speed:g} simulated time"
                    )
                    + ("" if simulate else " (no simulated devices: --no-sim)"),
                ]
            )
        )
        if ready is not None:
            await ready(phase.gateway)
        if clock is not None:
            reporter = asyncio.create_task(
                _history_progress(core, clock, history_days, progress, progress_every_s)
            )
            caught = asyncio.ensure_future(clock.sleep((clock.until - clock.now()).total_seconds()))
            halted = asyncio.ensure_future(stop.wait())
            await asyncio.wait([caught, halted], return_when=asyncio.FIRST_COMPLETED)
            caught.cancel()
            halted.cancel()
            reporter.cancel()
            await phase.close()
            phase = None
            await restore_heartbeats(core, heartbeats_path)
            calls_n = await count_calls(core)
            real_s = clock.real_catch_up_s
            progress(
                f"history: {history_days:.1f} days filled, {calls_n} calls"
                + (f", in {real_s:.0f} s real time" if real_s is not None else " (stopped early)")
                + ("; now at ×1" if not stop.is_set() else "")
            )
            if operators == "history":
                ops_stop.set()
            if not stop.is_set():
                phase = current = await start_phase(settings, 2)
        await stop.wait()
    finally:
        stop.set()
        ops_stop.set()
        if phase is not None:
            await phase.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.error("demo.task_failed", error=repr(r))
        with contextlib.suppress(Exception):
            await restore_heartbeats(core, heartbeats_path)
        workdir.cleanup()
        await broker.stop()
        await core.close()


DEMO_OPERATOR = "county-op"
DEMO_PASSWORD = "carecall-demo"


async def demo_login(core: Core) -> str:
    """The demo's logins: the admin (created once) and a county operator with a known
    demo password, so a newcomer can sign in straight away. Demo databases only."""
    from sqlalchemy import select

    from dispatcher.auth import create_user
    from dispatcher.models import Station, User

    await ensure_first_admin(core)
    async with core.maker() as s, s.begin():
        exists = await s.scalar(select(User.id).where(User.username == DEMO_OPERATOR))
        county = await s.scalar(
            select(Station.id).where(Station.tier == "county").order_by(Station.id).limit(1)
        )
        if exists is None and county is not None:
            await create_user(
                s,
                username=DEMO_OPERATOR,
                password=DEMO_PASSWORD,
                role="operator",
                station_id=county,
                display_name="县平台值班员",
                now=datetime.now(UTC),
            )
    return f"{DEMO_OPERATOR} / {DEMO_PASSWORD} (county operator, sees every call)"


async def _simulate_demo(
    core: Core,
    host: str,
    port: int,
    device_secrets: dict[str, str],
    scenario_name: str,
    stop: asyncio.Event,
    *,
    seed: int = 1,
    on_progress: Callable[[SimStats], None] | None = None,
) -> None:
    from simulators.runner import run_simulation
    from simulators.scenario import load_scenario

    specs = await device_specs(core.maker, device_secrets)
    await run_simulation(
        host=host,
        port=port,
        devices=specs,
        scenario=load_scenario(scenario_name),
        clock=core.clock,
        duration_s=None,
        stop=stop,
        seed=seed,
        on_progress=on_progress,
        progress_interval_s=BACK_PRESSURE_EVERY_S,
    )


async def device_specs(
    maker: async_sessionmaker[AsyncSession], device_secrets: dict[str, str], homes: int | None = None
) -> list[DeviceSpec]:
    from sqlalchemy import select

    from dispatcher.models import Device
    from simulators.device import DeviceSpec

    async with maker() as session:
        rows = (
            await session.execute(
                select(Device.id, Device.kind, Device.home_id, Device.heartbeat_s)
                .where(Device.enabled.is_(True), Device.privileged.is_(False))
                .order_by(Device.home_id, Device.id)
            )
        ).all()
    specs: list[DeviceSpec] = []
    seen_homes: list[str] = []
    for r in rows:
        if r.home_id not in seen_homes:
            if homes is not None and len(seen_homes) >= homes:
                break
            seen_homes.append(r.home_id)
        secret = device_secrets.get(r.id)
        if secret:
            specs.append(
                DeviceSpec(
                    device_id=r.id, kind=r.kind, home_id=r.home_id, secret=secret, heartbeat_s=r.heartbeat_s
                )
            )
    return specs
