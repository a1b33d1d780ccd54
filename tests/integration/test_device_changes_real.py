"""A device disabled through the API (or issued with the CLI) is acted on by a gateway on
PostgreSQL, Redis and Mosquitto within 2 s: the registry announces the change on the Redis
channel ``carecall:devices`` after its commit (issue 10, item 6)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import RedisBus
from carecall.shell.app import create_app
from dispatcher.auth import passwords as auth
from dispatcher.auth.models import User
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import ensure_admin
from tests.conftest import add_small_registry
from tests.integration.conftest import running_gateway

pytestmark = pytest.mark.integration

ROOT = "carecall/v1/devices"
SIGNER = TokenSigner(b"r" * 32)


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


async def answered(
    c: aiomqtt.Client, dev: str, state: str, timeout: float = 10.0
) -> tuple[float, dict[str, Any]]:
    """An SOS every 0.1 s (new id each) until one is answered ``state``."""
    answers: list[dict[str, Any]] = []

    async def read() -> None:
        async for m in c.messages:
            answers.append(json.loads(m.payload))  # type: ignore[arg-type]

    reader = asyncio.create_task(read())
    try:
        deadline = time.monotonic() + timeout
        i = 0
        while time.monotonic() < deadline:
            body = {"id": f"t{time.monotonic_ns()}-{i}", "ts": int(time.time() * 1000), "type": "sos"}
            await c.publish(f"{ROOT}/{dev}/events", json.dumps(body), qos=1)
            i += 1
            await asyncio.sleep(0.1)
            for a in answers:
                if a.get("state") == state:
                    return time.monotonic(), a
        raise AssertionError(f"no {state!r} ack within {timeout} s; last {answers[-3:]}")
    finally:
        reader.cancel()


async def test_disabled_through_the_api_and_issued_by_the_cli_within_2_s(
    mosquitto: tuple[str, int], pg_url: str, pg_maker: async_sessionmaker[AsyncSession], redis_url: str
) -> None:
    host, port = mosquitto
    run = uuid.uuid4().hex[:6]
    dev, new = f"dc{run}-hub", f"dc{run}-new"
    await add_small_registry(pg_maker, {dev: "hub"})
    await ensure_admin(pg_maker, password="admin-password", now=datetime.now(UTC))
    async with pg_maker() as s:
        admin = await s.scalar(select(User).where(User.username == "admin"))
        assert admin is not None
    bus = RedisBus(redis_url)  # the API process's bus
    app = create_app(pg_maker, signer=SIGNER, bus=bus)
    try:
        async with (
            running_gateway(mosquitto, pg_url, pg_maker, redis_url, instance=f"dc-{run}"),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
            aiomqtt.Client(host, port, identifier=f"dev-{run}", clean_session=True) as c,
        ):
            await asyncio.sleep(0.5)  # the gateway's Redis subscription is in place
            http.headers["Authorization"] = f"Bearer {SIGNER.issue(admin.id, datetime.now(UTC))}"
            await c.subscribe(f"{ROOT}/{dev}/ack", qos=1)
            await c.subscribe(f"{ROOT}/{new}/ack", qos=1)
            await answered(c, dev, "received")

            r = await http.patch(f"/api/v1/devices/{dev}", json={"enabled": False})
            assert r.status_code == 200, r.text
            t0 = time.monotonic()
            t, body = await answered(c, dev, "rejected")
            print(f"\nPostgreSQL + Redis + Mosquitto: disabled device refused after {1000 * (t - t0):.0f} ms")
            assert body["reason"].startswith("disabled_device") and t - t0 < 2.0

            # a device the gateway has seen as unknown, then issued by the CLI (another process)
            await c.publish(f"{ROOT}/{new}/events", b'{"id":"early","ts":1764120600123,"type":"sos"}', qos=1)
            await asyncio.sleep(0.5)
            env = dict(os.environ, CARECALL_DATABASE_URL=pg_url, CARECALL_REDIS_URL=redis_url)
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "carecall.shell.cli",
                    "devices",
                    "issue",
                    new,
                    "--home",
                    "h1",
                    "--kind",
                    "watch",
                ],
                env=env,
                capture_output=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
            t0 = time.monotonic()
            t, _ = await answered(c, new, "received")
            assert t - t0 < 2.0, "taken at once, not after the minute's negative cache"
    finally:
        await bus.close()
