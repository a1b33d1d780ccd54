"""The stall alarm across real processes on PostgreSQL and Mosquitto: a ``carecall
dispatcher`` frozen with SIGSTOP (alive, holding its connections, doing nothing — what a
hung process looks like) while an SOS is stored turns the separate ``carecall serve``'s
/healthz red naming the intake; SIGCONT lets it take the SOS and /healthz is 200 again.
The episode is recorded once, start and end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.store import EventRow, insert_events
from dispatcher.audit.models import AuditRow
from dispatcher.calls.models import EventIntake
from tests.conftest import add_small_registry
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "carecall.shell.cli", *args],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


async def store_sos(maker: async_sessionmaker[AsyncSession], event_id: str) -> None:
    now = datetime.now(UTC)
    async with maker() as s, s.begin():
        await insert_events(
            s,
            [
                EventRow(
                    device_id="h1-btn",
                    event_id=event_id,
                    home_id="h1",
                    type="sos",
                    event_class="emergency",
                    sensor=None,
                    data={},
                    source="device",
                    device_ts=now,
                    received_at=now,
                    clock_skew_s=0.0,
                    clock_suspect=False,
                    gateway="test",
                )
            ],
        )


async def taken(maker: async_sessionmaker[AsyncSession]) -> int:
    async with maker() as s:
        return int(await s.scalar(select(func.count()).select_from(EventIntake)) or 0)


async def wait_health(http: httpx.AsyncClient, want: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            r = await http.get("/healthz")
            body = r.json()
            if r.status_code == want:
                return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"/healthz never answered {want} in {timeout_s} s; last {body}")


async def test_frozen_dispatcher_turns_serve_red_and_back(
    pg_url: str, pg_maker: async_sessionmaker[AsyncSession], mosquitto: tuple[str, int], tmp_path: Path
) -> None:
    await add_small_registry(pg_maker, {"h1-btn": "button"})
    port = free_port()
    env = dict(os.environ)
    env.pop("CARECALL_CONFIG", None)
    env.pop("CARECALL_REDIS_URL", None)  # hints in memory: Redis channels are shared with other tests
    env.update(
        CARECALL_DATABASE_URL=pg_url,
        CARECALL_MQTT_URL=f"mqtt://{mosquitto[0]}:{mosquitto[1]}",
        CARECALL_ADMIN_PASSWORD="admin-password-1",
        CARECALL_STALL_INTAKE_S="3",
        CARECALL_STALL_CHECK_S="0.5",
        CARECALL_LOG_FORMAT="json",
    )
    instance = f"stall-{uuid.uuid4().hex[:8]}"
    dsp = start(["dispatcher", "--instance", instance], env, tmp_path / "dispatcher.log")
    srv = start(["serve", "--port", str(port)], env, tmp_path / "serve.log")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            await wait_health(http, 200, 60)
            await store_sos(pg_maker, "before")
            deadline = time.monotonic() + 20
            while await taken(pg_maker) < 1:
                assert time.monotonic() < deadline, (tmp_path / "dispatcher.log").read_text()[-3000:]
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)
            assert (await http.get("/healthz")).status_code == 200  # a working dispatcher: no alarm

            dsp.send_signal(signal.SIGSTOP)
            await store_sos(pg_maker, "while-frozen")
            frozen = time.monotonic()
            body = await wait_health(http, 503, 30)
            assert body["status"] == "stalled", body
            assert [p["part"] for p in body["stalled"]] == ["intake"], body
            assert time.monotonic() - frozen < 20
            metrics = (await http.get("/metrics")).text
            assert 'carecall_dispatch_stalled{part="intake"} 1.0' in metrics

            dsp.send_signal(signal.SIGCONT)
            await wait_health(http, 200, 40)
            assert await taken(pg_maker) == 2
        deadline = time.monotonic() + 10  # the audit row follows the state by one transaction
        while True:
            async with pg_maker() as s:
                kinds = list(
                    await s.scalars(
                        select(AuditRow.kind)
                        .where(AuditRow.kind.in_(["dispatch_stalled", "dispatch_recovered"]))
                        .order_by(AuditRow.seq)
                    )
                )
            if len(kinds) >= 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert kinds == ["dispatch_stalled", "dispatch_recovered"]
    finally:
        stop(dsp)
        stop(srv)
