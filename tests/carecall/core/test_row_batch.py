"""Several tables' new rows in one statement on PostgreSQL (carecall/core/row_batch.py).

The dispatcher's loops write their buffered rows (intake decisions, outbox rows, audit
rows) at commit; on PostgreSQL that is one statement of data-modifying CTEs over
``unnest`` arrays, where it was one INSERT per table. What goes in must be what the
per-table executemany INSERT (the SQLite path, and the path before) writes: the same
values, a column's Python-side default for a key a row leaves out, NULLs kept, JSON
kept, and a row referring to a row of another table of the same statement accepted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from carecall.core import row_batch
from device_gateway.models import DeviceEvent
from device_gateway.store import insert_events
from dispatcher.calls.models import EventIntake
from tests.conftest import add_small_registry
from tests.dispatcher.engine.test_timer_batch import statements
from tests.support.events import event_row
from tests.support.sql import statement_texts

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _events(tag: str, *, spelled_out: bool = False) -> list[dict[str, Any]]:
    """Two events of h1-btn; the second leaves out data, source, clock_suspect and gateway
    (their Python defaults apply) unless ``spelled_out``."""
    defaults = {"data": {}, "source": "device", "clock_suspect": False, "gateway": ""} if spelled_out else {}
    common = {"device_id": "h1-btn", "home_id": "h1", "type": "sos", "event_class": "emergency"}
    return [
        {
            **common,
            "event_id": f"{tag}-1",
            "sensor": None,
            "data": {"text": "王秀英 呼叫", "n": [1, None], "ok": True},
            "source": "rule",
            "device_ts": None,
            "received_at": T0,
            "clock_skew_s": -1.5,
            "clock_suspect": True,
            "gateway": "gw1",
        },
        {
            **common,
            "event_id": f"{tag}-2",
            "sensor": "s1",
            "device_ts": T0,
            "received_at": T0 + timedelta(seconds=1),
            "clock_skew_s": None,
            **defaults,
        },
    ]


def _seen(rows: list[DeviceEvent]) -> list[tuple[Any, ...]]:
    return [
        (
            e.event_id.split("-")[-1],
            e.sensor,
            e.data,
            e.source,
            e.device_ts,
            e.received_at,
            e.clock_skew_s,
            e.clock_suspect,
            e.gateway,
        )
        for e in rows
    ]


async def _event_ids(maker: async_sessionmaker[AsyncSession], n: int) -> list[int]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        await insert_events(s, [event_row("h1-btn", "h1", T0, event_id=f"rb{i}") for i in range(n)])
    async with maker() as s:
        return list(await s.scalars(select(DeviceEvent.id).order_by(DeviceEvent.id)))


async def test_rows_go_in_as_the_per_table_insert_writes_them(
    maker: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    events = await _event_ids(maker, 2)
    intake = [
        {"event_pk": events[0], "decision": "opened", "call_id": None, "handled_at": T0, "handled_by": "d1"},
        {
            "event_pk": events[1],
            "decision": "ignored",
            "call_id": None,
            "handled_at": T0,
        },  # handled_by: default
    ]
    async with maker() as s, s.begin():
        await s.run_sync(
            lambda sync: sync.execute(
                insert(row_batch.table_of(DeviceEvent)), _events("many", spelled_out=True)
            )
        )
    async with maker() as s, s.begin():
        with statements(maker.kw["bind"]) as seen:
            await s.run_sync(
                lambda sync: row_batch.write(
                    sync,
                    [
                        (row_batch.table_of(DeviceEvent), _events("batch")),
                        (row_batch.table_of(EventIntake), intake),
                    ],
                    "UPDATE audit_head SET hash = :h WHERE id = 1",
                    {"h": "f" * 64},
                )
            )
    if db_backend == "postgresql":
        assert len(seen) == 1 and seen[0].startswith("WITH rb0 AS"), seen
    else:
        assert len(seen) == 3, seen
    async with maker() as s:
        stored = list(await s.scalars(select(DeviceEvent).order_by(DeviceEvent.id)))
        taken = list(await s.scalars(select(EventIntake).order_by(EventIntake.event_pk)))
        head = (await s.execute(text("SELECT hash FROM audit_head WHERE id = 1"))).scalar_one()
    by_tag = {t: [e for e in stored if e.event_id.startswith(t)] for t in ("many", "batch")}
    assert _seen(by_tag["batch"]) == _seen(by_tag["many"])
    assert (by_tag["batch"][1].data, by_tag["batch"][1].source, by_tag["batch"][1].gateway) == (
        {},
        "device",
        "",
    )
    assert [(t.event_pk, t.decision, t.handled_by) for t in taken] == [
        (events[0], "opened", "d1"),
        (events[1], "ignored", ""),
    ]
    assert head == "f" * 64


async def test_a_row_may_refer_to_a_row_written_in_the_same_statement(
    maker: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    """PostgreSQL checks a foreign key at the end of the statement: an intake decision may
    name an event the same statement stores, and one naming no event is still refused."""
    await add_small_registry(maker, {"h1-btn": "button"})
    event = {
        "id": 424_242,
        "device_id": "h1-btn",
        "event_id": "same-statement",
        "home_id": "h1",
        "type": "sos",
        "event_class": "emergency",
        "received_at": T0,
    }
    decision = {"event_pk": 424_242, "decision": "ignored", "call_id": None, "handled_at": T0}
    async with maker() as s, s.begin():
        await s.run_sync(
            lambda sync: row_batch.write(
                sync,
                [(row_batch.table_of(DeviceEvent), [event]), (row_batch.table_of(EventIntake), [decision])],
            )
        )
    async with maker() as s:
        assert (await s.get(EventIntake, 424_242)) is not None
        assert (await s.get(DeviceEvent, 424_242)).source == "device"  # type: ignore[union-attr]
    orphan = {**decision, "event_pk": 999_999}
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        async with maker() as s, s.begin():
            await s.run_sync(
                lambda sync: row_batch.write(sync, [(row_batch.table_of(EventIntake), [orphan])])
            )


def test_a_sql_expression_default_is_refused_not_written_wrong() -> None:
    """A column whose default is SQL (``func.now()``) cannot be a value of a parameter
    array: :func:`row_batch.statement` says so rather than sending the expression."""
    from sqlalchemy import Column, DateTime, Integer, MetaData, func

    table = Table(
        "t", MetaData(), Column("id", Integer, primary_key=True), Column("at", DateTime, default=func.now())
    )
    with pytest.raises(ValueError, match=r"t\.at"):
        row_batch.statement([(table, [{"id": 1}])])
    stmt, params = row_batch.statement([(table, [{"id": 1, "at": T0}])])
    assert params["rb0_0"] == [1] and "unnest" in stmt.text


async def test_the_gateway_insert_is_one_text_for_any_batch_and_still_skips_resends(
    maker: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    """The gateway's event INSERT (device_gateway.store.insert_events): on PostgreSQL the
    same SQL text whatever the batch size (no prepare round trip per new size); on both,
    a resend in the batch or of an earlier batch is not new."""
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        engine = s.bind
        assert isinstance(engine, AsyncEngine)
        with statement_texts(engine) as texts:
            first = await insert_events(
                s, [event_row("h1-btn", "h1", T0, event_id=f"g{i}") for i in range(3)]
            )
            again = await insert_events(
                s, [event_row("h1-btn", "h1", T0, event_id=e) for e in ("g1", "g3", "g3", "g4", "g5", "g6")]
            )
    assert first == {("h1-btn", f"g{i}") for i in range(3)}
    assert again == {("h1-btn", e) for e in ("g3", "g4", "g5", "g6")}  # g1 was stored before
    if db_backend == "postgresql":
        assert len(texts) == 2 and texts[0] == texts[1] and "unnest" in texts[0], texts
    async with maker() as s:
        stored = sorted(await s.scalars(select(DeviceEvent.event_id)))
    assert stored == ["g0", "g1", "g2", "g3", "g4", "g5", "g6"]
