"""The gateway stores a batch of events on PostgreSQL in one statement (device_gateway/
writer.py, ``EventWriter._insert``): the INSERT … ON CONFLICT DO NOTHING RETURNING is
atomic and durable by itself, so it runs without BEGIN and COMMIT — one round trip before
the devices are acked instead of three (four with the pool's ping). What the server was
sent is read from the server itself: ``log_statement = all`` with the log sent to the
client. When the commit returns, another connection sees the rows: an ack after it is an
ack after a commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.clock import SystemClock
from carecall.core.db import make_engine, make_sessionmaker
from config.settings import load_settings
from device_gateway.models import DeviceEvent
from device_gateway.mqtt import MqttTarget
from device_gateway.service import Gateway
from dispatcher.registry.service import resident_vitals
from tests.conftest import add_small_registry
from tests.support.events import event_row

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


@pytest.fixture
async def logged(pg_url: str) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], list[str]]]:
    """A sessionmaker whose connections report every statement the server runs."""
    engine = make_engine(pg_url)
    sent: list[str] = []

    @event.listens_for(engine.sync_engine, "connect")
    def _log_all(dbapi_conn: Any, _record: Any) -> None:
        raw = dbapi_conn.driver_connection
        raw.add_log_listener(lambda _c, msg: sent.append(str(msg.message)))
        cur = dbapi_conn.cursor()
        cur.execute("SET log_statement = 'all'")
        cur.execute("SET client_min_messages = log")
        cur.close()
        dbapi_conn.commit()

    yield make_sessionmaker(engine), sent
    await engine.dispose()


async def test_a_batch_of_events_is_one_statement_and_committed_when_it_returns(
    pg_maker: async_sessionmaker[AsyncSession],
    logged: tuple[async_sessionmaker[AsyncSession], list[str]],
    pg_url: str,
) -> None:
    await add_small_registry(pg_maker, {"h1-btn": "button"})
    maker, sent = logged
    gw = Gateway(
        settings=load_settings(database_url=pg_url),
        maker=maker,
        bus=MemoryBus(),
        clock=SystemClock(),
        mqtt=MqttTarget("127.0.0.1", 1, "unused", "unused", tls=False),
        shared_group=None,
        residents=resident_vitals,
    )
    batch = [event_row("h1-btn", "h1", T0 + timedelta(seconds=i), event_id=f"e{i}") for i in range(20)]
    await gw.writer.commit([event_row("h1-btn", "h1", T0, event_id="warm")])  # the pool's connection, set up
    sent.clear()
    await gw.writer.commit(batch)
    statements = [s for s in sent if s.startswith(("statement:", "execute"))]
    assert len(statements) == 1, statements
    # one array per column (device_gateway/store.py insert_events): the same text, so the
    # same prepared statement, as the one-row batch before it
    assert 'INSERT INTO "device_events"' in statements[0] and "unnest(" in statements[0], statements
    assert not any(word in s for s in sent for word in ("BEGIN", "COMMIT")), sent
    async with pg_maker() as s:  # another connection: committed
        assert await s.scalar(select(func.count()).select_from(DeviceEvent)) == 21
    assert gw.stats.events_stored == 21

    # a resend is the same row: stored once, counted as a duplicate
    await gw.writer.commit(batch[:5])
    assert gw.stats.events_duplicate == 5
