"""What a visitor or an operator does to a visit: check in, record the form, cancel.

Each is one transaction that locks the audit chain first (the order every writer keeps),
changes the visit only from an open status, and appends one audit row in the actor's name.

The form may ask for services (kinds of the catalogue, config/services.yaml): saving it
opens one service order per kind for the visit's resident, through the orders service
(routing, service levels, ``order_*`` audit rows), in the same transaction. The order
names the visit (``orders.visit_id``, source ``visit``); (visit_id, kind) is unique, and
the same form sent again by the same visitor (a retry after a lost answer) answers the
visit as it is, without a second order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.orders.catalogue import Catalogue
from dispatcher.orders.models import Order
from dispatcher.orders.schemas import BookingIn
from dispatcher.orders.service import OrderError, create_order
from dispatcher.visits.models import OPEN_STATUSES, Seen, Visit, VisitStatus
from dispatcher.visits.needs import UnknownKinds, requested_kinds

__all__ = ["VisitError", "VisitForm", "cancel", "check_in", "complete", "visit_orders"]


class VisitError(Exception):
    """A refused action: ``code`` is ``not_found``, ``conflict`` or ``invalid`` (the
    form names an unknown service kind); the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class VisitForm:
    """The short structured form filled in at the visit."""

    seen: Seen
    health: str = ""
    living_conditions: str = ""
    needs_found: str = ""
    follow_up_needed: bool = False
    requested_service_kind: str | None = None
    notes: str = ""
    # services the visitor asks for: one order per kind (with requested_service_kind)
    service_kinds: tuple[str, ...] = ()
    service_note: str = ""


async def _open_visit(session: AsyncSession, visit_id: int) -> Visit:
    visit = await session.scalar(select(Visit).where(Visit.id == visit_id))
    if visit is None:
        raise VisitError("not_found", f"no visit {visit_id}")
    if visit.status not in OPEN_STATUSES:
        raise VisitError("conflict", f"visit {visit_id} is already {visit.status}")
    return visit


async def _record(
    session: AsyncSession, visit: Visit, kind: AuditKind, actor: str, now: datetime, detail: dict[str, Any]
) -> None:
    await audit.append(
        session,
        kind=kind.value,
        at=now,
        actor=actor,
        station_id=visit.station_id,
        detail={"visit_id": visit.id, "resident_id": visit.resident_id, "period": visit.period, **detail},
    )


async def check_in(
    session: AsyncSession,
    *,
    visit_id: int,
    actor: str,
    now: datetime,
    lat: float | None = None,
    lon: float | None = None,
) -> Visit:
    """Record the visitor's arrival (and where, when the phone gives it); once only."""
    await audit.lock_head(session)
    visit = await _open_visit(session, visit_id)
    if visit.checkin_at is not None:
        raise VisitError("conflict", f"visit {visit_id} was already checked in")
    visit.checkin_at, visit.checkin_lat, visit.checkin_lon = now, lat, lon
    await _record(session, visit, AuditKind.visit_checked_in, actor, now, {"located": lat is not None})
    return visit


async def visit_orders(session: AsyncSession, visit_id: int) -> list[Order]:
    """The orders a visit's form opened, in the order they were opened."""
    return list(
        (await session.scalars(select(Order).where(Order.visit_id == visit_id).order_by(Order.id))).all()
    )


async def _resent(
    session: AsyncSession, visit: Visit, actor: str, form: VisitForm, kinds: tuple[str, ...]
) -> bool:
    """Whether ``form`` is the one ``actor`` already saved on this (done) visit."""
    if visit.status != VisitStatus.done.value or visit.done_by != actor:
        return False
    saved = (
        visit.seen,
        visit.health,
        visit.living_conditions,
        visit.needs_found,
        visit.follow_up_needed,
        visit.notes,
    )
    sent = (
        form.seen.value,
        form.health,
        form.living_conditions,
        form.needs_found,
        form.follow_up_needed,
        form.notes,
    )
    opened = {o.kind for o in await visit_orders(session, visit.id)}
    return saved == sent and opened == set(kinds)


async def complete(
    session: AsyncSession,
    *,
    visit_id: int,
    actor: str,
    now: datetime,
    form: VisitForm,
    catalogue: Catalogue,
    order_actor: str,
) -> Visit:
    """Record the form and close the visit as done (late when after its due time); open
    an order (in ``order_actor``'s name) for each service kind the form asks for."""
    await audit.lock_head(session)
    try:
        kinds = requested_kinds(form.service_kinds, form.requested_service_kind, catalogue.kinds)
    except UnknownKinds as exc:
        raise VisitError("invalid", str(exc)) from None
    found = await session.scalar(select(Visit).where(Visit.id == visit_id))
    if found is not None and await _resent(session, found, actor, form, kinds):
        return found
    visit = await _open_visit(session, visit_id)
    visit.status = VisitStatus.done.value
    visit.done_at, visit.done_by = now, actor
    visit.seen = form.seen.value
    visit.health, visit.living_conditions, visit.needs_found = (
        form.health,
        form.living_conditions,
        form.needs_found,
    )
    visit.follow_up_needed = form.follow_up_needed
    visit.requested_service_kind = kinds[0] if kinds else None
    visit.notes = form.notes
    opened: list[Order] = []
    for kind in kinds:
        booking = BookingIn(resident_id=visit.resident_id, kind=kind, notes=form.service_note)
        try:
            order, _ = await create_order(
                session,
                catalogue=catalogue,
                booking=booking,
                source="visit",
                actor=order_actor,
                scope=None,  # the caller may act on the visit: its resident's order follows
                client_ref=None,
                now=now,
                visit_id=visit.id,
            )
        except OrderError as exc:
            raise VisitError("not_found" if exc.status == 404 else "conflict", str(exc)) from None
        opened.append(order)
    await _record(
        session,
        visit,
        AuditKind.visit_done,
        actor,
        now,
        {
            "seen": form.seen.value,
            "on_time": now < visit.due_at,
            "follow_up_needed": form.follow_up_needed,
            "requested_service_kind": visit.requested_service_kind,
            "service_kinds": list(kinds),
            "order_ids": [o.id for o in opened],
        },
    )
    return visit


async def cancel(session: AsyncSession, *, visit_id: int, actor: str, now: datetime, reason: str) -> Visit:
    """Cancel an open visit (moved away, in hospital, …); the reason is required."""
    if not reason.strip():
        raise VisitError("conflict", "a cancellation needs a reason")
    await audit.lock_head(session)
    visit = await _open_visit(session, visit_id)
    visit.status = VisitStatus.cancelled.value
    visit.cancel_reason = reason.strip()
    await _record(session, visit, AuditKind.visit_cancelled, actor, now, {"reason": visit.cancel_reason})
    return visit
