"""What the console's orders tab reads besides the orders: each listed order's resident
name and address, and the booking form's resident search (name and address only, in the
caller's scope, operators and admins), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.auth.models import RecordRead
from dispatcher.registry.models import Resident
from tests.conftest import add_small_registry
from tests.support.api import api_world
from tests.support.api import bearer as login
from tests.support.registry import add_logins, add_second_street

T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)

pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def client(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[httpx.AsyncClient]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        await add_second_street(s)
        await s.flush()
        s.add(
            Resident(
                id="r2",
                home_id="h2",
                name="李桂兰",
                sex="F",
                birth_date=date(1944, 3, 1),
                capacity_level=2,
                living_alone=False,
            )
        )
        await add_logins(
            s,
            [
                ("op-cm1", "operator", "cm1"),
                ("op-county", "operator", "county"),
                ("sup-st1", "supervisor", "st1"),
            ],
            now=T0,
        )
    async with api_world(maker, T0) as w:
        yield w.client


async def reads(maker: async_sessionmaker[AsyncSession], route: str) -> list[tuple[str, str]]:
    async with maker() as s:
        rows = (await s.scalars(select(RecordRead).where(RecordRead.route == route))).all()
    return sorted((r.username, r.resident_id) for r in rows)


async def test_the_list_names_each_orders_resident_and_address(
    client: httpx.AsyncClient, maker: async_sessionmaker[AsyncSession]
) -> None:
    op = await login(client, "op-cm1")
    booked = await client.post("/api/v1/orders", json={"resident_id": "r1", "kind": "chat"}, headers=op)
    assert booked.status_code == 201, booked.text
    rows = (await client.get("/api/v1/orders?status=all", headers=op)).json()
    assert [(o["id"], o["resident_name"], o["address"]) for o in rows] == [
        (booked.json()["id"], "王秀英", "建设路1号")
    ]


async def test_resident_search_by_name_address_or_id_in_scope(
    client: httpx.AsyncClient, maker: async_sessionmaker[AsyncSession]
) -> None:
    op, county, sup = [await login(client, u) for u in ("op-cm1", "op-county", "sup-st1")]

    async def ids(q: str, who: dict[str, str]) -> list[str]:
        r = await client.get("/api/v1/orders/residents", params={"q": q}, headers=who)
        assert r.status_code == 200, r.text
        return [hit["id"] for hit in r.json()]

    assert await ids("秀英", op) == ["r1"]
    assert await ids("建设路", op) == ["r1"]
    assert await ids("R1", op) == ["r1"]  # case-blind
    assert await ids("王 建设", op) == ["r1"]  # every word must match
    assert await ids("王 另一路", op) == []
    assert await ids("李桂兰", op) == []  # another street's resident: out of scope
    assert await ids("李桂兰", county) == ["r2"]
    assert await ids("%", county) == []  # LIKE's wildcards are not the caller's
    r = await client.get("/api/v1/orders/residents", params={"q": "王"}, headers=op)
    assert set(r.json()[0]) == {"id", "name", "home_id", "address", "station_id"}  # no health data
    assert (await client.get("/api/v1/orders/residents", params={"q": "王"}, headers=sup)).status_code == 403
    assert (await client.get("/api/v1/orders/residents", params={"q": ""}, headers=op)).status_code == 422
    assert ("op-county", "r2") in await reads(maker, "GET /api/v1/orders/residents")
    assert ("op-cm1", "r2") not in await reads(maker, "GET /api/v1/orders/residents")
    # the path does not shadow an order's own
    assert (await client.get("/api/v1/orders/999", headers=op)).status_code == 404
