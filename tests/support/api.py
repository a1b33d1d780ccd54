"""A dispatcher and the whole HTTP app over one test database, driven by a ManualClock,
and signing in through the real token endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.shell.app import create_app
from config.settings import load_settings
from dispatcher.auth.tokens import TokenSigner
from dispatcher.engine.process import Dispatcher, load_context
from dispatcher.notifications.notifiers import LogNotifier
from tests.support.clock import ManualClock
from tests.support.registry import PW

__all__ = ["ApiWorld", "api_world", "bearer", "token"]


@dataclass
class ApiWorld:
    client: httpx.AsyncClient
    dispatcher: Dispatcher
    clock: ManualClock
    bus: MemoryBus
    app: FastAPI


@asynccontextmanager
async def api_world(
    maker: async_sessionmaker[AsyncSession], start: datetime, **app_options: Any
) -> AsyncIterator[ApiWorld]:
    """The dispatcher (loops driven by the test) and the app (``app_options`` go to
    create_app) on the default settings, with an HTTP client on the app."""
    settings = load_settings(database_url="sqlite:///unused.db")
    clock = ManualClock(start)
    bus = MemoryBus()
    d = Dispatcher(settings=settings, maker=maker, bus=bus, clock=clock, mqtt=None, notifier=LogNotifier())
    app = create_app(
        maker,
        signer=TokenSigner(b"k" * 32),
        ctx=load_context(settings),
        clock=clock,
        bus=bus,
        **app_options,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield ApiWorld(client, d, clock, bus, app)


async def token(client: httpx.AsyncClient, user: str, password: str = PW) -> str:
    """A bearer token for ``user`` from the token endpoint (the sign-in must succeed)."""
    r = await client.post("/api/v1/auth/token", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def bearer(client: httpx.AsyncClient, user: str, password: str = PW) -> dict[str, str]:
    """The Authorization header of a signed-in ``user``."""
    return {"Authorization": f"Bearer {await token(client, user, password)}"}
