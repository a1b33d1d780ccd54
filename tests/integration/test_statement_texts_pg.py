"""On the real PostgreSQL: a list of values is one SQL text whatever its length
(carecall/core/one_of.py), and every connection of ``make_engine`` plans each statement
for its values (carecall/core/db.py ``CUSTOM_PLANS``), so the intake's claim needs no
``SET LOCAL`` round trip of its own."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from carecall.core.db import make_engine, make_sessionmaker, plans_per_statement
from carecall.core.one_of import one_of
from dispatcher.calls.claims import claim_events
from dispatcher.registry.models import Station
from tests.dispatcher.engine.test_timer_batch import statements
from tests.support.registry import add_station_chain
from tests.support.sql import statement_texts

pytestmark = pytest.mark.integration


async def test_one_text_for_every_length(pg_maker: async_sessionmaker[AsyncSession]) -> None:
    async with pg_maker() as s, s.begin():
        await add_station_chain(s)
    ids = ["county", "st1", "cm1"]
    async with pg_maker() as s:
        engine = s.bind
        assert isinstance(engine, AsyncEngine)
        with statement_texts(engine) as texts:
            for n in (1, 2, 3, 0, 2):
                got = (await s.scalars(select(Station.id).where(one_of(Station.id, ids[:n])))).all()
                assert len(got) == n
            assert len(texts) == 5 and len(set(texts)) == 1, texts


async def test_every_connection_plans_for_its_parameters_and_the_claim_skips_the_set(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        assert plans_per_statement(engine.sync_engine)
        async with make_sessionmaker(engine)() as s, s.begin():
            assert await s.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
            with statements(engine) as seen:
                await claim_events(s, limit=10)
        assert not any(st.startswith("SET") for st in seen), seen
    finally:
        await engine.dispose()


async def test_an_engine_told_otherwise_still_plans_the_claim_per_statement(pg_url: str) -> None:
    engine = make_engine(pg_url, connect_args={"server_settings": {"plan_cache_mode": "auto"}})
    try:
        assert not plans_per_statement(engine.sync_engine)
        async with make_sessionmaker(engine)() as s, s.begin():
            assert await s.scalar(text("SHOW plan_cache_mode")) == "auto"
            with statements(engine) as seen:
                await claim_events(s, limit=10)
            assert any(st.startswith("SET LOCAL plan_cache_mode") for st in seen), seen
            assert await s.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
    finally:
        await engine.dispose()
