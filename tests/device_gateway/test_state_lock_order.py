"""Gateway copies write device state in device id order (device_gateway/store.py,
``flush_states``): two copies that saw overlapping devices in different orders locked
their ``device_state`` rows in those orders and deadlocked now and then (seen in the
copy-kill bench's gateway logs: ``deadlock detected`` on the upsert)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from device_gateway.store import PendingState, flush_states
from tests.conftest import add_small_registry

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
DEVICES = ["d-a", "d-b", "d-c", "d-d"]


@contextmanager
def state_writes(engine: AsyncEngine) -> Iterator[list[list[str]]]:
    """The device ids of each statement that writes device_state, in the order sent."""
    seen: list[list[str]] = []

    def note(_conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if "device_state" not in statement.split("WHERE")[0] or statement.startswith("SELECT"):
            return
        rows = params if many else [params]
        ids: list[str] = []
        for row in rows:
            values = row.values() if isinstance(row, dict) else row
            ids += [v for v in values if isinstance(v, str) and v.startswith("d-")]
        seen.append(ids)

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def test_device_state_is_written_in_device_id_order(maker: async_sessionmaker[AsyncSession]) -> None:
    await add_small_registry(maker, dict.fromkeys(DEVICES, "button"))
    pending = {d: PendingState(last_seen=T0) for d in reversed(DEVICES)}  # seen last to first
    engine = maker.kw["bind"]
    with state_writes(engine) as writes:
        async with maker() as s, s.begin():
            await flush_states(s, pending, dict.fromkeys(DEVICES, 60), 3)
    assert writes, "device state was written"
    for ids in writes:
        assert ids == sorted(ids), writes
