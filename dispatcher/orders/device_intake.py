"""A device's service button (event ``service_request``) becomes a service order — never
an emergency call. The dispatcher's intake hands such events here (decision ``order``).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from device_gateway.models import DeviceEvent
from device_gateway.protocol.messages import SERVICE_KINDS
from dispatcher.orders.catalogue import Catalogue
from dispatcher.orders.catalogue_file import load_catalogue
from dispatcher.orders.schemas import BookingIn
from dispatcher.orders.service import create_order
from dispatcher.registry.models import Resident

__all__ = ["catalogue", "order_from_event"]


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """The catalogue, read once per process (like the escalation policies): editing the
    file takes effect at the next start, and each order keeps its levels snapshot."""
    return load_catalogue()


async def order_from_event(
    session: AsyncSession, *, ev: DeviceEvent, actor: str, now: datetime, cat: Catalogue | None = None
) -> int | None:
    """Book the order a service_request asks for; None when it cannot be booked (no
    resident in the home, or a kind the gateway should have refused)."""
    kind = ev.data.get("kind")
    if not isinstance(kind, str) or kind not in SERVICE_KINDS:
        return None
    resident_id = await session.scalar(
        select(Resident.id).where(Resident.home_id == ev.home_id).order_by(Resident.id).limit(1)
    )
    if resident_id is None:
        return None
    order, _ = await create_order(
        session,
        catalogue=cat or catalogue(),
        booking=BookingIn(resident_id=resident_id, kind=kind),
        source="device",
        actor=actor,
        scope=None,
        # one order per device event, even if the event is taken in twice
        client_ref=f"device:{ev.device_id}:{ev.event_id}"[:100],
        now=now,
        device=(ev.device_id, ev.event_id),
    )
    return order.id
