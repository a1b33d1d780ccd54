"""Who runs a station, read from the registry: its managers (active supervisor logins of
the station, staff rows with the manager role) and its on-duty staff. The rule of whom
a page reaches is dispatcher/notifications/area.py (pure); this module only reads."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.auth.models import Role, User
from dispatcher.notifications.area import StationPeople
from dispatcher.registry.models import Staff

__all__ = ["MANAGER_ROLE", "station_people"]

MANAGER_ROLE = "manager"  # Staff.role of a station's manager (站长)


async def station_people(session: AsyncSession, station_ids: Iterable[str]) -> dict[str, StationPeople]:
    """Each station's people (every id asked for has an entry, possibly empty). A
    supervisor login bound to a manager's staff row counts once, as the login."""
    ids = sorted(set(station_ids))
    if not ids:
        return {}
    users = (
        await session.execute(
            select(User.station_id, User.username, User.staff_id)
            .where(User.role == Role.supervisor.value, User.active.is_(True), User.station_id.in_(ids))
            .order_by(User.username)
        )
    ).all()
    staff = (
        await session.execute(
            select(Staff.station_id, Staff.id, Staff.role, Staff.on_duty)
            .where(Staff.station_id.in_(ids))
            .order_by(Staff.id)
        )
    ).all()
    bound = {u.staff_id for u in users if u.staff_id}
    managers: dict[str, list[str]] = {sid: [] for sid in ids}
    on_duty: dict[str, list[str]] = {sid: [] for sid in ids}
    for u in users:
        if u.station_id is not None:
            managers[u.station_id].append(f"user:{u.username}")
    for s in staff:
        if s.role == MANAGER_ROLE and s.id not in bound:
            managers[s.station_id].append(f"staff:{s.id}")
        if s.on_duty:
            on_duty[s.station_id].append(f"staff:{s.id}")
    return {sid: StationPeople(sid, tuple(managers[sid]), tuple(on_duty[sid])) for sid in ids}
