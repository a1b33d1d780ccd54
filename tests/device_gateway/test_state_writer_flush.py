"""A flush waits for one already writing (device_gateway/state_writer.py): when ``flush``
returns, everything learned before the call is in the database. The periodic flush had
taken a flood's rejection summaries and was still writing them when the integration
test's own flush found nothing left to take and returned: the test then counted 95,069
of 100,000 rejected messages (tests/integration/test_fuzz_gateway.py, seen in CI)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock
from device_gateway import state_writer
from device_gateway.models import RejectedMessage
from device_gateway.state_writer import StateWriter
from device_gateway.store import RejectRow

T0 = datetime(2026, 12, 7, 19, 0, tzinfo=UTC)


class _Intake:
    """What an intake learned: one rejection, taken once."""

    def __init__(self) -> None:
        self.rows = [
            RejectRow(
                received_at=T0,
                device_id=None,
                topic="carecall/v1/devices/x/events",
                reason="not_json",
                detail="a summary",
                payload_size=3,
                payload_excerpt="",
                messages=4931,
            )
        ]

    def take(self) -> tuple[dict[str, Any], list[RejectRow], list[Any]]:
        rows, self.rows = self.rows, []
        return {}, rows, []

    def give_back(self, learned: Any) -> None:
        self.rows = learned[1] + self.rows


async def test_a_flush_returns_only_after_the_one_in_flight_has_written(
    maker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    real = state_writer.insert_rejects

    async def slow(session: AsyncSession, rows: list[RejectRow]) -> None:
        if rows:  # the periodic flush, caught mid-write
            entered.set()
            await release.wait()
        await real(session, rows)

    monkeypatch.setattr(state_writer, "insert_rejects", slow)
    writer = StateWriter(
        maker=maker,
        clock=Clock(start=T0),
        name="gw-test",
        offline_after_intervals=3,
        directory=None,  # type: ignore[arg-type]  (no device state in this flush)
        intake=_Intake(),  # type: ignore[arg-type]
        writer=None,  # type: ignore[arg-type]  (no liveness events either)
    )
    periodic = asyncio.create_task(writer.flush())
    await asyncio.wait_for(entered.wait(), 5)
    asked = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.05)
    assert not asked.done(), "a flush returned while another was still writing what it took"
    release.set()
    await asyncio.wait_for(asyncio.gather(periodic, asked), 5)
    async with maker() as s:
        kept = await s.scalar(select(func.sum(RejectedMessage.messages)))
    assert kept == 4931
