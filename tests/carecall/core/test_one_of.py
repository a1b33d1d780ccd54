"""``one_of``: ``IN`` with one SQL text for any number of values on PostgreSQL
(carecall/core/one_of.py). Runs on the chosen backend (``--db``); that the text stays the
same on PostgreSQL is tests/integration/test_statement_texts_pg.py's."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from carecall.core.one_of import one_of
from dispatcher.registry.models import Station
from tests.support.registry import add_station_chain


def test_it_renders_any_on_postgresql_and_in_elsewhere() -> None:
    stmt = select(Station.id).where(one_of(Station.id, ["a", "b", "c"]))
    pg = str(stmt.compile(dialect=postgresql.dialect()))
    lite = str(stmt.compile(dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True}))
    assert "= ANY (" in pg and " IN " not in pg
    assert "IN (?, ?, ?)" in lite
    # a comparison as it stands: not ``(… IN (…)) = 1``, which SQLite's indexes cannot serve
    assert lite.rstrip().endswith("IN (?, ?, ?)"), lite


async def test_sqlite_looks_the_values_up_in_the_index() -> None:
    """On SQLite (the embedded default, whatever ``--db`` says) the IN is served by the
    key's index; PostgreSQL's plans are tests/integration/test_statement_texts_pg.py's."""
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: Station.__table__.create(c))
            stmt = select(Station.id).where(one_of(Station.id, ["a", "b"]))
            sql = str(
                stmt.compile(
                    dialect=engine.dialect, compile_kwargs={"render_postcompile": True, "literal_binds": True}
                )
            )
            plan = " ".join(str(r[-1]) for r in (await conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))).all())
    finally:
        await engine.dispose()
    assert "SEARCH" in plan and "SCAN stations" not in plan, plan


async def test_the_same_rows_as_in_for_any_length(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as s, s.begin():
        await add_station_chain(s)
    ids = ["county", "st1", "cm1", "nowhere"]
    async with maker() as s:
        for n in range(len(ids) + 1):
            want = set((await s.scalars(select(Station.id).where(Station.id.in_(ids[:n])))).all())
            got = set((await s.scalars(select(Station.id).where(one_of(Station.id, ids[:n])))).all())
            assert got == want, n
        # the negation, and inside a larger condition
        rest = (await s.scalars(select(Station.id).where(~one_of(Station.id, ["st1"])))).all()
        assert sorted(rest) == ["cm1", "county"]


async def test_an_orm_update_keeps_loaded_objects_in_step(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as s, s.begin():
        await add_station_chain(s)
    async with maker() as s, s.begin():
        st1 = await s.get(Station, "st1")
        cm1 = await s.get(Station, "cm1")
        assert st1 is not None and cm1 is not None
        await s.execute(update(Station).where(one_of(Station.id, ["st1", "nowhere"])).values(name="新名"))
        assert st1.name == "新名"  # the session's object follows the UPDATE
        assert cm1.name == "社区站"  # one not matched does not
    async with maker() as s:
        names = {sid: name for sid, name in (await s.execute(select(Station.id, Station.name))).all()}
    assert names["st1"] == "新名" and names["cm1"] == "社区站"


def test_a_subquery_is_refused() -> None:
    with pytest.raises(TypeError, match="not a SQL expression"):
        one_of(Station.id, select(Station.id).scalar_subquery())
