"""The HTTP surface: health, metrics, logins, the registry, calls, the live stream and the
operator console."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.metrics import REGISTRY
from dispatcher.api_stream import StreamConfig
from dispatcher.auth import TokenSigner
from dispatcher.bus import MemoryBus, RedisBus
from dispatcher.calls import DispatchContext, Outcome
from dispatcher.clock import Clock, SystemClock
from dispatcher.models import Device, DeviceEvent, DeviceState, Home, RejectedMessage, Station


class Health(BaseModel):
    status: str
    database: str
    mqtt: str
    time: datetime


class Overview(BaseModel):
    stations: int
    homes: int
    devices: int
    devices_online: int
    devices_offline: int
    events_stored: int
    events_by_class: dict[str, int]
    rejected_by_reason: dict[str, int]


def create_app(
    maker: async_sessionmaker[AsyncSession],
    *,
    signer: TokenSigner | None = None,
    ctx: DispatchContext | None = None,
    clock: Clock | None = None,
    bus: MemoryBus | RedisBus | None = None,
    mqtt_connected: Callable[[], bool] | None = None,
    stream_config: StreamConfig | None = None,
    console_tile_url: str | None = None,
) -> FastAPI:
    """The whole HTTP surface. Without a signer (unit tests of health/metrics) only the
    unauthenticated system endpoints exist.

    ``stream_config`` tunes the live feed's heartbeat and stream lifetime (tests shorten
    them); ``console_tile_url`` (``…/{z}/{x}/{y}.png`` on the station's own network) adds a
    base map under the console's map, which is otherwise drawn with no online service."""
    app = FastAPI(
        title="CareCall",
        version="0.1.0",
        description="Emergency call and dispatch for home-care devices (family care beds).",
    )
    if signer is not None:
        from dispatcher.api_calls import calls_router
        from dispatcher.api_registry import registry_router
        from dispatcher.auth import auth_router, current_principal

        app.include_router(auth_router(maker, signer))
        app.include_router(registry_router(maker, signer))
        if ctx is not None:
            the_ctx = ctx

            async def announce(out: Outcome) -> None:
                if bus is not None:
                    await bus.publish("calls", {"ids": sorted(out.calls), "by": "api"})
                    if out.device_notices or out.notifications:
                        await bus.publish("outbox", {"count": len(out.device_notices)})

            app.include_router(
                calls_router(
                    maker,
                    signer,
                    ctx_factory=lambda: the_ctx,
                    clock=clock or SystemClock(),
                    after_commit=announce,
                )
            )
        from dispatcher.api_console import console_router
        from dispatcher.console import mount_console

        app.include_router(console_router(maker, signer, ctx=ctx, tile_url=console_tile_url))
        if bus is not None:
            from dispatcher.api_stream import stream_router

            app.include_router(stream_router(maker, signer, bus, stream_config))
        mount_console(app)
        from dispatcher.oversight.api import reports_router

        app.include_router(
            reports_router(maker, signer, clock=clock, routing=ctx.dispatch_cfg.routing if ctx else None)
        )
        login = [Depends(current_principal(maker, signer))]
    else:
        login = []

    @app.get("/healthz", response_model=Health, tags=["system"])
    async def healthz(response: Response) -> Health:
        db = "ok"
        try:
            async with maker() as session:
                await session.execute(select(1))
        except Exception as exc:  # health must answer, not raise
            db = f"error: {type(exc).__name__}"
        mq = "n/a" if mqtt_connected is None else ("ok" if mqtt_connected() else "disconnected")
        ok = db == "ok" and mq != "disconnected"
        response.status_code = 200 if ok else 503
        return Health(status="ok" if ok else "degraded", database=db, mqtt=mq, time=datetime.now(UTC))

    @app.get("/metrics", tags=["system"], response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/overview", response_model=Overview, tags=["system"], dependencies=login)
    async def overview() -> Overview:
        async with maker() as s:
            counts: dict[str, Any] = {}
            for name, model in (("stations", Station), ("homes", Home), ("devices", Device)):
                counts[name] = await s.scalar(select(func.count()).select_from(model)) or 0
            online = await s.scalar(select(func.count()).where(DeviceState.online.is_(True))) or 0
            offline = (
                await s.scalar(
                    select(func.count()).where(
                        DeviceState.online.is_(False), DeviceState.offline_since.is_not(None)
                    )
                )
                or 0
            )
            by_class = dict(
                (
                    await s.execute(
                        select(DeviceEvent.event_class, func.count()).group_by(DeviceEvent.event_class)
                    )
                ).all()
            )
            by_reason = dict(
                (
                    await s.execute(
                        select(RejectedMessage.reason, func.count()).group_by(RejectedMessage.reason)
                    )
                ).all()
            )
        return Overview(
            **counts,
            devices_online=online,
            devices_offline=offline,
            events_stored=sum(by_class.values()),
            events_by_class=by_class,
            rejected_by_reason=by_reason,
        )

    return app
