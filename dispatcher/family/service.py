"""What the family's link shows, and their answer on the call's timeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from device_gateway.models import DeviceEvent
from dispatcher.audit import service as audit
from dispatcher.audit.models import AuditRow
from dispatcher.calls.actions import lock_call
from dispatcher.calls.contacts import CONTACT_ANSWERED, ladder_timeout, tell_next_contact
from dispatcher.calls.context import DispatchContext, Outcome
from dispatcher.calls.ladder import ADVANCES_AT_ONCE
from dispatcher.calls.models import OPEN_STATUSES, Assignment, Call, CallEvent
from dispatcher.family.link import LinkClaims
from dispatcher.registry.models import Contact, Home, Resident, Staff, Station

ANSWERS = ("going", "cannot", "call_me")


class FamilyError(StrEnum):
    unknown = "unknown"  # no such call or contact, or the contact is not this call's
    closed = "closed"  # the call is over: the link has done its job


@dataclass(frozen=True)
class CallView:
    status: str
    event_types: list[str]
    resident_name: str
    address: str
    station_name: str
    opened_local: str
    responders: list[str]


async def _scoped(session: AsyncSession, claims: LinkClaims) -> tuple[Call, Contact] | FamilyError:
    call = await session.get(Call, claims.call_id)
    contact = await session.get(Contact, claims.contact_id)
    if call is None or contact is None or call.resident_id is None or contact.resident_id != call.resident_id:
        return FamilyError.unknown
    if call.status not in {str(s) for s in OPEN_STATUSES}:
        return FamilyError.closed
    return call, contact


async def view_of(session: AsyncSession, *, claims: LinkClaims) -> CallView | FamilyError:
    scoped = await _scoped(session, claims)
    if isinstance(scoped, FamilyError):
        return scoped
    call, _contact = scoped
    resident = await session.get(Resident, call.resident_id) if call.resident_id else None
    home = await session.get(Home, call.home_id)
    station = await session.get(Station, call.station_id) if call.station_id else None
    types = sorted(
        set(
            (
                await session.execute(
                    select(DeviceEvent.type)
                    .join(CallEvent, CallEvent.event_pk == DeviceEvent.id)
                    .where(CallEvent.call_id == call.id)
                )
            ).scalars()
        )
    )
    opened = await session.scalar(
        select(AuditRow.at).where(AuditRow.call_id == call.id, AuditRow.kind == "call_opened").limit(1)
    )
    zone = ZoneInfo(station.timezone if station else "Asia/Shanghai")
    responders = list(
        (
            await session.execute(
                select(Staff.name)
                .join(Assignment, Assignment.staff_id == Staff.id)
                .where(Assignment.call_id == call.id, Assignment.active.is_(True))
                .order_by(Staff.name)
            )
        ).scalars()
    )
    return CallView(
        status=call.status,
        event_types=types,
        resident_name=resident.name if resident else "",
        address=home.address if home else "",
        station_name=station.name if station else "",
        opened_local=opened.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        if isinstance(opened, datetime)
        else "",
        responders=responders,
    )


async def record_answer(
    session: AsyncSession,
    *,
    claims: LinkClaims,
    answer: str,
    now: datetime,
    ctx: DispatchContext | None = None,
    out: Outcome | None = None,
) -> AuditRow | FamilyError:
    """One audit row on the call's timeline, naming the contact (never their number).

    With ``ctx``, an answer that ends the contact's turn ("cannot", "call_me") moves the
    contact ladder on at once: the next contact is told in the same transaction, under
    the call's row lock (so the escalation step firing meanwhile cannot tell them twice).
    """
    await lock_call(session, call_id=claims.call_id)
    scoped = await _scoped(session, claims)
    if isinstance(scoped, FamilyError):
        return scoped
    call, contact = scoped
    row = await _append_answer(session, call, contact, answer=answer, now=now)
    if ctx is not None and answer in ADVANCES_AT_ONCE:
        await tell_next_contact(
            session,
            call,
            ctx=ctx,
            out=out if out is not None else Outcome(),
            actor=f"contact:{contact.id}",
            now=now,
            contact_timeout=ladder_timeout(call.policy),
        )
    return row


async def _append_answer(
    session: AsyncSession, call: Call, contact: Contact, *, answer: str, now: datetime
) -> AuditRow:
    return await audit.append(
        session,
        kind=CONTACT_ANSWERED,
        at=now,
        actor=f"contact:{contact.id}",
        call_id=call.id,
        station_id=call.station_id,
        detail={
            "answer": answer,
            "contact_id": contact.id,
            "name": contact.name,
            "relation": contact.relation,
        },
    )
