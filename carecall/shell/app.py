"""The HTTP surface: health, metrics, logins, the registry, calls, the live stream and the
operator console."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus, RedisBus
from carecall.core.clock import Clock, SystemClock
from carecall.core.metrics import REGISTRY
from carecall.shell.security import HttpLimits, SecurityMiddleware
from device_gateway.models import Device, DeviceEvent, DeviceState, RejectedMessage
from dispatcher.auth.lockout import LoginPolicy
from dispatcher.auth.principals import Principal
from dispatcher.auth.tokens import TokenSigner
from dispatcher.calls.context import DispatchContext, Outcome
from dispatcher.console.stream import StreamConfig
from dispatcher.health.state import DispatchHealth
from dispatcher.health.views import dispatch_health_router, system_health_router
from dispatcher.registry.models import Home, Station


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
    console_basemap_file: Path | None = None,
    login_policy: LoginPolicy | None = None,
    http_limits: HttpLimits | None = None,
    health: DispatchHealth | None = None,
    broker_admin_url: str | None = None,
) -> FastAPI:
    """The whole HTTP surface. Without a signer (unit tests of health/metrics) only the
    unauthenticated system endpoints exist.

    ``stream_config`` tunes the live feed's heartbeat and stream lifetime (tests shorten
    them); ``console_tile_url`` (``…/{z}/{x}/{y}.png`` on the station's own network) adds a
    base map under the console's map; ``console_basemap_file`` is the PMTiles archive of
    streets CareCall serves itself (unset: the demo county's generated map).
    ``login_policy`` sets sign-in throttling and lockout; ``http_limits`` the request
    body limit (every response gets the security headers of ``carecall.shell.security``).
    ``health`` is this process's readiness and stall state (dispatcher/health/state.py): with it,
    /healthz answers 503 while the process is starting or dispatch is stalled, and the
    console's banner endpoint ``/api/v1/health/dispatch`` exists. ``broker_admin_url``
    (Mosquitto's dynamic-security admin) lets the registry install a device secret it
    issues on the broker at once."""
    app = FastAPI(
        title="CareCall",
        version="0.1.0",
        description="Emergency call and dispatch for home-care devices (family care beds).",
        docs_url=None,  # served below from files of our own, never from a CDN
        redoc_url=None,
    )
    _mount_docs(app)
    limits = http_limits or HttpLimits()
    if console_tile_url and limits.tile_url is None:
        from dataclasses import replace

        limits = replace(limits, tile_url=console_tile_url)
    app.add_middleware(SecurityMiddleware, limits=limits)
    login: list[Any] = []
    if signer is not None:
        login = _mount_domains(
            app,
            maker,
            signer,
            ctx=ctx,
            clock=clock,
            bus=bus,
            stream_config=stream_config,
            console_tile_url=console_tile_url,
            console_basemap_file=console_basemap_file,
            login_policy=login_policy,
            health=health,
            broker_admin_url=broker_admin_url,
        )
    _mount_system(app, maker, mqtt_connected=mqtt_connected, health=health, login=login)
    return app


def _mount_domains(
    app: FastAPI,
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    *,
    ctx: DispatchContext | None,
    clock: Clock | None,
    bus: MemoryBus | RedisBus | None,
    stream_config: StreamConfig | None,
    console_tile_url: str | None,
    console_basemap_file: Path | None,
    login_policy: LoginPolicy | None,
    health: DispatchHealth | None,
    broker_admin_url: str | None,
) -> list[Any]:
    """Every domain's routers (logins, registry, calls, console, reports, intake); returns
    the dependency that requires a login, for the system endpoints that need one."""
    from dispatcher.auth.principals import current_principal
    from dispatcher.auth.views import auth_router, privacy_router
    from dispatcher.calls.views import calls_router
    from dispatcher.registry.views import registry_router

    app.include_router(auth_router(maker, signer, login_policy))
    app.include_router(registry_router(maker, signer, bus, broker_admin_url=broker_admin_url))
    app.include_router(privacy_router(maker, signer))
    announce = _announcer(bus)
    if ctx is not None:
        the_ctx = ctx
        app.include_router(
            calls_router(
                maker,
                signer,
                ctx_factory=lambda: the_ctx,
                clock=clock or SystemClock(),
                after_commit=announce,
            )
        )
        _mount_people(app, maker, signer, ctx=ctx, clock=clock, bus=bus, stream_config=stream_config)
    from dispatcher.console import mount_console
    from dispatcher.console.views import console_router

    app.include_router(console_router(maker, signer, ctx=ctx, tile_url=console_tile_url))
    if bus is not None:
        from dispatcher.console.stream import stream_router

        app.include_router(stream_router(maker, signer, bus, stream_config))
    mount_console(app)
    from dispatcher.console.tiles import basemap_router

    app.include_router(basemap_router(console_basemap_file))
    from dispatcher.oversight.views import reports_router

    app.include_router(
        reports_router(maker, signer, clock=clock, routing=ctx.dispatch_cfg.routing if ctx else None)
    )
    from dispatcher.calls.intake_views import intake_router

    app.include_router(intake_router(maker, signer, bus=bus, clock=clock))
    from dispatcher.visits.views import visits_router

    app.include_router(visits_router(maker, signer, clock=clock))

    from dispatcher.orders.views import orders_router

    app.include_router(orders_router(maker, signer, clock=clock))
    login = [Depends(current_principal(maker, signer))]
    if health is not None:
        app.include_router(dispatch_health_router(health, current_principal(maker, signer)))
    return login


def _announcer(bus: MemoryBus | RedisBus | None) -> Callable[[Outcome], Awaitable[None]]:
    """Tell every copy (consoles, phones, the outbox) what a request changed, after commit."""

    async def announce(out: Outcome) -> None:
        if bus is not None:
            await bus.publish("calls", {"ids": sorted(out.calls), "by": "api"})
            if out.device_notices or out.notifications:
                await bus.publish("outbox", {"count": len(out.device_notices)})

    return announce


def _mount_people(
    app: FastAPI,
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    *,
    ctx: DispatchContext,
    clock: Clock | None,
    bus: MemoryBus | RedisBus | None,
    stream_config: StreamConfig | None,
) -> None:
    """The people outside the control room: the responder's phone (/m/, /api/v1/m/…) and
    the family's one-page link (/f/…)."""
    from dispatcher.family.link import derive_key
    from dispatcher.family.views import family_router
    from dispatcher.responder.pages import mount_phone
    from dispatcher.responder.views import responder_router

    announce = _announcer(bus)

    async def family_answered(call_id: int) -> None:
        if bus is not None:
            await bus.publish("calls", {"ids": [call_id], "by": "family"})
            await bus.publish("outbox", {"count": 0})  # the next contact may have been told

    the_clock = clock or SystemClock()
    app.include_router(
        family_router(
            maker, signer.subkey(derive_key), clock=the_clock, after_answer=family_answered, ctx=ctx
        )
    )
    mount_phone(app)
    if bus is not None:
        app.include_router(
            responder_router(
                maker,
                signer,
                bus,
                clock=the_clock,
                ctx_factory=lambda: ctx,
                after_commit=announce,
                stream_config=stream_config,
            )
        )


DOCS_ASSETS = "/docs-assets"


# The one file ReDoc's bundle fetches by itself: its "API docs by Redocly" logo.
REDOC_LOGO_URL = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@functools.cache
def _local_redoc(path: Path) -> bytes:
    """ReDoc's bundle with its logo taken from here (the docs' icon) instead of a CDN
    (tests/carecall/shell/test_offline_docs.py checks no other outside address is left)."""
    return path.read_bytes().replace(REDOC_LOGO_URL.encode(), f"{DOCS_ASSETS}/favicon.png".encode())


def _mount_docs(app: FastAPI) -> None:
    """The API docs (/docs: Swagger UI, /redoc: ReDoc) with their scripts, styles and icon
    served by CareCall (the files of the fastapi-offline package): a control room's
    network may have no way out, and nothing the platform serves loads from outside."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = Path(str(files("fastapi_offline") / "static"))
    redoc_js = _local_redoc(assets / "redoc.standalone.js")

    @app.get(f"{DOCS_ASSETS}/redoc.standalone.js", include_in_schema=False)
    async def redoc_script() -> Response:
        return Response(redoc_js, media_type="text/javascript; charset=utf-8")

    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # no spec validation badge from validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def _mount_system(
    app: FastAPI,
    maker: async_sessionmaker[AsyncSession],
    *,
    mqtt_connected: Callable[[], bool] | None,
    health: DispatchHealth | None,
    login: list[Any],
) -> None:
    """Health, liveness, metrics and the overview (the last behind a login when there is one)."""

    app.include_router(system_health_router(maker, health=health, mqtt_connected=mqtt_connected))

    @app.get("/metrics", tags=["system"], response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/overview", response_model=Overview, tags=["system"], dependencies=login)
    async def overview(request: Request) -> Overview:
        """Counts over the caller's subtree (the whole county for admins and county
        users). Rejected messages are counted for the devices of the caller's homes."""
        who = getattr(request.state, "carecall_principal", None)
        scope = who.scope if isinstance(who, Principal) else None
        stations = None if scope is None else sorted(scope)
        homes = select(Home.id) if stations is None else select(Home.id).where(Home.station_id.in_(stations))
        devices = select(Device.id).where(Device.home_id.in_(homes))
        async with maker() as s:
            counts: dict[str, Any] = {}
            st_q = select(func.count()).select_from(Station)
            home_q = select(func.count()).select_from(Home)
            dev_q = select(func.count()).select_from(Device)
            if stations is not None:
                st_q = st_q.where(Station.id.in_(stations))
                home_q = home_q.where(Home.station_id.in_(stations))
                dev_q = dev_q.where(Device.home_id.in_(homes))
            for name, q in (("stations", st_q), ("homes", home_q), ("devices", dev_q)):
                counts[name] = await s.scalar(q) or 0
            state_q = select(func.count()).select_from(DeviceState)
            if stations is not None:
                state_q = state_q.where(DeviceState.device_id.in_(devices))
            online = await s.scalar(state_q.where(DeviceState.online.is_(True))) or 0
            offline = (
                await s.scalar(
                    state_q.where(DeviceState.online.is_(False), DeviceState.offline_since.is_not(None))
                )
                or 0
            )
            ev_q = select(DeviceEvent.event_class, func.count()).group_by(DeviceEvent.event_class)
            # a rejected-message row may stand for many suppressed messages (the gateway's limiter)
            rej_q = select(RejectedMessage.reason, func.sum(RejectedMessage.messages)).group_by(
                RejectedMessage.reason
            )
            if stations is not None:
                ev_q = ev_q.where(DeviceEvent.home_id.in_(homes))
                rej_q = rej_q.where(RejectedMessage.device_id.in_(devices))
            by_class = dict((await s.execute(ev_q)).all())
            by_reason = {k: int(v or 0) for k, v in (await s.execute(rej_q)).all()}
        return Overview(
            **counts,
            devices_online=online,
            devices_offline=offline,
            events_stored=sum(by_class.values()),
            events_by_class=by_class,
            rejected_by_reason=by_reason,
        )
