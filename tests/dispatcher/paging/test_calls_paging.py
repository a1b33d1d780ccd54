"""The paging service on a real database (SQLite and, with --db postgresql, PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit import service as audit
from dispatcher.audit.models import AuditRow
from dispatcher.calls import paging
from dispatcher.calls.models import Assignment, Call, CallStatus
from dispatcher.paging.policy import Availability, PageOutcome, PagingMode, PagingPolicy
from dispatcher.registry.models import Home, Staff, Station

Maker = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
ONE_BY_ONE = PagingPolicy(mode=PagingMode.one_by_one, timeout_s=60)


async def _seed(maker: Maker) -> int:
    async with maker() as s, s.begin():
        s.add(
            Station(
                id="st1", name="Station 1", tier="community", kind="community_station", lat=30.0, lon=120.0
            )
        )
        await s.flush()
        s.add_all(
            [
                Staff(id="a", station_id="st1", name="Anna", role="responder", on_duty=True),
                Staff(id="b", station_id="st1", name="Bo", role="nurse", on_duty=True),
                Staff(id="c", station_id="st1", name="Chen", role="responder", on_duty=False),
                Staff(id="d", station_id="st1", name="Dai", role="responder", on_duty=True, busy=True),
                Staff(id="o", station_id="st1", name="Ops", role="operator", on_duty=True),
            ]
        )
        s.add(Home(id="h1", station_id="st1", address="1 Road", lat=30.0, lon=120.0))
        await s.flush()
        call = Call(
            status=CallStatus.assigned,
            priority="P1",
            event_class="emergency",
            home_id="h1",
            station_id="st1",
            tier="community",
            lat=30.0,
            lon=120.0,
            last_event_at=T0,
        )
        s.add(call)
        await s.flush()
        return call.id


async def _step(maker: Maker, call_id: int, at: datetime) -> paging.StepResult:
    async with maker() as s, s.begin():
        return await paging.step(s, call_id=call_id, station_id="st1", policy=ONE_BY_ONE, now=at)


async def _outcomes(maker: Maker, call_id: int) -> dict[str, str]:
    async with maker() as s:
        return {p.staff_id: p.outcome for p in await paging.pages_of(s, call_id=call_id)}


async def test_one_by_one_pages_in_roster_order_times_out_and_moves_on_after_a_decline(maker: Maker) -> None:
    call_id = await _seed(maker)
    first = await _step(maker, call_id, T0)
    assert [p.staff_id for p in first.new_pages] == ["a"]  # Anna; Chen off duty, Dai busy, Ops an operator
    assert first.decision.skipped == {"c": "off_duty", "d": "busy", "o": "role_not_paged"}
    assert (await _step(maker, call_id, T0 + timedelta(seconds=30))).new_pages == []
    second = await _step(maker, call_id, T0 + timedelta(seconds=60))  # Anna ignored it
    assert [p.staff_id for p in second.new_pages] == ["b"]
    async with maker() as s, s.begin():
        await paging.answer(
            s,
            page_id=second.new_pages[0].id,
            staff_id="b",
            accept=False,
            reason="at another home",
            now=T0 + timedelta(seconds=65),
            actor="Bo",
        )
    last = await _step(maker, call_id, T0 + timedelta(seconds=65))
    assert last.new_pages == [] and last.decision.exhausted  # nobody left: the ladder goes on
    assert await _outcomes(maker, call_id) == {"a": "timed_out", "b": "declined"}
    async with maker() as s:
        kinds = (
            (await s.execute(select(AuditRow.kind).where(AuditRow.call_id == call_id).order_by(AuditRow.seq)))
            .scalars()
            .all()
        )
    assert kinds == ["paged", "page_timed_out", "paged", "page_declined"]
    assert (await audit.verify_log(maker)).ok


async def test_first_acceptance_owns_the_call_and_a_second_is_refused(maker: Maker) -> None:
    call_id = await _seed(maker)
    everyone = PagingPolicy(mode=PagingMode.all_at_once, timeout_s=60)
    async with maker() as s, s.begin():
        result = await paging.step(s, call_id=call_id, station_id="st1", policy=everyone, now=T0)
    ids = {p.staff_id: p.id for p in result.new_pages}
    assert set(ids) == {"a", "b"}
    async with maker() as s, s.begin():
        await paging.answer(s, page_id=ids["b"], staff_id="b", accept=True, now=T0, actor="Bo")
    assert await _outcomes(maker, call_id) == {"a": "withdrawn", "b": "accepted"}
    with pytest.raises(paging.PagingError, match="withdrawn"):
        async with maker() as s, s.begin():
            await paging.answer(s, page_id=ids["a"], staff_id="a", accept=True, now=T0, actor="Anna")
    with pytest.raises(paging.PagingError, match="no such page"):
        async with maker() as s, s.begin():
            await paging.answer(s, page_id=ids["b"], staff_id="a", accept=True, now=T0, actor="Anna")
    async with maker() as s, s.begin():
        decision = await paging.step(s, call_id=call_id, station_id="st1", policy=everyone, now=T0)
    assert decision.decision.owner == "b" and decision.new_pages == []


async def test_someone_already_on_a_call_is_not_paged_and_availability_is_their_own(maker: Maker) -> None:
    call_id = await _seed(maker)
    async with maker() as s, s.begin():
        s.add(Assignment(call_id=call_id, staff_id="a", active=True))
    async with maker() as s:
        people = {p.staff_id: p for p in await paging.people_at(s, station_id="st1")}
    assert people["a"].on_call and people["d"].availability is Availability.busy
    async with maker() as s, s.begin():
        await paging.set_availability(s, staff_id="d", availability=Availability.on_duty, now=T0, actor="Dai")
        await paging.set_availability(s, staff_id="b", availability=Availability.off_duty, now=T0, actor="Bo")
    first = await _step(maker, call_id, T0)
    assert [p.staff_id for p in first.new_pages] == ["d"]  # Anna is on a call, Bo went off duty
    async with maker() as s:
        bo = await s.get(Staff, "b")
        assert bo is not None and not bo.on_duty and not bo.busy
    assert (await _outcomes(maker, call_id)) == {"d": PageOutcome.pending}


async def test_a_voice_round_without_notification_channels_pages_nobody(maker: Maker) -> None:
    call_id = await _seed(maker)
    voice = PagingPolicy(mode=PagingMode.all_at_once, timeout_s=60, via=("voice",))
    async with maker() as s, s.begin():
        result = await paging.step(s, call_id=call_id, station_id="st1", policy=voice, now=T0)
    assert result.new_pages == [] and await _outcomes(maker, call_id) == {}
