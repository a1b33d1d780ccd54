"""Who could go to a door: responders per station (on duty now, or rostered on a shift)
and the homes and stations the coverage figures (dispatcher/oversight/coverage.py) need."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.oversight.coverage import CoverageHome, CoverageStation
from dispatcher.oversight.service import StationInfo, load_stations
from dispatcher.registry.models import Home, Staff

__all__ = ["RESPONDER_ROLES", "load_coverage_inputs", "responder_counts", "rostered_shift_names"]

# Staff who can be sent to a door (as dispatcher.calls.station_nodes counts them).
RESPONDER_ROLES = ("responder", "nurse", "doctor")


def _on_shift(shift: str) -> Any:
    # Staff.shifts is a space-separated list of names: pad it so a name matches whole.
    return (literal(" ") + Staff.shifts + literal(" ")).contains(f" {shift} ", autoescape=True)


async def responder_counts(session: AsyncSession, shift: str | None = None) -> dict[str, int]:
    """Responders per station: on duty now (shift None), or rostered on a shift."""
    q = select(Staff.station_id, func.count()).where(Staff.role.in_(RESPONDER_ROLES))
    q = q.where(Staff.on_duty.is_(True)) if shift is None else q.where(_on_shift(shift))
    return {sid: int(n) for sid, n in (await session.execute(q.group_by(Staff.station_id))).all()}


async def rostered_shift_names(session: AsyncSession) -> set[str]:
    """Every shift name some staff row is rostered on (to flag names the config lacks)."""
    names: set[str] = set()
    for value in (await session.scalars(select(Staff.shifts).distinct())).all():
        names.update((value or "").split())
    return names


async def load_coverage_inputs(
    session: AsyncSession,
    scope: frozenset[str] | None,
    shift: str | None = None,
    stations: dict[str, StationInfo] | None = None,
) -> tuple[list[CoverageHome], list[CoverageStation]]:
    """Homes in scope and every station with its responders: on duty now, or, given a
    shift, rostered on it.

    Every station, not only those in scope: a bed near the street boundary may well be
    covered by the neighbour's station, and the circle does not stop at the boundary.
    """
    if stations is None:
        stations = await load_stations(session)
    counts = await responder_counts(session, shift)
    homes_q = select(Home.id, Home.station_id, Home.lat, Home.lon, Home.area, Home.address).order_by(Home.id)
    if scope is not None:
        homes_q = homes_q.where(Home.station_id.in_(sorted(scope)))
    homes: list[CoverageHome] = []
    for hid, sid, lat, lon, area, address in (await session.execute(homes_q)).all():
        st = stations.get(sid)
        street = stations.get(st.street_id or "") if st else None
        homes.append(
            CoverageHome(
                hid,
                sid,
                street.id if street else None,
                street.name if street else "",
                lat,
                lon,
                area,
                address,
            )
        )
    cstations = [
        CoverageStation(s.id, s.name, s.tier, s.lat, s.lon, int(counts.get(s.id, 0)))
        for s in sorted(stations.values(), key=lambda s: s.id)
    ]
    return homes, cstations
