"""What the console's queue line of a mass offline incident carries (queries.incident_briefs):
the area, the cause, the full device count with how many are back, and the homes still
dark with their addresses (capped); calls of other classes get nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.models import Device
from dispatcher.calls.models import Call
from dispatcher.console import queries
from dispatcher.incidents.models import IncidentDevice, MassOfflineIncident
from dispatcher.registry.models import Home
from tests.support.registry import add_station_chain

T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


def call_row(home_id: str, event_class: str) -> Call:
    return Call(
        status="assigned",
        priority="P4",
        priority_reasons=["TROUBLE_ONLY"],
        event_class=event_class,
        home_id=home_id,
        resident_id=None,
        station_id="st1",
        tier="street",
        route_reasons=["MASS_OFFLINE_AREA"],
        lat=32.69,
        lon=112.85,
        outcome=None,
        policy={},
        escalation_level=1,
        last_event_at=T0,
    )


async def seed(maker: async_sessionmaker[AsyncSession], homes: int) -> tuple[int, int]:
    """An incident of ``homes`` homes (one device each; the first three back) and an
    ordinary trouble call; their ids."""
    async with maker() as s, s.begin():
        await add_station_chain(s)
        for i in range(homes):
            s.add(Home(id=f"h{i:03d}", station_id="cm1", address=f"幸福路{i}号", lat=32.69, lon=112.85))
        await s.flush()
        for i in range(homes):
            s.add(Device(id=f"d{i:03d}", home_id=f"h{i:03d}", kind="hub", created_at=T0))
        inc, other = call_row("h000", "mass_offline"), call_row("h001", "trouble")
        s.add_all([inc, other])
        await s.flush()
        s.add(
            MassOfflineIncident(
                call_id=inc.id,
                area_station_id="st1",
                cause="mass_offline",
                outage_id=None,
                opened_at=T0,
                since=T0,
                last_offline_at=T0,
            )
        )
        await s.flush()
        for i in range(homes):
            s.add(
                IncidentDevice(
                    call_id=inc.id,
                    device_id=f"d{i:03d}",
                    home_id=f"h{i:03d}",
                    offline_event_pk=i + 1,
                    offline_at=T0,
                    back_at=T0 + timedelta(minutes=1) if i < 3 else None,
                    restore_event_pk=None,
                    merged_call_id=None,
                )
            )
        return int(inc.id), int(other.id)


async def test_incident_line_counts_and_lists_the_homes_still_dark(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    inc, other = await seed(maker, 25)
    async with maker() as s:
        briefs = await queries.incident_briefs(s, call_ids={inc, other})
        assert await queries.incident_briefs(s, call_ids=set()) == {}
        assert await queries.incident_briefs(s, call_ids={other}) == {}
    assert set(briefs) == {inc}
    b = briefs[inc]
    assert (b["area_station_id"], b["area_name"], b["cause"]) == ("st1", "街道中心", "mass_offline")
    assert (b["devices"], b["back"]) == (25, 3)
    assert [it["device_id"] for it in b["items"]] == [f"d{i:03d}" for i in range(3, 25)]
    assert b["items"][0] == {"device_id": "d003", "home_id": "h003", "address": "幸福路3号"}


async def test_a_huge_incident_lists_at_most_the_cap_but_counts_all(
    maker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queries, "INCIDENT_ITEMS_MAX", 10)
    inc, _ = await seed(maker, 40)
    async with maker() as s:
        b = (await queries.incident_briefs(s, call_ids={inc}))[inc]
    assert (b["devices"], b["back"], len(b["items"])) == (40, 3, 10)
