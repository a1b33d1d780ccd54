"""The registry's tables as sign-in and scope read them.

The registry owns ``stations`` and ``staff`` (``dispatcher.registry.models``) and its
views import auth for principals and roles; auth importing the registry back would make
the two packages a cycle. Auth only needs to walk the station tree, read a station's
tier and check that a station or a staff member exists, so it names those few columns
here instead of importing the registry's models.
"""

from sqlalchemy import column, exists, select, table
from sqlalchemy.ext.asyncio import AsyncSession

# The tier whose users see the whole county (dispatcher.registry.models.Tier.county).
COUNTY_TIER = "county"

stations = table("stations", column("id"), column("parent_id"), column("tier"))
staff = table("staff", column("id"), column("station_id"))


async def station_tier(session: AsyncSession, *, station_id: str) -> str | None:
    """The station's tier; None when there is no such station."""
    tier = await session.scalar(select(stations.c.tier).where(stations.c.id == station_id))
    return None if tier is None else str(tier)


async def staff_exists(session: AsyncSession, *, staff_id: str) -> bool:
    return bool(await session.scalar(select(exists().where(staff.c.id == staff_id))))


async def staff_station(session: AsyncSession, *, staff_id: str) -> str | None:
    """The station of a staff member; None when there is no such person."""
    found = await session.scalar(select(staff.c.station_id).where(staff.c.id == staff_id))
    return None if found is None else str(found)
