"""The small county's building blocks, each written once.

``add_station_chain``: county → street st1 → community cm1 (what tests/conftest.py's
``add_small_registry`` starts with). ``add_second_street``: street st2 → community cm2 →
home h2, beside it. ``staff_row``: the named people of the tests (``STAFF``). ``add_logins``:
users with passwords, as the auth service creates them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.auth.users import create_user
from dispatcher.registry.models import Area, Home, Staff, Station

__all__ = ["PW", "STAFF", "add_logins", "add_second_street", "add_station_chain", "staff_row"]

PW = "password-123"

STAFF: dict[str, dict[str, Any]] = {
    "cm1-r1": dict(station_id="cm1", name="李师傅", role="responder", phone="13800000001", on_duty=True),
    "cm1-r2": dict(station_id="cm1", name="赵护士", role="nurse", phone="13800000002", on_duty=False),
    "cm2-r1": dict(station_id="cm2", name="钱师傅", role="responder", phone="13800000009", on_duty=True),
    "st1-r1": dict(station_id="st1", name="周主任", role="responder", phone="13800000003", on_duty=True),
    "cty-r1": dict(station_id="county", name="县值班", role="responder", phone="13800000004", on_duty=True),
}


def staff_row(staff_id: str, **changes: Any) -> Staff:
    """One of ``STAFF``, with ``changes`` (a shorter phone, a roster) applied."""
    return Staff(id=staff_id, **{**STAFF[staff_id], **changes})


async def _station(
    s: AsyncSession, sid: str, name: str, kind: str, parent_id: str | None, lat: float, lon: float
) -> None:
    tier = {"county_centre": "county", "street_centre": "street"}.get(kind, "community")
    s.add(Station(id=sid, name=name, tier=tier, kind=kind, parent_id=parent_id, lat=lat, lon=lon))
    await s.flush()  # children and homes refer to it


async def add_station_chain(s: AsyncSession) -> None:
    """county → st1 → cm1."""
    await _station(s, "county", "县中心", "county_centre", None, 32.68, 112.84)
    await _station(s, "st1", "街道中心", "street_centre", "county", 32.69, 112.85)
    await _station(s, "cm1", "社区站", "day_care_centre", "st1", 32.691, 112.851)


async def add_second_street(s: AsyncSession, *, area: str = Area.urban.value) -> None:
    """st2 → cm2 → home h2 (in ``area``) beside st1: a place outside st1's subtree."""
    await _station(s, "st2", "另一街道", "street_centre", "county", 32.6, 112.9)
    await _station(s, "cm2", "另一社区", "day_care_centre", "st2", 32.601, 112.901)
    s.add(Home(id="h2", station_id="cm2", address="另一路2号", lat=32.602, lon=112.902, area=area))


async def add_logins(
    s: AsyncSession, users: Iterable[tuple[str, str, str | None]], *, now: datetime, password: str = PW
) -> None:
    """(username, role, station) users who sign in with ``password``; display name = username."""
    for username, role, station in users:
        await create_user(
            s,
            username=username,
            password=password,
            role=role,
            station_id=station,
            display_name=username,
            now=now,
        )
