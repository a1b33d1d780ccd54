"""What a responder's phone shows: their pages and the calls they own, with the essentials.

Only calls this person was paged for (still pending or accepted) or is assigned to are
returned; every read of a resident's details is logged by the caller (record_reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from device_gateway.models import DeviceEvent
from dispatcher.calls.models import OPEN_STATUSES, Assignment, Call, CallEvent
from dispatcher.paging.models import Page
from dispatcher.paging.policy import PageOutcome
from dispatcher.registry.models import Contact, Home, Resident, Staff, Station


class ContactOut(BaseModel):
    name: str
    relation: str
    phone: str


class ResidentOut(BaseModel):
    id: str
    name: str
    sex: str
    age: int
    capacity_level: int
    living_alone: bool
    conditions: list[str]
    notes: str


class CardOut(BaseModel):
    """One call on the phone: a page to answer, or a call this person owns."""

    call_id: int
    status: str
    priority: str
    event_class: str
    event_types: list[str]
    first_event_at: datetime | None
    page_id: int | None
    page_outcome: str | None
    paged_at: datetime | None
    assignment_state: str | None  # dispatched en_route on_scene (None: not yet assigned)
    station_name: str
    address: str
    lat: float
    lon: float
    resident: ResidentOut | None
    contacts: list[ContactOut]


class MeOut(BaseModel):
    staff_id: str
    name: str
    role: str
    station_id: str
    station_name: str
    availability: str


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


async def my_cards(session: AsyncSession, *, staff_id: str, today: date) -> list[CardOut]:
    """Pending or accepted pages of open calls, and open calls this person is assigned to."""
    open_statuses = [str(s) for s in OPEN_STATUSES]
    pages = (
        (
            await session.execute(
                select(Page)
                .join(Call, Call.id == Page.call_id)
                .where(
                    Page.staff_id == staff_id,
                    Page.outcome.in_([PageOutcome.pending, PageOutcome.accepted]),
                    Call.status.in_(open_statuses),
                )
                .order_by(Page.paged_at.desc(), Page.id.desc())
            )
        )
        .scalars()
        .all()
    )
    assignments = (
        (
            await session.execute(
                select(Assignment)
                .join(Call, Call.id == Assignment.call_id)
                .where(
                    Assignment.staff_id == staff_id,
                    Assignment.active.is_(True),
                    Call.status.in_(open_statuses),
                )
            )
        )
        .scalars()
        .all()
    )
    page_of: dict[int, Page] = {}
    for page in pages:
        page_of.setdefault(page.call_id, page)  # the latest page of each call
    state_of = {a.call_id: a.state for a in assignments}
    call_ids = sorted(set(page_of) | set(state_of), reverse=True)
    if not call_ids:
        return []
    calls = (await session.execute(select(Call).where(Call.id.in_(call_ids)))).scalars().all()
    return await _cards(session, calls, page_of, state_of, today)


async def card_for(session: AsyncSession, *, staff_id: str, call_id: int, today: date) -> CardOut | None:
    for card in await my_cards(session, staff_id=staff_id, today=today):
        if card.call_id == call_id:
            return card
    return None


async def _cards(
    session: AsyncSession,
    calls: Sequence[Call],
    page_of: dict[int, Page],
    state_of: dict[int, str],
    today: date,
) -> list[CardOut]:
    homes = {
        h.id: h
        for h in (
            await session.execute(select(Home).where(Home.id.in_({c.home_id for c in calls})))
        ).scalars()
    }
    stations = {
        s.id: s
        for s in (
            await session.execute(
                select(Station).where(Station.id.in_({c.station_id for c in calls if c.station_id}))
            )
        ).scalars()
    }
    resident_ids = {c.resident_id for c in calls if c.resident_id}
    residents = {
        r.id: r
        for r in (await session.execute(select(Resident).where(Resident.id.in_(resident_ids)))).scalars()
    }
    contacts: dict[str, list[ContactOut]] = {}
    for c in (
        await session.execute(
            select(Contact)
            .where(Contact.resident_id.in_(resident_ids))
            .order_by(Contact.priority, Contact.id)
        )
    ).scalars():
        contacts.setdefault(c.resident_id, []).append(
            ContactOut(name=c.name, relation=c.relation, phone=c.phone)
        )
    events: dict[int, list[tuple[str, datetime]]] = {}
    for call_id, kind, at in (
        await session.execute(
            select(CallEvent.call_id, DeviceEvent.type, DeviceEvent.received_at)
            .join(DeviceEvent, DeviceEvent.id == CallEvent.event_pk)
            .where(CallEvent.call_id.in_([c.id for c in calls]))
            .order_by(DeviceEvent.received_at)
        )
    ).all():
        events.setdefault(call_id, []).append((kind, at))
    cards = []
    for call in sorted(calls, key=lambda c: (c.priority, -c.id)):
        home = homes.get(call.home_id)
        resident = residents.get(call.resident_id or "")
        page = page_of.get(call.id)
        seen = events.get(call.id, [])
        cards.append(
            CardOut(
                call_id=call.id,
                status=call.status,
                priority=call.priority,
                event_class=call.event_class,
                event_types=sorted({k for k, _ in seen}),
                first_event_at=seen[0][1] if seen else None,
                page_id=page.id if page else None,
                page_outcome=page.outcome if page else None,
                paged_at=page.paged_at if page else None,
                assignment_state=state_of.get(call.id),
                station_name=stations[call.station_id].name if call.station_id in stations else "",
                address=home.address if home else "",
                lat=call.lat,
                lon=call.lon,
                resident=_resident(resident, today) if resident else None,
                contacts=contacts.get(resident.id, []) if resident else [],
            )
        )
    return cards


def _resident(r: Resident, today: date) -> ResidentOut:
    return ResidentOut(
        id=r.id,
        name=r.name,
        sex=r.sex,
        age=age_on(r.birth_date, today),
        capacity_level=r.capacity_level,
        living_alone=r.living_alone,
        conditions=list(r.conditions or []),
        notes=r.notes,
    )


async def me(session: AsyncSession, *, staff_id: str) -> MeOut | None:
    row = (
        await session.execute(
            select(Staff, Station.name)
            .join(Station, Station.id == Staff.station_id)
            .where(Staff.id == staff_id)
        )
    ).first()
    if row is None:
        return None
    staff, station_name = row
    availability = "off_duty" if not staff.on_duty else "busy" if staff.busy else "on_duty"
    return MeOut(
        staff_id=staff.id,
        name=staff.name,
        role=staff.role,
        station_id=staff.station_id,
        station_name=station_name,
        availability=availability,
    )


async def is_mine(session: AsyncSession, *, staff_id: str, call_id: int) -> bool:
    """Paged (pending/accepted) for, or assigned to, this call."""
    found = await session.scalar(
        select(Call.id)
        .outerjoin(Page, (Page.call_id == Call.id) & (Page.staff_id == staff_id))
        .outerjoin(Assignment, (Assignment.call_id == Call.id) & (Assignment.staff_id == staff_id))
        .where(
            Call.id == call_id,
            or_(
                Page.outcome.in_([PageOutcome.pending, PageOutcome.accepted]),
                Assignment.active.is_(True),
            ),
        )
        .limit(1)
    )
    return found is not None


def summary(cards: Sequence[CardOut]) -> dict[str, Any]:
    """Counts for the header badge (no personal data)."""
    return {
        "pending": sum(1 for c in cards if c.page_outcome == PageOutcome.pending),
        "owned": sum(
            1 for c in cards if c.assignment_state is not None or c.page_outcome == PageOutcome.accepted
        ),
    }
