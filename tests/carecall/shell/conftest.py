"""Fixtures of the shell's tests: the platform a simulated fleet talks to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.clock import SystemClock
from config.settings import load_settings
from device_gateway.broker import EmbeddedBroker
from device_gateway.mqtt import MqttTarget
from device_gateway.service import Gateway
from dispatcher.registry.service import resident_vitals

PLATFORM = ("platform", "pw-platform-123456")


@pytest.fixture
async def platform(maker: async_sessionmaker[AsyncSession], db_url: str) -> AsyncIterator[dict[str, Any]]:
    """The embedded broker (which checks device secrets and lets privileged devices speak
    for others) and the real gateway on the test database."""
    broker = EmbeddedBroker(
        host="127.0.0.1", port=0, maker=maker, platform_username=PLATFORM[0], platform_password=PLATFORM[1]
    )
    await broker.start()
    settings = load_settings(database_url=db_url)
    gw = Gateway(
        settings=settings,
        maker=maker,
        bus=MemoryBus(),
        clock=SystemClock(),
        mqtt=MqttTarget("127.0.0.1", broker.port, *PLATFORM, tls=False),
        shared_group=None,
        residents=resident_vitals,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    await asyncio.wait_for(gw.connected.wait(), 10)
    try:
        yield {"port": broker.port, "maker": maker, "url": db_url, "gw": gw}
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await broker.stop()
