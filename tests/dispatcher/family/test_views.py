"""The family's link end to end: the contact step sends it, the page opens, answers land
on the call's timeline, and a tampered, expired or closed-call link says so plainly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.shell.app import create_app
from config.settings import load_settings
from dispatcher.audit.models import AuditRow
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import create_user
from dispatcher.calls.models import Call
from dispatcher.engine.process import Dispatcher, load_context
from dispatcher.family.link import derive_key, make_link
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.registry.models import Contact
from tests.conftest import add_small_registry
from tests.support.clock import ManualClock
from tests.support.events import store_event

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
Maker = async_sessionmaker[AsyncSession]
SIGNER = TokenSigner(b"k" * 32)
KEY = SIGNER.subkey(derive_key)


pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def world(maker: Maker) -> AsyncIterator[dict[str, Any]]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        s.add_all(
            [
                Contact(resident_id="r1", name="王小明", relation="儿子", phone="13900000001", priority=1),
                Contact(resident_id="r1", name="王小红", relation="女儿", phone="13900000002", priority=2),
            ]
        )
        await create_user(
            s,
            username="op",
            password="password-123",
            role="operator",
            station_id="county",
            display_name="op",
            now=T0,
        )
    settings = load_settings(database_url="sqlite:///unused.db")
    clock = ManualClock(T0)
    bus = MemoryBus()

    def family_link(call_id: int, contact_id: int, now: datetime) -> str:
        return f"https://cc.example/f/{make_link(KEY, call_id=call_id, contact_id=contact_id, now=now)}"

    ctx = replace(load_context(settings), family_link=family_link)
    d = Dispatcher(
        settings=settings, maker=maker, bus=bus, clock=clock, mqtt=None, notifier=LogNotifier(), ctx=ctx
    )
    app = create_app(maker, signer=SIGNER, ctx=ctx, clock=clock, bus=bus)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield {"client": client, "dispatcher": d, "clock": clock}


async def contact_links(world: dict[str, Any], maker: Maker) -> dict[str, str]:
    """SOS, nobody acknowledges for 180 s: the contact step sends the first contact their
    link; nobody answers in the contact timeout (120 s), so the second gets theirs."""
    d: Dispatcher = world["dispatcher"]
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()
    await d.timers_once()
    world["clock"].advance(181)
    await d.timers_once()
    world["clock"].advance(120)
    await d.timers_once()
    async with maker() as s:
        bodies = (
            (await s.execute(select(Notification.body).where(Notification.purpose == "notify_contact")))
            .scalars()
            .all()
        )
    return {b["name"]: b["link"].removeprefix("https://cc.example") for b in bodies}


async def test_the_contact_opens_the_link_and_answers_on_the_timeline(
    world: dict[str, Any], maker: Maker
) -> None:
    c: httpx.AsyncClient = world["client"]
    links = await contact_links(world, maker)
    assert set(links) == {"王小明", "王小红"} and all(p.startswith("/f/") for p in links.values())
    page = await c.get(links["王小明"])
    assert page.status_code == 200 and "建设路1号" in page.text and "王秀英" in page.text
    assert "13900000001" not in page.text  # the page shows what happened, not anyone's number
    assert (
        "http" not in page.text.replace("https://", "").split("</head>")[0]
        or "/m/static/phone.css" in page.text
    )
    english = await c.get(links["王小明"], headers={"Accept-Language": "en-GB,en"})
    assert "What happened" in english.text and "I&#x27;m going" in english.text
    r = await c.post(f"{links['王小明']}/answer", data={"answer": "going"})
    assert r.status_code == 303
    thanks = await c.get(r.headers["location"])
    assert "已收到您的回复" in thanks.text
    r = await c.post(
        f"{links['王小红']}/answer", data={"answer": "call_me"}, headers={"Accept-Language": "en"}
    )
    assert r.status_code == 303
    assert (await c.post(f"{links['王小红']}/answer", data={"answer": "hello"})).status_code == 404
    async with maker() as s:
        rows = (
            await s.execute(
                select(AuditRow.actor, AuditRow.detail)
                .where(AuditRow.kind == "contact_answered")
                .order_by(AuditRow.seq)
            )
        ).all()
    assert [(d["name"], d["answer"]) for _, d in rows] == [("王小明", "going"), ("王小红", "call_me")]
    assert all("139" not in str(d) for _, d in rows)  # no phone number in the record


async def test_tampered_expired_and_closed_links_get_a_plain_page(
    world: dict[str, Any], maker: Maker
) -> None:
    c: httpx.AsyncClient = world["client"]
    links = await contact_links(world, maker)
    link = links["王小明"]
    body, mac = link.rsplit(".", 1)
    tampered = await c.get(f"{body}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}")
    assert tampered.status_code == 404 and "无效" in tampered.text
    async with maker() as s:
        call_id = int(await s.scalar(select(Call.id)) or 0)
        contact_id = int(await s.scalar(select(Contact.id).where(Contact.name == "王小明")) or 0)
    # a link made for another call (even with a genuine signature) never shows this one
    other = make_link(KEY, call_id=call_id + 1, contact_id=contact_id, now=T0)
    assert (await c.get(f"/f/{other}")).status_code == 404
    world["clock"].advance(24 * 3600)
    expired = await c.get(link)
    assert expired.status_code == 410 and "失效" in expired.text
    world["clock"].advance(-24 * 3600)
    op = {
        "Authorization": f"Bearer {(await c.post('/api/v1/auth/token', data={'username': 'op', 'password': 'password-123'})).json()['access_token']}"
    }
    assert (
        await c.post(f"/api/v1/calls/{call_id}/cancel", headers=op, json={"false_alarm": True})
    ).status_code == 200
    closed = await c.get(link)
    assert closed.status_code == 410
    assert (await c.post(f"{link}/answer", data={"answer": "going"})).status_code == 410


async def test_the_page_follows_the_header_s_q_values(world: dict[str, Any], maker: Maker) -> None:
    """Through the real view: the same link in the language each header asks for first."""
    c: httpx.AsyncClient = world["client"]
    link = (await contact_links(world, maker))["王小明"]
    for header, words in [
        ("en;q=0.5, zh-CN", "发生了什么"),
        ("zh-CN;q=0.3, en-US;q=0.9", "What happened"),
        ("fr-FR, fr;q=0.9", "What happened"),  # neither language: English, as the console
        ("zh-TW", "发生了什么"),
        ("", "发生了什么"),
    ]:
        page = await c.get(link, headers={"Accept-Language": header})
        assert page.status_code == 200 and words in page.text, header
        assert f'<html lang="{"en" if words == "What happened" else "zh-CN"}"' in page.text
