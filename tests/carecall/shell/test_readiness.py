"""Issue 10, item 11: ``/healthz`` answers 200 only once a login exists, so a script that
waits for health and then signs in never gets 401 (the real ``run_demo``/``run_serve``
on ports of their own, polled as fast as a script would)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from carecall.shell import demo, runtime
from config.settings import load_settings
from tests.support.ports import free_port

pytestmark = pytest.mark.slow


async def first_healthy_then_sign_in(
    port: int, task: asyncio.Task[None], username: str, password: str, timeout_s: float = 90.0
) -> tuple[list[str], httpx.Response]:
    """Poll /healthz every 20 ms; at the first 200 sign in at once. Returns the statuses
    seen before it and the sign-in's answer."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        while True:
            assert not task.done(), task.exception() if task.done() else None
            assert time.monotonic() < deadline, f"never healthy; saw {seen[-5:]}"
            try:
                r = await http.get("/healthz")
            except httpx.TransportError:
                await asyncio.sleep(0.02)
                continue
            if r.status_code == 200:
                login = await http.post(
                    "/api/v1/auth/token", data={"username": username, "password": password}
                )
                return seen, login
            seen.append(r.json()["status"])
            await asyncio.sleep(0.02)


async def stopped(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 60)


async def test_demo_is_healthy_only_once_its_logins_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    port = free_port()
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/demo.db",
        http_port=port,
        embedded_mqtt_port=free_port(),
        log_level="WARNING",
    )
    # A busy machine: the demo's logins take a while to be written. The web server is
    # already up meanwhile (a script polling /healthz reaches it).
    original: Callable[[runtime.Core], Awaitable[str]] = demo.demo_login

    async def slow_demo_login(core: runtime.Core) -> str:
        await asyncio.sleep(2.0)
        return await original(core)

    monkeypatch.setattr(demo, "demo_login", slow_demo_login)
    stop = asyncio.Event()
    task = asyncio.create_task(demo.run_demo(settings, stop, simulate=False, announce=lambda _: None))
    try:
        seen, login = await first_healthy_then_sign_in(port, task, demo.DEMO_OPERATOR, demo.DEMO_PASSWORD)
    finally:
        await stopped(stop, task)
    assert login.status_code == 200, (login.status_code, login.text)
    assert "starting" in seen  # it did answer while starting, and said so
    assert set(seen) <= {"starting"}, seen


async def test_serve_is_healthy_only_once_the_first_admin_exists(tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/serve.db",
        http_port=port,
        admin_password="first-admin-pw-1",
        log_level="WARNING",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run_serve(settings, stop, "127.0.0.1", port))
    try:
        seen, login = await first_healthy_then_sign_in(port, task, "admin", "first-admin-pw-1")
    finally:
        await stopped(stop, task)
    assert login.status_code == 200, (login.status_code, login.text)
    assert set(seen) <= {"starting"}, seen
