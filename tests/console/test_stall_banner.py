"""The stall alarm in a real browser: a ``carecall serve`` with no dispatcher running (every
copy dead, the production layout's worst case), an alarm stored as the gateway would store
it, and the operator's console turning red until a dispatcher takes the alarm."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from carecall.core.db import make_engine, make_sessionmaker
from device_gateway.models import Device, DeviceEvent
from device_gateway.store import EventRow, insert_events
from dispatcher.calls.models import EventIntake
from tests.console.conftest import CARECALL, PASSWORD, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@dataclass
class ServeServer:
    workdir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.workdir / 'carecall.db'}"

    def start(self, timeout: float = 60.0) -> None:
        logfile = self.workdir / "serve.log"
        with logfile.open("wb") as out:
            self.proc = subprocess.Popen(
                [CARECALL, "serve", "--port", str(self.port)],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"carecall serve exited: {logfile.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"carecall serve not healthy in {timeout}s: {logfile.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(25)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def serve(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeServer]:
    workdir = tmp_path_factory.mktemp("stall")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CARECALL_DATABASE_URL": f"sqlite:///{workdir / 'carecall.db'}",
        "CARECALL_ADMIN_PASSWORD": "admin-password-1",
        # short limits so the test waits seconds, not the production quarter-minute
        "CARECALL_STALL_INTAKE_S": "2",
        "CARECALL_STALL_CHECK_S": "0.5",
    }
    env.pop("CARECALL_CONFIG", None)
    subprocess.run([CARECALL, "seed-demo"], cwd=workdir, env=env, check=True, capture_output=True)
    with sqlite3.connect(workdir / "carecall.db") as db:
        county = str(db.execute("select id from stations where tier = 'county' order by id").fetchone()[0])
    subprocess.run(
        [CARECALL, "users", "create", "op-county", "--role", "operator", "--station", county, "--name", "值班员"],
        cwd=workdir,
        env={**env, "CARECALL_NEW_USER_PASSWORD": PASSWORD},
        check=True,
        capture_output=True,
    )
    server = ServeServer(workdir, free_port(), env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def store_alarm(db_url: str) -> int:
    """An SOS stored exactly as the gateway stores one; returns its row id."""
    engine = make_engine(db_url)
    maker = make_sessionmaker(engine)
    try:
        async with maker() as s:
            device, home = (
                await s.execute(select(Device.id, Device.home_id).where(Device.kind == "button").limit(1))
            ).one()
        now = datetime.now(UTC)
        async with maker() as s, s.begin():
            await insert_events(
                s,
                [
                    EventRow(
                        device_id=device,
                        event_id=f"stall-{time.time_ns()}",
                        home_id=home,
                        type="sos",
                        event_class="emergency",
                        sensor="bedside-button",
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
        async with maker() as s:
            return int(await s.scalar(select(DeviceEvent.id).order_by(DeviceEvent.id.desc()).limit(1)) or 0)
    finally:
        await engine.dispose()


async def take(db_url: str, event_pk: int) -> None:
    """What a dispatcher does first with a stored event: record that it was taken."""
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as s, s.begin():
            s.add(
                EventIntake(
                    event_pk=event_pk, decision="noted", call_id=None, handled_at=datetime.now(UTC), handled_by="test"
                )
            )
    finally:
        await engine.dispose()


async def test_banner_shows_while_alarms_are_not_dispatched_and_clears(browser: Any, serve: ServeServer) -> None:
    ctx = await browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    page = await ctx.new_page()
    await page.goto(f"{serve.url}/")
    await page.fill("#login-username", "op-county")
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_selector("#app-view:not([hidden])")
    await page.wait_for_selector("#conn-state.ok")
    await asyncio.sleep(1.0)
    assert await page.locator("#stall-banner").is_hidden()

    pk = await store_alarm(serve.db_url)  # no dispatcher runs: nobody will take it
    stored = time.monotonic()
    await page.wait_for_selector("#stall-banner:not([hidden])", timeout=15000)
    shown_after = time.monotonic() - stored
    text = await page.inner_text("#stall-banner")
    assert "自动派单延迟——请电话处置报警" in text
    assert await page.locator("#stall-banner li[data-part='intake']").count() == 1
    assert "新报警未转为呼叫" in text
    await page.screenshot(path=str(serve.workdir / "stall-banner.png"))  # kept with the server's log
    # 2 s limit + checks every 0.5 s + the page's 3 s poll, with room for a busy machine
    assert shown_after < 12, shown_after
    async with httpx.AsyncClient(base_url=serve.url, timeout=5) as http:
        r = await http.get("/healthz")
        metrics = (await http.get("/metrics")).text
    assert r.status_code == 503 and [p["part"] for p in r.json()["stalled"]] == ["intake"]
    assert 'carecall_dispatch_stalled{part="intake"} 1.0' in metrics

    # the banner does not flicker away while the alarm still waits
    await asyncio.sleep(4)
    assert await page.locator("#stall-banner").is_visible()

    await take(serve.db_url, pk)  # a dispatcher is back and takes it
    await page.wait_for_selector("#stall-banner", state="hidden", timeout=20000)
    async with httpx.AsyncClient(base_url=serve.url, timeout=5) as http:
        r = await http.get("/healthz")
        assert r.status_code == 200, r.text  # the body names what is not ok
    await ctx.close()
