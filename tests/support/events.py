"""Device events stored as the gateway stores them, for the dispatcher to take in."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.store import EventRow, insert_events

__all__ = ["event_row", "store_event"]


def event_row(
    device: str,
    home_id: str,
    at: datetime,
    *,
    event_id: str = "e1",
    type_: str = "sos",
    cls: str = "emergency",
    data: dict[str, object] | None = None,
) -> EventRow:
    """One event of ``device`` (in home ``home_id``) as the gateway stores it, received at
    ``at`` with no clock skew."""
    return EventRow(
        device_id=device,
        event_id=event_id,
        home_id=home_id,
        type=type_,
        event_class=cls,
        sensor=None,
        data=data or {},
        source="device",
        device_ts=at,
        received_at=at,
        clock_skew_s=0.0,
        clock_suspect=False,
        gateway="test",
    )


async def store_event(
    maker: async_sessionmaker[AsyncSession],
    device: str,
    event_id: str,
    type_: str,
    at: datetime,
    cls: str = "emergency",
    data: dict[str, object] | None = None,
    *,
    home_id: str = "h1",
) -> None:
    """One event of ``device`` (in home ``home_id``), received at ``at`` with no clock skew."""
    async with maker() as s, s.begin():
        await insert_events(
            s, [event_row(device, home_id, at, event_id=event_id, type_=type_, cls=cls, data=data)]
        )
