"""The contact ladder end to end: the contact step tells the first contact, the second
after the contact timeout; "I can't" on the family page tells the next one at once;
"I'm going" stops the ladder (and the step's repeats)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit.models import AuditRow
from dispatcher.calls.models import Timer
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.models import Notification
from tests.dispatcher.family.test_views import T0, world
from tests.support.events import store_event

__all__ = ["world"]  # the fixture, shared with test_views

Maker = async_sessionmaker[AsyncSession]


async def told(maker: Maker) -> list[tuple[str, float, str]]:
    """(name, seconds after the SOS, link path) of every contact told, in order."""
    async with maker() as s:
        rows = (
            await s.execute(
                select(Notification.body, Notification.created_at)
                .where(Notification.purpose == "notify_contact")
                .order_by(Notification.id)
            )
        ).all()
    return [
        (b["name"], (at - T0).total_seconds(), b["link"].removeprefix("https://cc.example")) for b, at in rows
    ]


async def sos_and_wait(world: dict[str, Any], maker: Maker, seconds: float) -> Dispatcher:
    d: Dispatcher = world["dispatcher"]
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()
    await d.timers_once()
    world["clock"].advance(seconds)
    await d.timers_once()
    return d


async def test_the_first_contact_is_told_then_the_second_after_the_timeout(
    world: dict[str, Any], maker: Maker
) -> None:
    d = await sos_and_wait(world, maker, 181)
    assert [(n, t) for n, t, _ in await told(maker)] == [("王小明", 181.0)]
    world["clock"].advance(119)  # 300 s: the first contact's 120 s are not over yet
    await d.timers_once()
    assert [n for n, _, _ in await told(maker)] == ["王小明"]
    world["clock"].advance(1)
    await d.timers_once()
    assert [(n, t) for n, t, _ in await told(maker)] == [("王小明", 181.0), ("王小红", 301.0)]
    async with maker() as s:
        alerted = [
            r["name"]
            for r in (
                await s.scalars(
                    select(AuditRow.detail).where(AuditRow.kind == "alerted").order_by(AuditRow.seq)
                )
            )
            if r.get("purpose") == "notify_contacts"
        ]
        pending = (
            await s.scalars(select(Timer).where(Timer.action == "notify_contacts", Timer.status == "pending"))
        ).all()
    assert alerted == ["王小明", "王小红"]  # the timeline names who was told, never their number
    world["clock"].advance(600)
    await d.timers_once()
    assert len(await told(maker)) == 2, "each contact is told once"
    async with maker() as s:
        left = (
            await s.scalars(select(Timer).where(Timer.action == "notify_contacts", Timer.status == "pending"))
        ).all()
    assert len(pending) == 1 and left == [], "the step stops repeating once everyone was told"


async def test_i_cannot_tells_the_next_contact_at_once(world: dict[str, Any], maker: Maker) -> None:
    c: httpx.AsyncClient = world["client"]
    await sos_and_wait(world, maker, 181)
    [(_, _, link)] = await told(maker)
    world["clock"].advance(10)
    r = await c.post(f"{link}/answer", data={"answer": "cannot"})
    assert r.status_code == 303
    assert [(n, t) for n, t, _ in await told(maker)] == [("王小明", 181.0), ("王小红", 191.0)]
    async with maker() as s:
        kinds = [
            k
            for (k,) in (
                await s.execute(
                    select(AuditRow.kind)
                    .where(AuditRow.kind.in_(["contact_answered", "alerted"]))
                    .order_by(AuditRow.seq)
                )
            )
        ]
    assert kinds[-2:] == ["contact_answered", "alerted"], "the answer, then the next contact told"


async def test_an_answer_racing_the_contact_timer_tells_the_next_contact_once(
    world: dict[str, Any], maker: Maker
) -> None:
    """The first contact answers "I can't" at the very moment their timeout fires: both
    want to tell the next contact. Under the call's row lock (real concurrency on
    PostgreSQL in the ``--db postgresql`` pass) the second contact is told exactly once."""
    c: httpx.AsyncClient = world["client"]
    d = await sos_and_wait(world, maker, 181)
    [(_, _, link)] = await told(maker)
    world["clock"].advance(120)  # 301 s: the contact step's timer is due now
    answer, _ = await asyncio.gather(c.post(f"{link}/answer", data={"answer": "cannot"}), d.timers_once())
    assert answer.status_code == 303
    assert [n for n, _, _ in await told(maker)] == ["王小明", "王小红"]
    world["clock"].advance(600)
    await d.timers_once()
    assert [n for n, _, _ in await told(maker)] == ["王小明", "王小红"], "nobody is told twice"


async def test_i_am_going_stops_the_ladder(world: dict[str, Any], maker: Maker) -> None:
    c: httpx.AsyncClient = world["client"]
    d = await sos_and_wait(world, maker, 181)
    [(_, _, link)] = await told(maker)
    assert (await c.post(f"{link}/answer", data={"answer": "going"})).status_code == 303
    for _ in range(3):
        world["clock"].advance(120)
        await d.timers_once()
    assert [n for n, _, _ in await told(maker)] == ["王小明"], "nobody else is told once someone is going"
    async with maker() as s:
        left = (
            await s.scalars(select(Timer).where(Timer.action == "notify_contacts", Timer.status == "pending"))
        ).all()
    assert left == []


async def test_a_contact_told_before_the_ladder_is_not_told_again(
    world: dict[str, Any], maker: Maker
) -> None:
    """A call running when the ladder came: its contacts were all told at once, by rows
    without a contact id. They are recognised by their number, never told twice."""
    c: httpx.AsyncClient = world["client"]
    await sos_and_wait(world, maker, 181)
    [(_, _, link)] = await told(maker)
    async with maker() as s, s.begin():
        first = (await s.scalars(select(Notification).where(Notification.purpose == "notify_contact"))).one()
        s.add(
            Notification(
                call_id=first.call_id,
                channel=first.channel,
                purpose="notify_contact",
                target="phone:13900000002",
                body={"name": "王小红", "link": "https://cc.example/f/old"},
                status="sent",
                attempts=1,
                next_attempt_at=first.created_at,
                created_at=first.created_at,
            )
        )
    assert (await c.post(f"{link}/answer", data={"answer": "cannot"})).status_code == 303
    async with maker() as s:
        targets = list(
            await s.scalars(select(Notification.target).where(Notification.purpose == "notify_contact"))
        )
    assert targets == ["phone:13900000001", "phone:13900000002"]
