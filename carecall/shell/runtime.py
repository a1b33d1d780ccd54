"""Process wiring: which parts run in this process, and how they stop.

``carecall gateway`` / ``serve`` / ``dispatcher`` run one part each against real services.
``start_parts`` (with ``embedded_broker``) is the one wiring of broker + gateway +
dispatcher that ``carecall demo`` (carecall/shell/demo.py) and the benchmark's platform
process (carecall/shell/bench_worker.py) share, so the benchmark measures what the demo runs.
Everything stops on SIGINT/SIGTERM after draining what it already accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from carecall.core import heap
from carecall.core.bus import MemoryBus, RedisBus, make_bus
from carecall.core.clock import Clock, make_clock
from carecall.core.db import make_engine, make_sessionmaker
from carecall.core.migrate import upgrade_async
from carecall.core.priority import role_of
from carecall.shell.app import create_app
from config.settings import Settings
from device_gateway.lanes import Lane
from device_gateway.mqtt import MqttTarget
from device_gateway.service import Gateway
from dispatcher.auth.tokens import TokenSigner
from dispatcher.calls.context import DispatchContext
from dispatcher.engine.process import Dispatcher, load_context
from dispatcher.health.monitor import StallMonitor
from dispatcher.health.state import DispatchHealth
from dispatcher.registry.service import resident_vitals

if TYPE_CHECKING:
    from device_gateway.store import EventRow
    from dispatcher.visits.rules import VisitRules

log = structlog.get_logger("carecall.runtime")

PLATFORM_USER = "carecall-platform"
# the platform's QoS 1 window on the embedded broker (device_gateway/mqtt.py MqttTarget)
EMBEDDED_INFLIGHT = 5_000


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
        gw = make_gateway(
            core,
            MqttTarget.from_url(settings.mqtt_url),
            shared_group=settings.mqtt_shared_group,
            lane=Lane(settings.gateway_lane),
        )
        sync = broker_sync_task(core, settings)
        # settled twice: now (imports, the app), and once connected (its device directory read)
        role = role_of("gateway", settings.gateway_lane)
        settle_heap(settings, role)
        helpers = [asyncio.create_task(_settle_when(gw.connected, settings, role))]
        helpers += [sync] if sync is not None else []
        try:
            await gw.run(stop)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
    finally:
        await core.close()


def settle_heap(settings: Settings, role: str) -> None:
    """Time this process's garbage collections and, unless CARECALL_GC_FREEZE is false,
    freeze what it holds now out of later ones (carecall/core/heap.py)."""
    heap.watch()
    heap.settle(role, settings.gc_freeze)


async def _settle_when(ready: asyncio.Event, settings: Settings, role: str) -> None:
    await ready.wait()
    settle_heap(settings, role)


def broker_sync_task(core: Core, settings: Settings) -> asyncio.Task[None] | None:
    """With CARECALL_MQTT_ADMIN_URL, apply registry changes to the live Mosquitto."""
    if not settings.mqtt_admin_url:
        return None
    from device_gateway.broker_sync import BrokerSync

    sync = BrokerSync(
        core.maker, MqttTarget.from_url(settings.mqtt_admin_url), name=f"broker-sync-{settings.instance}"
    )
    return asyncio.create_task(sync.follow(core.bus), name="broker-sync")


def signer_for(settings: Settings) -> TokenSigner:
    from dispatcher.auth.tokens import load_secret_key

    configured = settings.secret_key.get_secret_value() if settings.secret_key else None
    return TokenSigner(load_secret_key(configured=configured))


async def ensure_first_admin(core: Core, announce: Callable[[str], None] = print) -> str | None:
    """Create the first admin when there is no user; print a generated password once."""
    from dispatcher.auth.users import ensure_admin

    given = core.settings.admin_password.get_secret_value() if core.settings.admin_password else None
    password = await ensure_admin(core.maker, password=given, now=datetime.now(UTC))
    if password is not None and given is None:
        announce(f"first admin created: username admin, password {password}  (shown once; change it)")
    return password


def context_for(settings: Settings, signer: TokenSigner | None = None) -> DispatchContext:
    """The dispatch context with family links signed by this installation's secret."""
    from dispatcher.family.link import derive_key, make_link

    key = (signer or signer_for(settings)).subkey(derive_key)
    base = (settings.public_url or "").rstrip("/")

    def family_link(call_id: int, contact_id: int, now: datetime) -> str:
        return f"{base}/f/{make_link(key, call_id=call_id, contact_id=contact_id, now=now)}"

    def page_link(call_id: int) -> str:  # the responder app, opened on the call
        return f"{base}/m/?call={call_id}"

    return replace(load_context(settings), family_link=family_link, page_link=page_link)


def full_app(
    core: Core, *, mqtt_connected: Callable[[], bool] | None = None, health: DispatchHealth | None = None
) -> Any:
    from carecall.shell.security import HttpLimits
    from dispatcher.auth.lockout import LoginPolicy

    st = core.settings
    signer = signer_for(st)
    return create_app(
        core.maker,
        signer=signer,
        ctx=context_for(st, signer),
        clock=core.clock,
        bus=core.bus,
        mqtt_connected=mqtt_connected,
        login_policy=LoginPolicy(
            max_failures=st.login_max_failures,
            lock_s=st.login_lock_s,
            throttle_ip=st.login_throttle_ip,
            throttle_user=st.login_throttle_user,
            redis_url=st.redis_url,
        ),
        http_limits=HttpLimits(max_body_bytes=st.max_body_bytes),
        health=health,
        broker_admin_url=st.mqtt_admin_url,
        console_basemap_file=st.basemap_file,
    )


def stall_monitor(
    core: Core,
    name: str,
    health: DispatchHealth,
    heartbeats: Callable[[], dict[str, float] | None] | None = None,
) -> StallMonitor:
    """This process's dead man's switch over dispatch (dispatcher/health/monitor.py). Its notifier
    is its own: admins must hear of a stall even when the outbox is what stalled."""
    from dispatcher.notifications.notifiers import make_notifier

    return StallMonitor(
        core.maker,
        settings=core.settings,
        clock=lambda: core.clock,  # the demo swaps in its history clock
        name=name,
        notifier=make_notifier(core.settings.notifier, core.settings.webhook_url),
        heartbeats=heartbeats,
        health=health,
    )


async def watch(monitor: StallMonitor, stop: asyncio.Event) -> None:
    try:
        await monitor.run(stop)
    finally:
        if monitor.notifier is not None:
            await monitor.notifier.close()


async def run_serve(settings: Settings, stop: asyncio.Event, host: str, port: int) -> None:
    core = await open_core(settings)
    health = DispatchHealth(ready=False)
    try:
        await ensure_first_admin(core)
        health.ready = True  # a login exists before /healthz can say 200
        monitor = stall_monitor(core, f"serve-{settings.instance}", health)
        app = full_app(core, health=health)
        settle_heap(settings, "serve")
        await asyncio.gather(serve_http(app, host, port, stop), watch(monitor, stop))
    finally:
        await core.close()


def make_dispatcher(core: Core, mqtt: MqttTarget | None, settings: Settings | None = None) -> Dispatcher:
    from dispatcher.notifications.channel_notifier import outbox_notifier
    from dispatcher.notifications.notifiers import make_notifier

    st = settings or core.settings
    return Dispatcher(
        settings=settings or core.settings,
        maker=core.maker,
        bus=core.bus,
        clock=core.clock,
        mqtt=mqtt,
        notifier=outbox_notifier(
            make_notifier(core.settings.notifier, core.settings.webhook_url), st.notifications_file
        ),
        ctx=context_for(settings or core.settings),
    )


async def run_dispatcher(settings: Settings, stop: asyncio.Event) -> None:
    if settings.mqtt_url is None:
        raise SystemExit(
            "carecall dispatcher needs CARECALL_MQTT_URL (to send device acks); use `carecall demo` for one process"
        )
    core = await open_core(settings)
    try:
        dsp = make_dispatcher(core, MqttTarget.from_url(settings.mqtt_url))
        monitor = stall_monitor(core, dsp.name, DispatchHealth(), lambda: dsp.heartbeats)
        settle_heap(settings, "dispatcher")
        await asyncio.gather(dsp.run(stop), watch(monitor, stop))
    finally:
        await core.close()


# ----------------------------------------------------------------------------- one wiring


def make_gateway(
    core: Core,
    mqtt: MqttTarget,
    settings: Settings | None = None,
    *,
    shared_group: str | None = None,
    telemetry_qos: int = 0,
    lane: Lane = Lane.all,
) -> Gateway:
    """The gateway of this process; ``shared_group`` when several copies share a broker,
    ``lane`` when it serves only the alarms or only the readings (device_gateway/lanes.py)."""
    return Gateway(
        settings=settings or core.settings,
        maker=core.maker,
        bus=core.bus,
        clock=core.clock,
        mqtt=mqtt,
        shared_group=shared_group,
        residents=resident_vitals,
        telemetry_qos=telemetry_qos,
        lane=lane,
    )


@dataclass
class Parts:
    """The gateway and/or dispatcher running in this process, stopped together."""

    gateway: Gateway | None
    dispatcher: Dispatcher | None
    stop: asyncio.Event
    tasks: list[asyncio.Task[object]] = field(default_factory=list)

    async def close(self) -> list[BaseException]:
        """Stop and drain both; the failures of their tasks (the caller logs or raises them)."""
        self.stop.set()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        return [
            r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
        ]


async def start_parts(
    core: Core,
    mqtt: MqttTarget,
    *,
    settings: Settings | None = None,
    gateway: bool = True,
    dispatcher: bool = True,
    shared_group: str | None = None,
    telemetry_qos: int = 0,
    lane: Lane = Lane.all,
    on_stored: Callable[[list[EventRow]], Awaitable[None]] | None = None,
    connect_timeout_s: float = 30.0,
    visit_rules: VisitRules | None = None,
) -> Parts:
    """Start the gateway and/or the dispatcher on ``mqtt`` with ``settings`` (default the
    core's) and return once the gateway is subscribed. ``on_stored`` sees every batch of
    events the gateway commits (the demo's history clock slows down around them);
    ``visit_rules`` replaces config/visits.yaml for this dispatcher (the demo's history
    generates visits more often in real time)."""
    parts = Parts(None, None, asyncio.Event())
    if gateway:
        gw = make_gateway(
            core, mqtt, settings, shared_group=shared_group, telemetry_qos=telemetry_qos, lane=lane
        )
        gw.on_stored = on_stored
        parts.gateway = gw
        parts.tasks.append(asyncio.create_task(gw.run(parts.stop)))
    if dispatcher:
        dsp = make_dispatcher(core, mqtt, settings)
        if visit_rules is not None:
            dsp.visit_rules = visit_rules  # before its first round reads config/visits.yaml
        parts.dispatcher = dsp
        parts.tasks.append(asyncio.create_task(dsp.run(parts.stop)))
    if parts.gateway is not None:
        try:
            await asyncio.wait_for(parts.gateway.connected.wait(), timeout=connect_timeout_s)
        except BaseException:
            for task in parts.tasks:
                task.cancel()
            await parts.close()
            raise
    return parts


@contextlib.asynccontextmanager
async def embedded_broker(
    core: Core, *, host: str, port: int, password: str | None = None
) -> AsyncIterator[MqttTarget]:
    """The embedded MQTT broker (device secrets checked against the registry, registry
    changes applied to live connections at once); yields the platform's own account on it
    (``password``: generated when not given)."""
    from device_gateway.broker import EmbeddedBroker

    password = password or secrets.token_urlsafe(24)
    broker = EmbeddedBroker(
        host=host, port=port, maker=core.maker, platform_username=PLATFORM_USER, platform_password=password
    )
    await broker.start()
    # Registry changes (disable, re-key, removal) close a device's connection at once.
    follow = asyncio.create_task(broker.follow(core.bus), name="broker-follow")
    try:
        yield MqttTarget(
            host,
            port,
            PLATFORM_USER,
            password,
            tls=False,
            named_channels=True,
            max_inflight=EMBEDDED_INFLIGHT,
        )
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        await broker.stop()
