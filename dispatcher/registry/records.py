"""The registry's records as the HTTP API reads and changes them.

One table description per kind (``Kind``) says how a record is scoped to a station, which
record it must point at and what must not point at it when it is deleted; the functions
below do the database work for every kind from that description, so the API's five kinds
of records are handled by one set of functions. They work inside the caller's
transaction, never commit, and take keyword arguments after the session.

Problems a request can fix are raised as ``InvalidReference`` (a field names a record
that does not exist) or ``Conflict`` (the change would strand other records); the views
turn them into 422 and 409 answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from device_gateway.models import Device, DeviceEvent
from dispatcher.auth.models import Role, User
from dispatcher.auth.principals import station_subtree
from dispatcher.registry.models import Contact, Home, Resident, Staff, Station
from dispatcher.registry.schemas import PARENT_TIER, ContactRow, StationRow
from dispatcher.registry.upsert import plain


class InvalidReference(ValueError):
    """A field names a record that does not exist (or cannot be used there)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Conflict(Exception):
    """The change conflicts with other records; the message says what to do first."""


class Kind(StrEnum):
    stations = "stations"
    staff = "staff"
    homes = "homes"
    residents = "residents"
    devices = "devices"


class ScopeRule(StrEnum):
    """How a record's station (the one scopes are made of) is found."""

    own_id = "own_id"  # a station is its own
    station_column = "station_column"  # staff and homes name theirs
    home = "home"  # residents and devices belong to their home's station


@dataclass(frozen=True)
class Link:
    """A column that must name an existing record of ``kind`` (``what`` in messages)."""

    field: str
    kind: Kind
    what: str


@dataclass(frozen=True)
class Table:
    model: type[Any]
    noun: str  # in messages: "no staff member 'x'"
    scope: ScopeRule
    link: Link | None = None
    with_contacts: bool = False


TABLES: dict[Kind, Table] = {
    Kind.stations: Table(Station, "station", ScopeRule.own_id),
    Kind.staff: Table(
        Staff, "staff member", ScopeRule.station_column, Link("station_id", Kind.stations, "station")
    ),
    Kind.homes: Table(Home, "home", ScopeRule.station_column, Link("station_id", Kind.stations, "station")),
    Kind.residents: Table(
        Resident, "resident", ScopeRule.home, Link("home_id", Kind.homes, "home"), with_contacts=True
    ),
    Kind.devices: Table(Device, "device", ScopeRule.home, Link("home_id", Kind.homes, "home")),
}


# The calls domain's tables that point at registry records, named rather than imported:
# calls import the registry, so the registry cannot import calls back (no package cycle).
# tests/dispatcher/registry/test_views.py deletes referenced records on both databases.
_CALLS = sa_table("calls", sa_column("id"), sa_column("station_id"), sa_column("home_id"))
_ASSIGNMENTS = sa_table("assignments", sa_column("id"), sa_column("staff_id"))


def _referrers(kind: Kind, ident: str) -> dict[str, Select[Any]]:
    """What must not point at a record that is deleted (delete nothing silently: station
    staff would otherwise cascade away). Calls keep their history: a deleted resident's
    calls have their resident_id set to NULL by the database."""
    if kind is Kind.stations:
        return {
            "child station(s)": select(Station.id).where(Station.parent_id == ident),
            "home(s)": select(Home.id).where(Home.station_id == ident),
            "staff member(s)": select(Staff.id).where(Staff.station_id == ident),
            "user(s)": select(User.id).where(User.station_id == ident),
            "call(s)": select(_CALLS.c.id).where(_CALLS.c.station_id == ident),
        }
    if kind is Kind.staff:
        return {"call assignment(s)": select(_ASSIGNMENTS.c.id).where(_ASSIGNMENTS.c.staff_id == ident)}
    if kind is Kind.homes:
        return {
            "resident(s)": select(Resident.id).where(Resident.home_id == ident),
            "device(s)": select(Device.id).where(Device.home_id == ident),
            "call(s)": select(_CALLS.c.id).where(_CALLS.c.home_id == ident),
        }
    return {}


# --------------------------------------------------------------------------- values


def columns(row: BaseModel, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Column values of a validated row (enums as their text, as stored; lists copied;
    contacts as rows of their own)."""
    values: dict[str, Any] = {}
    for name in names if names is not None else list(type(row).model_fields):
        value = getattr(row, name)
        if name == "contacts":
            value = [Contact(**columns(c)) for c in value]
        elif name == "conditions":
            value = list(value)
        values[name] = plain(value)
    return values


# --------------------------------------------------------------------------- reads


async def _count(session: AsyncSession, stmt: Select[Any]) -> int:
    return await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0


async def _home_station(session: AsyncSession, home_id: str) -> str | None:
    return await session.scalar(select(Home.station_id).where(Home.id == home_id))


async def get_scoped(session: AsyncSession, *, kind: Kind, ident: str) -> tuple[Any, str | None] | None:
    """The record and the station that scopes it; None when there is no such record."""
    table = TABLES[kind]
    options = [selectinload(Resident.contacts)] if table.with_contacts else None
    record = await session.get(table.model, ident, options=options)
    if record is None:
        return None
    if table.scope is ScopeRule.own_id:
        return record, record.id
    if table.scope is ScopeRule.station_column:
        return record, record.station_id
    return record, await _home_station(session, record.home_id)


async def exists(session: AsyncSession, *, kind: Kind, ident: str) -> bool:
    return await session.get(TABLES[kind].model, ident) is not None


async def allowed_stations(
    session: AsyncSession, *, scope: frozenset[str] | None, station_id: str | None
) -> frozenset[str] | None:
    """Stations a list may show: the caller's ``scope``, narrowed to ``station_id``'s
    subtree when given. None = no restriction."""
    allowed = scope
    if station_id is not None:
        subtree = await station_subtree(session, station_id=station_id)
        allowed = subtree if allowed is None else subtree & allowed
    return allowed


async def _page(
    session: AsyncSession, stmt: Select[Any], *, limit: int, offset: int
) -> tuple[Sequence[Any], int]:
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.scalars(stmt.limit(limit).offset(offset))).all()
    return rows, total or 0


async def list_page(
    session: AsyncSession,
    *,
    kind: Kind,
    allowed: frozenset[str] | None,
    home_id: str | None = None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Any], int]:
    """One page of ``kind`` in id order within the ``allowed`` stations; (rows, total)."""
    table = TABLES[kind]
    model = table.model
    stmt = select(model).order_by(model.id)
    station_column: Any = model.station_id if table.scope is ScopeRule.station_column else model.id
    if table.scope is ScopeRule.home:
        stmt = select(model).join(Home, Home.id == model.home_id).order_by(model.id)
        station_column = Home.station_id
        if table.with_contacts:
            stmt = stmt.options(selectinload(Resident.contacts))
    if allowed is not None:
        stmt = stmt.where(station_column.in_(allowed))
    if home_id is not None:
        stmt = stmt.where(model.home_id == home_id)
    return await _page(session, stmt, limit=limit, offset=offset)


# --------------------------------------------------------------------------- checks


async def require(session: AsyncSession, *, kind: Kind, ident: str, field: str, what: str) -> Any:
    """The record ``ident`` of ``kind``; InvalidReference naming ``field`` if there is none."""
    record = await session.get(TABLES[kind].model, ident)
    if record is None:
        raise InvalidReference(field, f"unknown {what} {ident!r}")
    return record


async def _check_station(session: AsyncSession, row: StationRow, current: Station | None) -> None:
    """Dispatch escalates up the tree, so a parent must exist exactly one tier up, and a
    station whose tier changes must not strand its children."""
    if row.parent_id is not None:
        parent = await require(
            session, kind=Kind.stations, ident=row.parent_id, field="parent_id", what="parent station"
        )
        expected = PARENT_TIER[row.tier]
        if expected is not None and parent.tier != expected.value:
            raise InvalidReference(
                "parent_id",
                f"parent station {parent.id!r} is a {parent.tier} station; a "
                f"{row.tier.value} station's parent must be a {expected.value} station",
            )
    if current is not None and row.tier.value != current.tier:
        children = await _count(session, select(Station.id).where(Station.parent_id == current.id))
        if children:
            raise Conflict(
                f"station {current.id!r} has {children} child station(s) that need a "
                f"{current.tier} parent; move them first"
            )


async def check_links(session: AsyncSession, *, kind: Kind, row: BaseModel, current: Any | None) -> None:
    """The records ``row`` points at exist (``current``: the stored record it changes)."""
    if isinstance(row, StationRow):
        await _check_station(session, row, current)
        return
    link = TABLES[kind].link
    if link is None:
        return
    ident = getattr(row, link.field)
    if current is None or ident != getattr(current, link.field):
        await require(session, kind=link.kind, ident=ident, field=link.field, what=link.what)


# --------------------------------------------------------------------------- writes


async def add_record(session: AsyncSession, *, kind: Kind, row: BaseModel) -> Any:
    """Insert a validated, checked row as a new record of ``kind``."""
    record = TABLES[kind].model(**columns(row))
    session.add(record)
    await session.flush()
    return record


async def update_record(session: AsyncSession, *, record: Any, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(record, name, value)
    await session.flush()


async def replace_contacts(
    session: AsyncSession, *, resident: Resident, contacts: Sequence[ContactRow]
) -> None:
    """The whole contact list, in the order families are called in."""
    resident.contacts = [Contact(**columns(c)) for c in sorted(contacts, key=lambda c: c.priority)]
    await session.flush()


async def delete_record(session: AsyncSession, *, kind: Kind, record: Any) -> None:
    """Delete a record nothing refers to; Conflict (deleting nothing) if something does."""
    if kind is Kind.devices:
        events = await _count(session, select(DeviceEvent.id).where(DeviceEvent.device_id == record.id))
        if events:
            raise Conflict(
                f"device {record.id!r} has {events} stored event(s); disable it instead "
                "(PATCH enabled=false) so its history stays"
            )
    found = [
        f"{n} {label}"
        for label, stmt in _referrers(kind, record.id).items()
        if (n := await _count(session, stmt))
    ]
    if found:
        raise Conflict(f"{TABLES[kind].noun} {record.id!r} is still referenced by {', '.join(found)}")
    await session.delete(record)


# --------------------------------------------------------------------------- users


async def list_users(
    session: AsyncSession, *, station_id: str | None, limit: int, offset: int
) -> tuple[Sequence[User], int]:
    """Logins in id order, only those of ``station_id``'s subtree when given."""
    stmt = select(User).order_by(User.id)
    if station_id is not None:
        stmt = stmt.where(User.station_id.in_(await station_subtree(session, station_id=station_id)))
    return await _page(session, stmt, limit=limit, offset=offset)


async def other_active_admins(session: AsyncSession, *, user_id: int) -> int:
    return await _count(
        session,
        select(User.id).where(User.role == Role.admin.value, User.active.is_(True), User.id != user_id),
    )


async def get_user(session: AsyncSession, *, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def delete_user(session: AsyncSession, *, user: User) -> None:
    await session.delete(user)
