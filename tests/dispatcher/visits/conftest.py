"""A small county for the visits tests: cm1 (street st1) with r1 (capacity 3, living
alone: monthly + weekly plans) and a rostered responder; cm2 (street st2) with r2
(empty-nest: monthly) and nobody on the roster."""

from __future__ import annotations

from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.registry.models import Resident, Staff
from dispatcher.visits.models import ResidentCategory
from tests.conftest import add_small_registry
from tests.support.registry import add_second_street


async def add_visit_county(maker: async_sessionmaker[AsyncSession]) -> None:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        await add_second_street(s)
        await s.flush()
        s.add(
            Resident(
                id="r2",
                home_id="h2",
                name="张大爷",
                sex="M",
                birth_date=date(1938, 5, 1),
                capacity_level=1,
                living_alone=False,
                conditions=[],
            )
        )
        s.add_all(
            [
                Staff(
                    id="cm1-r1", station_id="cm1", name="李师傅", role="responder", shifts="day", on_duty=True
                ),
                Staff(id="cm1-n1", station_id="cm1", name="赵护士", role="nurse", shifts="", on_duty=True),
                Staff(
                    id="cm1-m1", station_id="cm1", name="王站长", role="manager", shifts="day", on_duty=True
                ),
                Staff(
                    id="cm2-r1", station_id="cm2", name="孙师傅", role="responder", shifts="", on_duty=True
                ),
            ]
        )
        await s.flush()
        s.add(ResidentCategory(resident_id="r2", category="empty_nest"))
