"""What the stall-alarm tests share: one hand-driven time for the database clock, the wall
clock and the loops, and a world of registry, users, a dispatcher and the app with its health state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.metrics import REGISTRY
from carecall.shell.app import create_app
from config.settings import Settings, load_settings
from device_gateway.mqtt import MqttTarget
from dispatcher.audit.models import AuditRow
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import create_user
from dispatcher.engine.process import Dispatcher, load_context
from dispatcher.health.monitor import StallMonitor
from dispatcher.health.state import DispatchHealth
from dispatcher.notifications.notifiers import LogNotifier, Message, Notifier
from tests.conftest import add_small_registry
from tests.dispatcher.engine.support import ManualClock

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


@dataclass
class Time:
    """One hand-driven time for the database clock, the wall clock and the loops."""

    clock: ManualClock = field(default_factory=lambda: ManualClock(T0))
    mono: float = 1000.0

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.mono += seconds

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> datetime:
        return self.clock.now()


@dataclass
class World:
    maker: async_sessionmaker[AsyncSession]
    settings: Settings
    time: Time
    health: DispatchHealth
    client: httpx.AsyncClient
    dispatcher: Dispatcher
    beats: dict[str, float]

    def monitor(self, name: str, notifier: Notifier | None = None, *, loops: bool = False) -> StallMonitor:
        return StallMonitor(
            self.maker,
            settings=self.settings,
            clock=lambda: self.time.clock,
            name=name,
            notifier=notifier if notifier is not None else LogNotifier(),
            heartbeats=(lambda: self.beats) if loops else None,
            health=self.health,
            monotonic=self.time.monotonic,
            wall=self.time.wall,
        )

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        r = await self.client.get("/healthz")
        return r.status_code, r.json()

    async def stalled_parts(self) -> list[str]:
        code, body = await self.healthz()
        assert (code == 503) == bool(body["stalled"]), body
        return [p["part"] for p in body["stalled"]]


@contextlib.asynccontextmanager
async def make_world(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[World]:
    """A small registry, two admins and an operator, a dispatcher (not running: each test
    drives its loops by hand) and the full app with its health state. On any database."""
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        for username, role, station in (("admin", "admin", None), ("admin2", "admin", None), ("op", "operator", "cm1")):
            await create_user(
                s,
                username=username,
                password="password-123",
                role=role,
                station_id=station,
                display_name=username,
                now=T0,
            )
    settings = load_settings(database_url="sqlite:///unused.db")
    t = Time()
    health = DispatchHealth(monotonic=t.monotonic)
    bus = MemoryBus()
    # a broker is configured but not connected: device acks wait, as after a broker restart
    d = Dispatcher(
        settings=settings,
        maker=maker,
        bus=bus,
        clock=t.clock,
        mqtt=MqttTarget("127.0.0.1", 1, None, None, tls=False),
        notifier=LogNotifier(),
    )
    app = create_app(
        maker, signer=TokenSigner(b"k" * 32), ctx=load_context(settings), clock=t.clock, bus=bus, health=health
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield World(maker, settings, t, health, client, d, {})


def gauge(part: str) -> float | None:
    return REGISTRY.get_sample_value("carecall_dispatch_stalled", {"part": part})


async def audit_kinds(maker: async_sessionmaker[AsyncSession]) -> list[tuple[str, dict[str, Any]]]:
    async with maker() as s:
        rows = await s.execute(
            select(AuditRow.kind, AuditRow.detail)
            .where(AuditRow.kind.in_(["dispatch_stalled", "dispatch_recovered"]))
            .order_by(AuditRow.seq)
        )
        return [(k, dict(d)) for k, d in rows.all()]


def admin_messages(*notifiers: LogNotifier, purpose: str) -> list[Message]:
    return [m for n in notifiers for m in n.sent if m.purpose == purpose]


async def drain(d: Dispatcher, *, intake: bool = True, timers: bool = True, outbox: bool = True) -> None:
    while intake and await d.intake_once():
        pass
    while timers and await d.timers_once():
        pass
    while outbox and await d.outbox_once():
        pass
