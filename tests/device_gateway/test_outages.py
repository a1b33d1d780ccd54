"""The gateway's record of its own broker outages (device_gateway.outages)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock
from device_gateway.models import BrokerOutage
from device_gateway.outages import OutageRecorder

T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


class StepClock(Clock):
    def __init__(self) -> None:
        super().__init__(1.0)
        self.t = T0

    def now(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


async def rows(maker: async_sessionmaker[AsyncSession]) -> list[tuple[str, datetime, datetime | None]]:
    async with maker() as s:
        return [
            (o.gateway, o.lost_at, o.back_at)
            for o in (await s.scalars(select(BrokerOutage).order_by(BrokerOutage.id))).all()
        ]


async def test_lost_then_back_is_one_outage_and_the_first_connection_records_nothing(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    rec = OutageRecorder(maker, "gateway-a", StepClock())
    rec.back()  # the first connection: nothing was lost
    await rec.settle()
    assert await rows(maker) == []
    rec.lost()
    rec.back()  # queued right behind the lost: written after it, never before
    await rec.settle()
    assert await rows(maker) == [("gateway-a", T0 + timedelta(seconds=2), T0 + timedelta(seconds=3))]


async def test_a_copy_that_died_cut_off_has_its_outage_closed_by_its_successor(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    first = OutageRecorder(maker, "gateway-a", StepClock())
    first.lost()
    await first.settle()
    other = OutageRecorder(maker, "gateway-b", StepClock())
    other.lost()
    await other.settle()
    again = OutageRecorder(maker, "gateway-a", StepClock())
    again.back()
    await again.settle()
    got = await rows(maker)
    assert [(g, back is not None) for g, _, back in got] == [("gateway-a", True), ("gateway-b", False)]


async def test_a_failed_write_never_reaches_the_caller_and_back_fills_in_the_outage(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    class Broken:
        def __call__(self) -> AsyncSession:
            raise RuntimeError("database down")

    rec = OutageRecorder(maker, "gateway-a", StepClock())
    rec.maker = Broken()  # type: ignore[assignment]
    rec.lost()
    await rec.settle()  # logged, not raised
    rec.maker = maker
    rec.back()
    await rec.settle()
    assert await rows(maker) == [("gateway-a", T0 + timedelta(seconds=1), T0 + timedelta(seconds=2))]
