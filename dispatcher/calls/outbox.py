"""The outbox: notifications and device acks written in the caller's transaction, sent
after commit by a dispatcher (dispatcher/engine/outbox_loop.py), so a message written in an API
process is still sent after a crash.

Supervisor alerts (the escalation step ``alert_supervisor`` and the cost guard's alert)
are addressed here, both the same way: the supervisors of the call's area
(:func:`area_supervisors`; the rule is dispatcher/notifications/area.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.one_of import one_of
from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.auth.models import Role, User
from dispatcher.calls import bulk
from dispatcher.calls.context import DeviceNotice, DispatchContext, Outcome
from dispatcher.calls.models import Call
from dispatcher.notifications.area import ChainLink, SupervisorPlan, plan_supervisors
from dispatcher.notifications.models import Notification
from dispatcher.registry.models import Home, Station

log = structlog.get_logger("carecall.notify")

__all__ = [
    "area_of",
    "area_supervisors",
    "queue_device_notices",
    "queue_notification",
    "queue_supervisor_alert",
    "record_unassigned",
]


def _pending_row(
    *, call_id: int | None, channel: str, purpose: str, target: str, body: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "channel": channel,
        "purpose": purpose,
        "target": target,
        "body": dict(body),
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _pending(
    *,
    call_id: int | None,
    channel: str,
    purpose: str,
    target: str,
    body: Mapping[str, Any],
    now: datetime,
    order_id: int | None = None,
    visit_id: int | None = None,
) -> Notification:
    return Notification(
        **_pending_row(call_id=call_id, channel=channel, purpose=purpose, target=target, body=body, now=now),
        order_id=order_id,
        visit_id=visit_id,
    )


async def queue_notification(
    session: AsyncSession,
    call: Call,
    *,
    purpose: str,
    target: str,
    ctx: DispatchContext,
    body: Mapping[str, Any],
    out: Outcome,
    now: datetime,
) -> None:
    """A message about the call for a station, a person or a supervisor (one INSERT per
    table at the end of a loop's transaction, dispatcher.calls.bulk)."""
    bulk.add(
        session,
        Notification,
        _pending_row(
            call_id=call.id,
            channel=ctx.notifier_channel,
            purpose=purpose,
            target=target,
            body={**body, "call_id": call.id, "priority": call.priority, "station_id": call.station_id},
            now=now,
        ),
    )
    out.notifications += 1


async def queue_device_notices(
    session: AsyncSession, *, notices: Sequence[DeviceNotice], now: datetime
) -> None:
    """Device acks go through the same outbox as notifications, so one written in an API
    process is still published (by a dispatcher) after a crash."""
    for n in notices:
        bulk.add(
            session,
            Notification,
            _pending_row(
                call_id=n.call_id,
                channel="mqtt",
                purpose="device_ack",
                target=f"device:{n.device_id}",
                body={"event_id": n.event_id, "state": n.state},
                now=now,
            ),
        )


# --------------------------------------------------------------------------- supervisors

MAX_DEPTH = 10
NO_SUPERVISOR = "no supervisor for the call's area: sent to the county centre's duty group"


async def area_of(session: AsyncSession, call_id: int) -> str | None:
    """The station of the call's area: its home's station (where the resident lives), not
    the centre the call was escalated to; the call's station when the home has none."""
    row = (
        await session.execute(
            select(Home.station_id, Call.station_id)
            .join(Home, Home.id == Call.home_id)
            .where(Call.id == call_id)
        )
    ).first()
    if row is None:
        return None
    home_station, call_station = row
    return home_station or call_station


async def area_supervisors(session: AsyncSession, *, station_id: str | None) -> SupervisorPlan:
    """Who a supervisor alert about a call at ``station_id`` goes to (see area.py)."""
    chain: list[ChainLink] = []
    sid = station_id
    while sid is not None and len(chain) < MAX_DEPTH:
        row = (
            await session.execute(select(Station.tier, Station.parent_id).where(Station.id == sid))
        ).first()
        if row is None:
            break
        chain.append(ChainLink(sid, row.tier))
        sid = row.parent_id
    counties: list[str] = []
    if not any(c.tier == "county" for c in chain):
        counties = list(await session.scalars(select(Station.id).where(Station.tier == "county")))
    ids = [c.station_id for c in chain] + counties
    supervisors: dict[str, list[str]] = {}
    if ids:
        rows = await session.execute(
            select(User.station_id, User.username).where(
                User.role == Role.supervisor.value, User.active.is_(True), one_of(User.station_id, ids)
            )
        )
        for sid_, username in rows.all():
            if sid_ is not None:
                supervisors.setdefault(sid_, []).append(username)
    return plan_supervisors(chain, supervisors, counties)


async def record_unassigned(
    session: AsyncSession,
    plan: SupervisorPlan,
    *,
    call_id: int | None,
    station_id: str | None,
    purpose: str,
    now: datetime,
    actor: str,
) -> None:
    """Nobody qualified: a failed notification in the call's record (the timeline and the
    failure counts show it) naming where the alert went instead."""
    if not plan.unassigned:
        return
    log.warning("notify.no_supervisor", call_id=call_id, station_id=station_id, purpose=purpose)
    await audit.append(
        session,
        kind=AuditKind.notification_failed.value,
        at=now,
        actor=actor,
        call_id=call_id,
        detail={
            "purpose": purpose,
            "target": "supervisor",
            "error": NO_SUPERVISOR if plan.targets else "no supervisor and no county centre",
            "error_code": "no_supervisor",
            "fallback": list(plan.targets),
            "final": not plan.targets,
        },
    )


async def queue_supervisor_alert(
    session: AsyncSession,
    *,
    call_id: int | None,
    purpose: str,
    body: Mapping[str, Any],
    channel: str,
    now: datetime,
    actor: str,
    order_id: int | None = None,
    visit_id: int | None = None,
    station_id: str | None = None,
) -> SupervisorPlan:
    """One outbox notification per supervisor of the call's area (``user:<login>``: their own
    channel order, else the supervisor route). Nobody qualifying is recorded as a failed
    notification (the call's timeline and the failure counts show it) and the alert goes
    to the county centre's duty group instead; with no county centre either, the record
    is all there is, and it says so. Without a call (the cost guard stopped an order's or
    a visit's page) the area is ``station_id`` and the alert names that order or visit."""
    if call_id is not None:
        station_id = await area_of(session, call_id)
    plan = await area_supervisors(session, station_id=station_id)
    await record_unassigned(
        session, plan, call_id=call_id, station_id=station_id, purpose=purpose, now=now, actor=actor
    )
    for target in plan.targets:
        session.add(
            _pending(
                call_id=call_id,
                channel=channel,
                purpose=purpose,
                target=target,
                body={**body, "call_id": call_id, "station_id": station_id},
                now=now,
                order_id=order_id if call_id is None else None,
                visit_id=visit_id if call_id is None else None,
            )
        )
    return plan
