"""Which calls a station-scoped user sees: those at a station in their scope, and the
calls of their own homes that escalation has carried up the tree.

Escalation hands a call to the street centre, then the county, so its ``station_id``
leaves the community station's subtree. The community's people are still the nearest to
the door: an escalated call must never vanish from their queue, nor refuse their
actions. So a call is visible to a scope when its station is in it, or when it has been
escalated (``escalation_level > 0``) and its home's own station is in it. Every read and
write of a call (the queue, one call, the console's detail and live stream, operator
actions) asks here, so they cannot disagree.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.one_of import one_of
from dispatcher.calls.models import Call
from dispatcher.registry.models import Home

__all__ = ["call_visible", "visible_calls"]


def visible_calls(scope: frozenset[str] | None) -> ColumnElement[bool]:
    """A WHERE clause on ``Call``: the calls ``scope`` sees (None: the whole county)."""
    if scope is None:
        return true()
    stations = sorted(scope)
    own_homes = select(Home.id).where(one_of(Home.station_id, stations))
    return or_(
        one_of(Call.station_id, stations),
        and_(Call.escalation_level > 0, Call.home_id.in_(own_homes)),
    )


async def call_visible(session: AsyncSession, *, scope: frozenset[str] | None, call_id: int) -> bool:
    """Whether the call exists and ``scope`` sees it."""
    found = await session.scalar(select(Call.id).where(Call.id == call_id, visible_calls(scope)))
    return found is not None
