"""What the console's orders tab reads besides the orders themselves: each listed
order's resident name and address, and the booking form's resident search (name and
address only, in the caller's scope). Queries only; the views log the reads."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.orders.schemas import OrderOut
from dispatcher.registry.models import Home, Resident

__all__ = ["OrderListed", "ResidentHit", "find_residents", "resident_names"]


class OrderListed(OrderOut):
    """An order in the console's list: with whom and where, so the list reads by name."""

    resident_name: str = ""
    address: str = ""


class ResidentHit(BaseModel):
    id: str
    name: str
    home_id: str
    address: str
    station_id: str


async def resident_names(s: AsyncSession, resident_ids: set[str]) -> dict[str, tuple[str, str]]:
    if not resident_ids:
        return {}
    rows = await s.execute(
        select(Resident.id, Resident.name, Home.address)
        .join(Home, Home.id == Resident.home_id)
        .where(Resident.id.in_(sorted(resident_ids)))
    )
    return {r[0]: (r[1], r[2]) for r in rows.all()}


async def find_residents(
    s: AsyncSession, q: str, scope: frozenset[str] | None, limit: int
) -> list[ResidentHit]:
    """Residents whose name, id or address holds every word of ``q`` (case-blind), in scope."""
    query = select(Resident.id, Resident.name, Resident.home_id, Home.address, Home.station_id).join(
        Home, Home.id == Resident.home_id
    )
    if scope is not None:
        query = query.where(Home.station_id.in_(sorted(scope)))
    words = ["".join(ch for ch in w.lower() if ch not in "%_\\") for w in q.split()[:5]]  # no LIKE wildcards
    if not any(words):
        return []
    for like in (f"%{w}%" for w in words if w):
        query = query.where(
            or_(
                func.lower(Resident.name).like(like),
                func.lower(Resident.id).like(like),
                func.lower(Home.address).like(like),
            )
        )
    rows = (await s.execute(query.order_by(Resident.name, Resident.id).limit(limit))).all()
    return [ResidentHit(id=r[0], name=r[1], home_id=r[2], address=r[3], station_id=r[4]) for r in rows]
