"""The health endpoints: ``/healthz`` (readiness: database, broker, dispatch stalls),
``/livez`` (the process answers) and ``GET /api/v1/health/dispatch`` (the console's stall
banner). Stalls are answered from this process's last monitor check
(dispatcher.health.state), so a hundred consoles polling cost no queries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.health.queries import database_status
from dispatcher.health.state import DispatchHealth


class StalledPart(BaseModel):
    part: str
    kind: str
    age_s: float
    limit_s: float
    reason: str
    reporter: str | None = None
    since: datetime | None = None


class DispatchStatus(BaseModel):
    ok: bool
    ready: bool
    stalled: list[StalledPart]
    checked_at: datetime | None


class Health(BaseModel):
    status: str  # ok, starting (no login exists yet), degraded (database/broker), stalled (dispatch)
    database: str
    mqtt: str
    time: datetime
    ready: bool = True
    stalled: list[StalledPart] = []


def stalled_models(health: DispatchHealth) -> list[StalledPart]:
    return [StalledPart(**p.as_json()) for p in health.stalled()]


def health_status(*, ready: bool, database: str, mqtt: str, stalled: bool) -> str:
    """starting (200 only once a login exists: a script may sign in at once), degraded
    (database or broker), stalled (dispatch), else ok."""
    if not ready:
        return "starting"
    if database != "ok" or mqtt == "disconnected":
        return "degraded"
    if stalled:
        return "stalled"
    return "ok"


def system_health_router(
    maker: async_sessionmaker[AsyncSession],
    *,
    health: DispatchHealth | None,
    mqtt_connected: Callable[[], bool] | None,
) -> APIRouter:
    """``/healthz`` and ``/livez``, without a login (probes and scripts use them)."""
    router = APIRouter(tags=["system"])

    @router.get("/healthz", response_model=Health)
    async def healthz(response: Response) -> Health:
        db = await database_status(maker)
        mq = "n/a" if mqtt_connected is None else ("ok" if mqtt_connected() else "disconnected")
        ready = health is None or health.ready
        stalled = stalled_models(health) if health is not None else []
        status = health_status(ready=ready, database=db, mqtt=mq, stalled=bool(stalled))
        response.status_code = 200 if status == "ok" else 503
        return Health(
            status=status, database=db, mqtt=mq, time=datetime.now(UTC), ready=ready, stalled=stalled
        )

    @router.get("/livez")
    async def livez() -> dict[str, str]:
        """200 while this process answers at all: for a load balancer or an orchestrator's
        restart probe. A dispatch stall (503 on /healthz) is no reason to take the console
        away from the operators who must now handle alarms by phone."""
        return {"status": "alive"}

    return router


def dispatch_health_router(health: DispatchHealth, login: Any) -> APIRouter:
    """``GET /api/v1/health/dispatch`` for the console's banner (login required); answered
    from this process's last check, so a hundred consoles polling cost no queries."""
    router = APIRouter(prefix="/api/v1/health", tags=["system"])

    @router.get("/dispatch", response_model=DispatchStatus, dependencies=[Depends(login)])
    async def dispatch_status() -> DispatchStatus:
        parts = stalled_models(health)
        return DispatchStatus(ok=not parts, ready=health.ready, stalled=parts, checked_at=health.checked_at)

    return router
