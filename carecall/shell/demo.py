"""``carecall demo``: the whole platform in one process on embedded defaults.

The embedded broker, the gateway and the dispatcher (wired as every process wires them:
``carecall.shell.runtime.start_parts``), the web server, and simulated homes of the bundled
demo county. With ``--history-days`` it first fills simulated history at high speed
(carecall/shell/demo_history.py) with simulated operators answering the calls
(carecall/shell/sim_operators.py), then goes on at ×1.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import CatchUpClock
from carecall.shell.demo_history import (
    BACK_PRESSURE_EVERY_S,
    HISTORY_FINE_SPEED,
    HISTORY_HEARTBEATS_FILE,
    Phase,
    back_pressure,
    count_calls,
    history_begin,
    history_heartbeats,
    history_order_levels,
    history_progress,
    history_settings,
    history_visit_rules,
    hold_after_derived,
    restore_heartbeats,
)
from carecall.shell.runtime import (
    Core,
    embedded_broker,
    ensure_first_admin,
    full_app,
    open_core,
    port_free,
    serve_http,
    settle_heap,
    stall_monitor,
    start_parts,
    watch,
)
from carecall.shell.secret_files import load_secrets, save_secrets
from config.settings import Settings
from device_gateway.mqtt import MqttTarget
from device_gateway.service import Gateway
from dispatcher.engine.process import load_context
from dispatcher.health.state import DispatchHealth

if TYPE_CHECKING:
    from carecall.shell.sim_operators import SimulatedOperators
    from simulators.device import DeviceSpec
    from simulators.runner import SimStats

log = structlog.get_logger("carecall.runtime")

DEMO_SECRETS_FILE = "carecall-demo-secrets.json"


async def ensure_demo_county(
    core: Core, secrets_path: Path, *, now: datetime | None = None
) -> dict[str, str]:
    """Load the demo county on first run; make sure we hold a secret for every demo device."""
    from sqlalchemy import select

    from device_gateway.models import Device
    from dispatcher.registry.demo_load import load_demo_county, rekey_devices

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
    await ensure_demo_services(core.maker, now=now)
    return {d: known[d] for d in device_ids}


async def ensure_demo_services(maker: async_sessionmaker[AsyncSession], *, now: datetime) -> tuple[int, int]:
    """The demo county's providers and residents' special-difficulty groups (so orders
    route and visit plans exist), added once to the demo county only (also to a demo
    database made before they existed). Returns (providers, category rows) added."""
    from dispatcher.orders.demo_providers import load_demo_providers
    from dispatcher.registry.demo_county import COUNTY_ID
    from dispatcher.registry.models import Station
    from dispatcher.visits.demo_categories import load_demo_categories

    async with maker() as session:
        if await session.get(Station, COUNTY_ID) is None:
            return 0, 0  # not the demo county: its groups and providers are its own
    return await load_demo_providers(maker, now=now), await load_demo_categories(maker)


def _say_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _check_ports(settings: Settings) -> None:
    host, mport, hport = settings.embedded_mqtt_host, settings.embedded_mqtt_port, settings.http_port
    for what, port in (("MQTT", mport), ("HTTP", hport)):
        if not port_free(host if what == "MQTT" else settings.http_host, port):
            raise SystemExit(
                f"carecall demo: {what} port {port} is in use; pick another with --{'mqtt-' if what == 'MQTT' else ''}port"
            )


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
    at ×``settings.speed`` (carecall/shell/demo_history.py); ``operators``: when simulated
    operators answer the calls — ``history`` (while catching up), ``always`` or ``never``."""
    if operators not in ("history", "always", "never"):
        raise ValueError("operators must be history, always or never")
    _check_ports(settings)
    core = await open_core(settings)
    try:
        secrets_path = Path(DEMO_SECRETS_FILE).resolve()  # noqa: ASYNC240 (once, at start)
        heartbeats_path = Path(HISTORY_HEARTBEATS_FILE).resolve()  # noqa: ASYNC240
        await restore_heartbeats(core, heartbeats_path)  # a killed catch-up left them thinned
        begin = await history_begin(core, history_days)
        device_secrets = await ensure_demo_county(core, secrets_path, now=begin or datetime.now(UTC))
        host, mport = settings.embedded_mqtt_host, settings.embedded_mqtt_port
        async with embedded_broker(core, host=host, port=mport) as target:
            demo = _Demo(core, target, device_secrets, simulate=simulate, scenario=scenario)
            try:
                if operators == "always" or (operators == "history" and begin is not None):
                    demo.prepare_operators()
                if begin is not None:
                    history_days = await demo.start_history_clock(begin, heartbeats_path, fine_speed)
                await demo.start(stop)
                login = await demo_login(core)
                phone = await demo_responder_login(core)
                demo.health.ready = True
                announce(_announcement(settings, (login, phone), demo, secrets_path, history_days, simulate))
                if ready is not None:
                    assert demo.phase is not None
                    await ready(demo.phase.gateway)
                if demo.clock is not None:
                    await demo.catch_up(
                        stop, history_days, heartbeats_path, progress, progress_every_s, operators
                    )
                await stop.wait()
            finally:
                stop.set()
                await demo.close(heartbeats_path)
    finally:
        await core.close()


ANNOUNCE_WIDTH = 80  # the announcement reads in an 80-column terminal (paths aside)
_INDENT = " " * 13


def _field(label: str, value: str, note: str = "") -> list[str]:
    """One field of the announcement: ``label`` padded to the value column, and ``note``
    on the same line when it fits in ANNOUNCE_WIDTH, else on the next, indented."""
    from carecall.core.tabular import display_width

    first = f"  {label + ':':<11}{value}"
    if not note:
        return [first]
    if display_width(f"{first}  {note}") <= ANNOUNCE_WIDTH:
        return [f"{first}  {note}"]
    return [first, _INDENT + note]


def _announcement(
    settings: Settings,
    logins: tuple[str, tuple[str, str] | None],
    demo: _Demo,
    secrets_path: Path,
    history_days: float,
    simulate: bool,
) -> str:
    host, mport, hport = settings.embedded_mqtt_host, settings.embedded_mqtt_port, settings.http_port
    clock = demo.clock
    login, phone = logins
    web = f"http://{settings.http_host}:{hport}"
    no_sim = "" if simulate else " (no simulated devices: --no-sim)"
    if clock is not None:
        time_lines = _field(
            "history",
            f"{history_days:.1f} days from {clock.now():%Y-%m-%d %H:%M} UTC at ×{settings.speed:g}",
            f"(×{clock.fine:g} around alarms and operators' steps), then ×1; progress on stderr{no_sim}",
        )
    else:
        time_lines = _field("speed", f"×{settings.speed:g} simulated time{no_sim}")
    return "\n".join(
        [
            "CareCall demo is running (Ctrl-C stops it).",
            *_field(
                "console", f"{web}/console/", "(API docs /docs and /redoc, health /healthz, metrics /metrics)"
            ),
            *_field("login", login),
            *(_field("phone app", f"{web}/m/", "(the responder's phone)") if phone else []),
            *(_field("login", *phone) if phone else []),
            *_field(
                "MQTT",
                f"mqtt://{host}:{mport}",
                "(devices: client id = username = device id, password = its secret)",
            ),
            *_field("database", settings.database_url),
            *_field("devices", f"{len(demo.device_secrets)} demo devices", f"secrets in {secrets_path}"),
            *time_lines,
        ]
    )


class _Demo:
    """The parts of a running demo: the phase now running (history or live), the web
    server and stall monitor, the simulated operators, and the history's clock."""

    def __init__(
        self,
        core: Core,
        target: MqttTarget,
        device_secrets: dict[str, str],
        *,
        simulate: bool,
        scenario: str,
    ) -> None:
        self.core = core
        self.settings = core.settings
        self.target = target
        self.device_secrets = device_secrets
        self.simulate = simulate
        self.scenario = scenario
        self.tasks: list[asyncio.Task[object]] = []
        self.ops_task: asyncio.Task[None] | None = None
        self.phase: Phase | None = None  # None between the history and the live phase
        self.current: Phase | None = None  # the last phase started (what health reports on)
        self.ops_stop = asyncio.Event()
        self.workdir = tempfile.TemporaryDirectory(prefix="carecall-demo-")
        self.sim_ops: SimulatedOperators | None = None
        self.preparing: asyncio.Task[object] | None = None
        self.clock: CatchUpClock | None = None
        self.health = DispatchHealth(ready=False)  # until the demo's logins exist (demo_login)

    async def start_phase(self, s: Settings, sim_seed: int) -> Phase:
        core = self.core
        catching_up = isinstance(core.clock, CatchUpClock)
        parts = await start_parts(
            core,
            self.target,
            settings=s,
            on_stored=hold_after_derived(core.clock) if isinstance(core.clock, CatchUpClock) else None,
            visit_rules=history_visit_rules() if catching_up else None,
        )
        phase = Phase(parts)
        settle_heap(s, "demo")  # what the platform holds once up; before its homes connect
        if catching_up and self.sim_ops is not None:
            phase.staff_busy = self.sim_ops.busy
        if self.simulate:

            def seen(st: SimStats) -> None:
                phase.devices_pending = st.pending
                phase.devices_away = max(0, st.devices - st.online - st.silent)

            phase.devices_away = len(self.device_secrets)  # until the first report: all still connecting
            phase.tasks.append(
                asyncio.create_task(
                    _simulate_demo(
                        core,
                        self.target.host,
                        self.target.port,
                        self.device_secrets,
                        self.scenario,
                        phase.stop,
                        seed=sim_seed,
                        on_progress=seen if catching_up else None,
                    )
                )
            )
        if isinstance(core.clock, CatchUpClock):
            phase.tasks.append(asyncio.create_task(back_pressure(core.clock, phase, phase.stop, core.maker)))
            levels = history_order_levels(phase.dispatcher.order_levels_once, phase.stop)
            phase.tasks.append(asyncio.create_task(levels))
        return phase

    def prepare_operators(self) -> None:
        from carecall.shell.sim_operators import SimulatedOperators
        from carecall.shell.sim_services import SimulatedServices
        from dispatcher.orders.device_intake import catalogue
        from dispatcher.visits.config_file import load_visit_rules

        core = self.core
        services = SimulatedServices(
            maker=core.maker,
            clock=core.clock,
            catalogue=catalogue(),
            missed_after_h=load_visit_rules().missed_after_h,
        )
        self.sim_ops = SimulatedOperators(
            maker=core.maker,
            clock=core.clock,
            ctx=load_context(self.settings),
            bus=core.bus,
            services=services,
        )
        # their logins are hashed while the devices connect (the clock waits for both)
        self.preparing = asyncio.create_task(self.sim_ops.prepare())

    async def start_history_clock(self, begin: datetime, heartbeats_path: Path, fine_speed: float) -> float:
        """Thin the registry's heartbeats and put the catch-up clock in; the days to fill."""
        await history_heartbeats(self.core, heartbeats_path)
        # The clock starts only now, with everything loaded: a slow start must not
        # eat simulated hours before the first device is up. It ends where it meets the
        # wall clock (however long the catch-up takes) and is the wall clock from then on.
        real_now = datetime.now(UTC)
        clock = CatchUpClock(start=begin, fast=self.settings.speed, fine=fine_speed, paused=self.simulate)
        self.clock = self.core.clock = clock
        if self.sim_ops is not None:
            self.sim_ops.clock = clock
            if self.sim_ops.services is not None:
                self.sim_ops.services.clock = clock
        return (real_now - begin).total_seconds() / 86400

    async def start(self, stop: asyncio.Event) -> None:
        """The first phase, the web server, the stall monitor and the simulated operators."""
        settings = self.settings
        first = history_settings(settings, Path(self.workdir.name)) if self.clock is not None else settings
        self.phase = self.current = await self.start_phase(first, 1)
        if self.preparing is not None:
            self.phase.starting.append(self.preparing)
        app = full_app(self.core, mqtt_connected=self._mqtt_connected, health=self.health)
        self.tasks.append(asyncio.create_task(serve_http(app, settings.http_host, settings.http_port, stop)))
        monitor = stall_monitor(self.core, f"demo-{settings.instance}", self.health, self._heartbeats)
        self.tasks.append(asyncio.create_task(watch(monitor, stop)))
        if self.sim_ops is not None:
            if self.clock is None and self.preparing is not None:
                await self.preparing  # live only: nothing waits for the clock, so wait here
            self.ops_task = asyncio.create_task(self.sim_ops.run(self.ops_stop))
            self.tasks.append(self.ops_task)

    def _mqtt_connected(self) -> bool:
        assert self.current is not None
        return self.current.gateway.connected.is_set()

    def _heartbeats(self) -> dict[str, float] | None:
        # between the history and the live phase no dispatcher runs: nothing to watch
        assert self.current is not None
        return None if self.current.stop.is_set() else self.current.dispatcher.heartbeats

    async def catch_up(
        self,
        stop: asyncio.Event,
        history_days: float,
        heartbeats_path: Path,
        progress: Callable[[str], None],
        progress_every_s: float,
        operators: str,
    ) -> None:
        """Until simulated time reaches the real now (or a stop): then the history phase
        ends, the registry's heartbeats are put back and the live phase starts at ×1."""
        clock, core = self.clock, self.core
        assert clock is not None and self.phase is not None
        reporter = asyncio.create_task(
            history_progress(core, clock, history_days, progress, progress_every_s)
        )
        caught = asyncio.ensure_future(clock.wait_caught_up())
        halted = asyncio.ensure_future(stop.wait())
        await asyncio.wait([caught, halted], return_when=asyncio.FIRST_COMPLETED)
        caught.cancel()
        halted.cancel()
        reporter.cancel()
        await self.phase.close()
        self.phase = None
        await restore_heartbeats(core, heartbeats_path)
        calls_n = await count_calls(core)
        real_s = clock.real_catch_up_s
        progress(
            f"history: {history_days:.1f} days filled, {calls_n} calls"
            + (f", in {real_s:.0f} s real time" if real_s is not None else " (stopped early)")
            + ("; now at ×1" if not stop.is_set() else "")
        )
        if operators == "history":
            self.ops_stop.set()
        if not stop.is_set():
            self.phase = self.current = await self.start_phase(self.settings, 2)

    async def close(self, heartbeats_path: Path) -> None:
        self.ops_stop.set()
        # The simulated operators first, and bounded: a step writing while the platform
        # shuts down could otherwise wait on SQLite's lock for minutes (seen once under load).
        if self.ops_task is not None:
            done, _ = await asyncio.wait({self.ops_task}, timeout=OPS_STOP_S)
            if not done:
                log.warning("demo.operators_cancelled", after_s=OPS_STOP_S)
                self.ops_task.cancel()
        if self.phase is not None:
            await self.phase.close()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.error("demo.task_failed", error=repr(r))
        with contextlib.suppress(Exception):
            await restore_heartbeats(self.core, heartbeats_path)
        self.workdir.cleanup()


OPS_STOP_S = 5.0
DEMO_OPERATOR = "county-op"
DEMO_PASSWORD = "carecall-demo"


async def demo_login(core: Core) -> str:
    """The demo's logins: the admin (created once) and a county operator with a known
    demo password, so a newcomer can sign in straight away. Demo databases only."""
    from sqlalchemy import select

    from dispatcher.auth.models import User
    from dispatcher.auth.users import create_user
    from dispatcher.registry.models import Station

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


DEMO_RESPONDER = "demo-responder"


async def demo_responder_login(core: Core) -> tuple[str, str] | None:
    """A login for the responder's phone app (/m/), bound to one responder of the demo
    county (the county station's first, on duty if one is), with the demo password.
    Created once. The login and who it is; None when the registry has no responder."""
    from sqlalchemy import case, select

    from dispatcher.auth.models import User
    from dispatcher.auth.users import create_user
    from dispatcher.registry.models import Staff, Station

    async with core.maker() as s, s.begin():
        bound = await s.scalar(select(User.staff_id).where(User.username == DEMO_RESPONDER))
        if bound is None:
            row = (
                await s.execute(
                    select(Staff.id, Staff.name, Staff.station_id)
                    .join(Station, Station.id == Staff.station_id)
                    .where(Staff.role == "responder")
                    .order_by(case((Station.tier == "county", 0), else_=1), Staff.on_duty.desc(), Staff.id)
                    .limit(1)
                )
            ).first()
            if row is None:
                return None
            await create_user(
                s,
                username=DEMO_RESPONDER,
                password=DEMO_PASSWORD,
                role="responder",
                station_id=row.station_id,
                staff_id=row.id,
                display_name=row.name,
                now=datetime.now(UTC),
            )
            bound = row.id
        staff = (
            await s.execute(
                select(Staff.name, Station.name.label("station"))
                .join(Station, Station.id == Staff.station_id)
                .where(Staff.id == bound)
            )
        ).first()
    who = f"responder {staff.name}, {staff.station}" if staff is not None else "responder"
    return f"{DEMO_RESPONDER} / {DEMO_PASSWORD}", f"({who})"


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

    from device_gateway.models import Device
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
