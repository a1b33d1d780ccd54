"""PostgreSQL connections plan every statement for its parameters (carecall/core/db.py
``CUSTOM_PLANS``): no generic plan made once and kept, and no ``SET LOCAL`` round trip
before the intake's claim on an engine that has it already."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from carecall.core.db import make_engine, make_sessionmaker, plans_per_statement
from dispatcher.calls.claims import claim_events
from tests.dispatcher.engine.test_timer_batch import statements


@pytest.fixture
def pg_url(db_url: str, db_backend: str) -> str:
    if db_backend != "postgresql":
        pytest.skip("a PostgreSQL setting: runs in the --db postgresql pass")
    return db_url


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
