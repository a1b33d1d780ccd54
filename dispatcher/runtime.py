"""Process wiring: which parts run in this process, and how they stop.

``carecall gateway`` / ``serve`` run one part each against real services; ``carecall demo``
runs the embedded broker, the gateway, the web server and simulated homes in one process.
Everything stops on SIGINT/SIGTERM after draining what it already accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
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
from dispatcher.clock import Clock, make_clock
from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.engine import Dispatcher
from dispatcher.migrate import upgrade_async

if TYPE_CHECKING:
    from simulators.device import DeviceSpec

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


def make_dispatcher(core: Core, mqtt: MqttTarget | None) -> Dispatcher:
    from dispatcher.notifiers import make_notifier

    return Dispatcher(
        settings=core.settings,
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


async def ensure_demo_county(core: Core, secrets_path: Path) -> dict[str, str]:
    """Load the demo county on first run; make sure we hold a secret for every demo device."""
    from sqlalchemy import select

    from dispatcher.models import Device
    from dispatcher.registry.demo_county import load_demo_county, rekey_devices

    now = datetime.now(UTC)
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


async def run_demo(
    settings: Settings,
    stop: asyncio.Event,
    *,
    simulate: bool,
    scenario: str = "normal",
    announce: Callable[[str], None] = print,
    ready: Callable[[Gateway], Awaitable[None]] | None = None,
) -> None:
    from device_gateway.broker import EmbeddedBroker

    host, mport, hport = settings.embedded_mqtt_host, settings.embedded_mqtt_port, settings.http_port
    for what, port in (("MQTT", mport), ("HTTP", hport)):
        if not port_free(host if what == "MQTT" else settings.http_host, port):
            raise SystemExit(
                f"carecall demo: {what} port {port} is in use; pick another with --{'mqtt-' if what == 'MQTT' else ''}port"
            )
    core = await open_core(settings)
    secrets_path = Path(DEMO_SECRETS_FILE).resolve()  # noqa: ASYNC240 (once, at start)
    device_secrets = await ensure_demo_county(core, secrets_path)
    platform_password = secrets.token_urlsafe(24)
    broker = EmbeddedBroker(
        host=host,
        port=mport,
        maker=core.maker,
        platform_username=PLATFORM_USER,
        platform_password=platform_password,
    )
    await broker.start()
    tasks: list[asyncio.Task[object]] = []
    try:
        gw = Gateway(
            settings=settings,
            maker=core.maker,
            bus=core.bus,
            clock=core.clock,
            mqtt=MqttTarget(host, mport, PLATFORM_USER, platform_password, tls=False),
            shared_group=None,  # one gateway in the demo: a plain subscription
        )
        tasks.append(asyncio.create_task(gw.run(stop)))
        dispatcher = make_dispatcher(
            core, MqttTarget(host, mport, PLATFORM_USER, platform_password, tls=False)
        )
        tasks.append(asyncio.create_task(dispatcher.run(stop)))
        app = full_app(core, mqtt_connected=gw.connected.is_set)
        tasks.append(asyncio.create_task(serve_http(app, settings.http_host, hport, stop)))
        await asyncio.wait_for(gw.connected.wait(), timeout=30)
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
                    f"  speed:     ×{settings.speed:g} simulated time"
                    + ("" if simulate else " (no simulated devices: --no-sim)"),
                ]
            )
        )
        if ready is not None:
            await ready(gw)
        if simulate:
            tasks.append(
                asyncio.create_task(_simulate_demo(core, host, mport, device_secrets, scenario, stop))
            )
        await stop.wait()
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.error("demo.task_failed", error=repr(r))
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
    core: Core, host: str, port: int, device_secrets: dict[str, str], scenario_name: str, stop: asyncio.Event
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
