"""What a visitor or an operator does to a visit: check in, record the form, cancel.

Each is one transaction that locks the audit chain first (the order every writer keeps),
changes the visit only from an open status, and appends one audit row in the actor's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.visits.models import OPEN_STATUSES, Seen, Visit, VisitStatus

__all__ = ["VisitError", "VisitForm", "cancel", "check_in", "complete"]


class VisitError(Exception):
    """A refused action: ``code`` is ``not_found`` or ``conflict``; the message says why."""

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


async def complete(
    session: AsyncSession, *, visit_id: int, actor: str, now: datetime, form: VisitForm
) -> Visit:
    """Record the form and close the visit as done (late when after its due time)."""
    await audit.lock_head(session)
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
    visit.requested_service_kind = form.requested_service_kind
    visit.notes = form.notes
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
            "requested_service_kind": form.requested_service_kind,
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
