"""``carecall demo`` prints a login for the responder's phone app (/m/) beside the
console's: a responder user bound to a staff row of the demo county, created once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from carecall.core.db import make_engine, make_sessionmaker
from carecall.core.tabular import display_width
from carecall.shell import demo
from config.settings import load_settings
from dispatcher.auth.models import User
from dispatcher.registry.models import Staff
from tests.carecall.shell.test_readiness import first_healthy_then_sign_in, free_port, stopped

pytestmark = pytest.mark.slow


async def run_once(tmp_path: Path) -> tuple[list[str], dict[str, object]]:
    port = free_port()
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/demo.db",
        http_port=port,
        embedded_mqtt_port=free_port(),
        log_level="WARNING",
    )
    said: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(demo.run_demo(settings, stop, simulate=False, announce=said.append))
    try:
        _, login = await first_healthy_then_sign_in(port, task, demo.DEMO_RESPONDER, demo.DEMO_PASSWORD)
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            auth = {"Authorization": f"Bearer {token}"}
            me = await http.get("/api/v1/m/me", headers=auth)
            assert me.status_code == 200, me.text
            page = await http.get("/m/")
            assert page.status_code == 200
            # a responder uses the phone, not the console's API
            assert (await http.get("/api/v1/calls", headers=auth)).status_code == 403
    finally:
        await stopped(stop, task)
    return said[0].splitlines(), me.json()


async def test_demo_prints_a_phone_login_that_signs_in_and_is_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lines, me = await run_once(tmp_path)
    phone = [i for i, line in enumerate(lines) if line.lstrip().startswith("phone app:")]
    assert len(phone) == 1, lines
    assert re.search(r"http://127\.0\.0\.1:\d+/m/", lines[phone[0]]), lines
    assert lines[phone[0] + 1].split() == ["login:", demo.DEMO_RESPONDER, "/", demo.DEMO_PASSWORD]
    who = lines[phone[0] + 2]  # too wide for one line in 80 columns: the note goes below
    assert who.startswith(" " * 13 + "(responder ")
    assert str(me["name"]) in who and str(me["station_name"]) in who
    assert me["role"] == "responder"
    # the announcement reads at 80 columns (a temporary folder's long paths aside)
    assert all(display_width(line) <= 80 for line in lines if str(tmp_path) not in line), lines

    again, me_again = await run_once(tmp_path)  # a second run: the same login, not a second user
    assert again[phone[0] + 1 : phone[0] + 3] == lines[phone[0] + 1 : phone[0] + 3]
    assert me_again["staff_id"] == me["staff_id"]
    engine = make_engine(f"sqlite:///{tmp_path}/demo.db")
    try:
        async with make_sessionmaker(engine)() as s:
            n = await s.scalar(select(func.count()).select_from(User).where(User.role == "responder"))
            staff_role = await s.scalar(select(Staff.role).where(Staff.id == me["staff_id"]))
    finally:
        await engine.dispose()
    assert n == 1
    assert staff_role == "responder"


def test_a_field_keeps_its_note_on_the_line_when_it_fits() -> None:
    assert demo._field("login", "a / b") == ["  login:     a / b"]
    assert demo._field("MQTT", "mqtt://h:1", "(short)") == ["  MQTT:      mqtt://h:1  (short)"]
    long_note = "(responder 王秀英, 唐河县县级养老服务中心, " + "很长的名字" * 3 + ")"
    lines = demo._field("login", "demo-responder / carecall-demo", long_note)
    assert lines == ["  login:     demo-responder / carecall-demo", " " * 13 + long_note]
