"""The intake's claim on PostgreSQL stays linear in the events it looks at, however stale
the planner's statistics (dispatcher/calls/claims.py, claim_events).

Found with auto_explain in `carecall bench --target real` (2026-12-07): on a fresh
database the claim's generic plan, cached by the connection's prepared statement while the
tables were nearly empty, was a nested-loop anti-join over a materialized scan of
``event_intake``: 1.75 million rows removed by its join filter for one claim of 25, up to
1.16 s a claim during the storm, so the storm took 57 s to become calls and the console
saw new calls ~200–600 ms late. A prepared statement keeps that plan until an ANALYZE of
the tables, which autovacuum makes at most once a minute.

The plan the claim ran with is read from the server itself: auto_explain, loaded in the
test's own session, sends each statement's plan with its actual row counts to the client.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from device_gateway.models import DeviceEvent
from device_gateway.store import insert_events
from dispatcher.calls import claims
from dispatcher.calls.models import EventIntake
from tests.conftest import add_small_registry
from tests.support.events import event_row

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
HANDLED = 3_000  # events already taken in, above the floor: what a claim steps over
WAITING = 25


async def _store(session: AsyncSession, first: int, n: int) -> list[int]:
    rows = [
        event_row("h1-btn", "h1", T0 + timedelta(milliseconds=i), event_id=f"e{i}") for i in range(first, first + n)
    ]
    await insert_events(session, rows)
    await session.flush()
    ids = await session.scalars(
        DeviceEvent.__table__.select()
        .with_only_columns(DeviceEvent.id)
        .where(DeviceEvent.event_id.in_([r.event_id for r in rows]))
        .order_by(DeviceEvent.id)
    )
    return list(ids)


async def _mark_handled(session: AsyncSession, ids: list[int]) -> None:
    if ids:
        await session.execute(
            insert(EventIntake),
            [{"event_pk": i, "decision": "ignored", "handled_at": T0, "handled_by": "test"} for i in ids],
        )


@pytest.fixture
async def pinned(pg_maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncConnection]:
    """One connection for the whole test: the prepared statement, and so the cached plan,
    belong to a connection."""
    engine = pg_maker.kw["bind"]
    async with engine.connect() as conn:
        yield conn


async def test_the_claim_stays_linear_when_the_tables_outgrow_their_statistics(
    pg_maker: async_sessionmaker[AsyncSession], pinned: AsyncConnection
) -> None:
    await add_small_registry(pg_maker, {"h1-btn": "button"})
    session = AsyncSession(bind=pinned, expire_on_commit=False)
    # Rounds on nearly empty tables, as on the first minute of a fresh database: after
    # five of them the server may cache a generic plan for the claim's statement.
    n = 0
    for _ in range(8):
        async with session.begin():
            ids = await _store(session, n, 1)
            n += 1
            claimed = await claims.claim_events(session, limit=WAITING, floor=0)
            assert [ev.id for ev in claimed] == ids
            await _mark_handled(session, ids)
    # The history grows by thousands of taken-in events (a storm), no ANALYZE in between.
    async with pg_maker() as other, other.begin():
        grown = await _store(other, n, HANDLED)
        await _mark_handled(other, grown)
        waiting = await _store(other, n + HANDLED, WAITING)
    floor = grown[0]

    plans: list[str] = []

    def on_log(_conn: asyncpg.Connection, message: asyncpg.PostgresLogMessage) -> None:
        plans.append(str(message))

    raw = (await pinned.get_raw_connection()).driver_connection
    assert raw is not None
    raw.add_log_listener(on_log)
    for setting in (
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_analyze = on",
        "SET auto_explain.log_level = notice",
        "SET client_min_messages = notice",
    ):
        await pinned.exec_driver_sql(setting)
    await pinned.commit()  # a SET lasts only if its transaction commits
    try:
        async with session.begin():
            claimed = await claims.claim_events(session, limit=WAITING, floor=floor)
        await asyncio.sleep(0.1)  # the listener is called soon after the message, not in it
    finally:
        raw.remove_log_listener(on_log)
        await session.close()

    assert [ev.id for ev in claimed] == waiting
    claim_plans = [p for p in plans if "FROM device_events" in p and "SKIP LOCKED" in p]
    assert claim_plans, f"auto_explain sent no plan for the claim: {plans[:3]}"
    plan = claim_plans[-1]
    looked_at = HANDLED + WAITING
    removed = sum(int(x) for x in re.findall(r"Rows Removed by (?:Join )?Filter: (\d+)", plan))
    # linear: each event above the floor is looked at a few times at most; the quadratic
    # plan compares every one with every taken-in event (~4.5 million here)
    assert removed <= 10 * looked_at, f"the claim compared {removed:,} rows for {looked_at:,} events:\n{plan}"
