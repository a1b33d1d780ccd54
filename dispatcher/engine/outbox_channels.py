"""The outbox's channel path (config/notifications.yaml routes the purpose): who a
notification reaches, its notice, the delivery through the channels, and the record —
one audit row per attempt (channel, provider, receipt status, provider id, error code,
the cost reservation; never a phone number), a ``cost_guard_hit`` row and an alert to the
area's supervisors the first time a cap stops a send, the page's delivery, and the outbox row itself with the same retry and backoff as every
other notification (dispatcher/engine/outbox_loop.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.clock import Clock
from carecall.core.one_of import one_of
from device_gateway.models import DeviceEvent
from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.auth.models import User
from dispatcher.calls.models import Call, CallEvent
from dispatcher.calls.outbox import queue_supervisor_alert
from dispatcher.engine import handling
from dispatcher.notifications.channel_notifier import ChannelNotifier
from dispatcher.notifications.channels.delivery import Attempt, DeliveryOutcome
from dispatcher.notifications.channels.policy import OutcomeStatus
from dispatcher.notifications.compose import (
    COST_GUARD_PURPOSE,
    CallFacts,
    Person,
    compose,
    cost_alert_body,
    masked_target,
    recipient,
    target_person,
)
from dispatcher.notifications.cost_ledger import SharedCostCounters, alert_key
from dispatcher.notifications.models import Notification, NotificationStatus
from dispatcher.paging.models import Page
from dispatcher.registry.models import Home, Resident, Staff

log = structlog.get_logger("carecall.notify")


@dataclass
class ChannelDelivery:
    """One outbox round of one notification through the channels."""

    steps: list[Attempt] = field(default_factory=list)
    outcome: DeliveryOutcome | None = None
    error: Exception | None = None
    ms: float = 0.0
    # not sent: the page it is about was answered (or withdrawn, or timed out) first
    page_outcome: str | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome is not None and self.outcome.status is OutcomeStatus.delivered


async def people_of(session: AsyncSession, targets: Iterable[str]) -> dict[str, Person]:
    """Where each target is reached: ``staff:<id>`` and ``user:<login>`` from the registry
    (a user through their staff record), the rest from the target itself."""
    targets = set(targets)
    staff_ids = {t.removeprefix("staff:") for t in targets if t.startswith("staff:")}
    logins = {t.removeprefix("user:") for t in targets if t.startswith("user:")}
    users = {
        u.username: u
        for u in (await session.scalars(select(User).where(one_of(User.username, logins)))).all()
    }
    staff_ids |= {u.staff_id for u in users.values() if u.staff_id}
    staff = {s.id: s for s in (await session.scalars(select(Staff).where(one_of(Staff.id, staff_ids)))).all()}
    people: dict[str, Person] = {}
    for t in targets:
        kind, _, ref = t.partition(":")
        if kind == "staff" and ref in staff:
            s = staff[ref]
            people[t] = Person(
                person_id=t, name=s.name, phone=s.phone, group=s.station_id, channels=s.channels or ""
            )
        elif kind == "user" and ref in users:
            u = users[ref]
            s_row = staff.get(u.staff_id or "")
            people[t] = Person(
                person_id=t,
                name=u.display_name or u.username,
                phone=s_row.phone if s_row else "",
                group=u.station_id,
                channels=(s_row.channels or "") if s_row else "",
            )
        else:
            people[t] = target_person(t)
    return people


def subject(n: Notification) -> dict[str, int]:
    """What a row without a call is about, for its audit rows (``order_id`` / ``visit_id``)."""
    if n.call_id is not None:
        return {}
    return {k: v for k, v in (("order_id", n.order_id), ("visit_id", n.visit_id)) if v is not None}


def station_of(n: Notification) -> str | None:
    """The station a row without a call belongs to (its body's ``station_id``); a call's
    rows stay as they were (the call names its station)."""
    if n.call_id is not None:
        return None
    sid = (n.body or {}).get("station_id")
    return sid if isinstance(sid, str) else None


async def facts_of(session: AsyncSession, call_ids: Iterable[int | None]) -> dict[int, CallFacts]:
    """Each call's resident, address and device event types (rows without a call: none)."""
    ids = {c for c in call_ids if c is not None}
    rows = (
        await session.execute(
            select(Call.id, Home.address, Resident.name)
            .join(Home, Home.id == Call.home_id)
            .outerjoin(Resident, Resident.id == Call.resident_id)
            .where(one_of(Call.id, ids))
        )
    ).all()
    events: dict[int, set[str]] = {}
    for call_id, kind in (
        await session.execute(
            select(CallEvent.call_id, DeviceEvent.type)
            .join(DeviceEvent, DeviceEvent.id == CallEvent.event_pk)
            .where(one_of(CallEvent.call_id, ids))
        )
    ).all():
        events.setdefault(call_id, set()).add(kind)
    return {
        call_id: CallFacts(
            resident=resident or "", address=address or "", event_types=tuple(sorted(events.get(call_id, ())))
        )
        for call_id, address, resident in rows
    }


async def send_one(
    notifier: ChannelNotifier,
    n: Notification,
    people: dict[str, Person],
    facts: dict[int, CallFacts],
    clock: Clock,
    page_outcome: str | None = None,
) -> ChannelDelivery:
    """Compose and deliver one notification. Every attempt is kept as it happens, so a
    failure midway (a bad body, a bug) still leaves the attempts made for the record. A
    page no longer waiting for an answer (a retry after it was taken or withdrawn) is not
    sent."""
    result = ChannelDelivery()
    if page_outcome is not None and page_outcome != "pending":
        result.page_outcome = page_outcome
        return result
    t0 = time.monotonic()

    async def keep(step: Attempt) -> None:
        result.steps.append(step)

    try:
        person = people.get(n.target) or target_person(n.target)
        body = dict(n.body or {})
        if not body.get("channels") and person.channels:
            body["channels"] = person.channels  # their own order (staff.channels)
        notice = compose(
            notification_id=n.id,
            call_id=n.call_id,
            purpose=n.purpose,
            body=body,
            facts=facts.get(n.call_id, CallFacts()) if n.call_id is not None else CallFacts(),
            to=recipient(person),
        )
        result.outcome = await notifier.deliver(
            notice, n.purpose, on_attempt=keep, clock=lambda: clock.now().timestamp()
        )
    except Exception as exc:
        log.error("dispatcher.handling_failed", task="outbox", notification_id=n.id, exc_info=exc)
        result.error = exc
    result.ms = (time.monotonic() - t0) * 1000
    return result


async def send_all(
    session: AsyncSession, notifier: ChannelNotifier, rows: Sequence[Notification], clock: Clock
) -> list[ChannelDelivery]:
    people = await people_of(session, (n.target for n in rows))
    facts = await facts_of(session, (n.call_id for n in rows))
    page_ids = {pid for n in rows if isinstance(pid := _page_id(n), int)}
    outcomes = dict(
        (await session.execute(select(Page.id, Page.outcome).where(one_of(Page.id, page_ids)))).all()
    )
    return list(
        await asyncio.gather(
            *(send_one(notifier, n, people, facts, clock, outcomes.get(_page_id(n) or -1)) for n in rows)
        )
    )


def _page_id(n: Notification) -> int | None:
    page_id = (n.body or {}).get("page_id") if n.purpose == "page" else None
    return page_id if isinstance(page_id, int) else None


def _step_detail(n: Notification, step: Attempt) -> dict[str, Any]:
    r = step.receipt
    return {
        "notification_id": n.id,
        "purpose": n.purpose,
        "target": masked_target(n.target),
        "channel": step.channel,
        "kind": step.kind.value,
        "provider": r.provider if r else None,
        "status": r.status.value if r else "blocked_by_cost_guard",
        "provider_id": r.provider_id if r else None,
        "error_code": r.error_code if r else "cost_guard",
        "try": step.number,
        "decision": step.decision,
        **({"reservation": step.reservation} if step.reservation else {}),
        **({"ms": round(r.elapsed_ms, 1)} if r else {}),
    }


def _why_not(result: ChannelDelivery) -> str:
    if result.page_outcome is not None:
        return f"not sent: the page was {result.page_outcome}"
    if result.error is not None:
        return str(result.error)[:500] or type(result.error).__name__
    assert result.outcome is not None
    last = result.outcome.steps[-1] if result.outcome.steps else None
    code = last.receipt.error_code if last and last.receipt else None
    return f"{result.outcome.status.value}" + (f": {code}" if code else "")


async def record(
    session: AsyncSession,
    *,
    notifier: ChannelNotifier,
    n: Notification,
    result: ChannelDelivery,
    now: datetime,
    actor: str,
) -> bool:
    """The record of one round (see the module's doc); True when delivered."""
    attempts = n.attempts + 1
    final = not result.delivered and (attempts >= handling.MAX_ATTEMPTS or result.page_outcome is not None)
    for step in result.steps:
        sent = step.receipt is not None and step.receipt.delivered
        kind = AuditKind.notification_sent if sent else AuditKind.notification_failed
        detail = {**_step_detail(n, step), **subject(n), "attempt": attempts}
        if not sent and step is result.steps[-1]:
            detail["final"] = final
        await audit.append(
            session,
            kind=kind.value,
            at=now,
            actor=actor,
            call_id=n.call_id,
            station_id=station_of(n),
            detail=detail,
        )
    if not result.steps:  # nothing tried: a body that could not be composed, a page answered
        await audit.append(
            session,
            kind=AuditKind.notification_failed.value,
            at=now,
            actor=actor,
            call_id=n.call_id,
            station_id=station_of(n),
            detail={
                "notification_id": n.id,
                "purpose": n.purpose,
                "target": masked_target(n.target),
                **subject(n),
                "attempt": attempts,
                "final": final,
                "error": _why_not(result)[:300],
            },
        )
    values: dict[str, Any] = {"attempts": attempts}
    if result.delivered:
        values["status"] = NotificationStatus.sent.value
    else:
        values |= {
            "status": (NotificationStatus.failed if final else NotificationStatus.pending).value,
            "next_attempt_at": now + timedelta(seconds=min(2**attempts, 300)),
            "last_error": _why_not(result),
        }
    await session.execute(update(Notification).where(Notification.id == n.id).values(**values))
    await _page_delivery(session, n=n, result=result, final=final)
    return result.delivered


async def cost_alerts(
    session: AsyncSession,
    *,
    notifier: ChannelNotifier,
    n: Notification,
    result: ChannelDelivery,
    now: datetime,
    actor: str,
) -> int:
    """The cost alerts of one round not raised before: each a ``cost_guard_hit`` row and a
    supervisor alert (outbox purpose ``cost_guard``) to the supervisors of the call's area
    (dispatcher/calls/outbox.py). With the shared budget each is claimed in a
    transaction of its own, so across copies it is raised once per call (per-call cap) or
    clock hour (hourly cap); call it before the round writes anything (SQLite has one
    writer). Returns how many were raised."""
    alerts = result.outcome.cost_alerts if result.outcome is not None else []
    shared = notifier.counters if isinstance(notifier.counters, SharedCostCounters) else None
    raised = 0
    for alert in notifier.new_alerts(alerts, now.timestamp()):
        detail = {
            **alert.model_dump(mode="json"),
            "notification_id": n.id,
            "purpose": n.purpose,
            **subject(n),
        }
        body = cost_alert_body(
            kind=alert.kind.value,
            scope=alert.scope.value,
            used=alert.used,
            limit=alert.limit,
            channel=alert.channel,
        )

        async def write(
            s: AsyncSession, detail: dict[str, Any] = detail, body: dict[str, Any] = body
        ) -> None:
            await audit.append(
                s, kind=AuditKind.cost_guard_hit.value, at=now, actor=actor, call_id=n.call_id, detail=detail
            )
            await queue_supervisor_alert(
                s,
                call_id=n.call_id,
                purpose=COST_GUARD_PURPOSE,
                body=body,
                channel=n.channel,
                now=now,
                actor=actor,
                order_id=n.order_id,
                visit_id=n.visit_id,
                station_id=station_of(n),
            )

        key = alert_key(alert.kind.value, alert.scope.value, alert.call_id, now.timestamp())
        claimed: bool | None = None
        if shared is not None:
            try:
                claimed = await shared.claim_alert(key, write)
            except Exception as exc:  # a lock conflict, the store: raise it with the round
                log.warning("notify.cost_alert_claim_failed", call_id=n.call_id, error=type(exc).__name__)
        if claimed is False:
            continue
        if claimed is None:
            await write(session)
        log.warning("notify.cost_guard_hit", **detail)
        raised += 1
    return raised


async def _page_delivery(
    session: AsyncSession, *, n: Notification, result: ChannelDelivery, final: bool
) -> None:
    """A page's notification tells its page how it went: delivered (and by which kind of
    channel), failed once the outbox gives up, and the last receipt meanwhile."""
    page_id = _page_id(n)
    if page_id is None:
        return
    values: dict[str, Any]
    outcome = result.outcome
    if result.delivered and outcome is not None:
        step = outcome.steps[-1]
        receipt = step.receipt
        provider_id = receipt.provider_id if receipt and receipt.provider_id else ""
        values = {
            "delivery": "delivered",
            "channel": step.kind.value,
            "receipt": f"{step.channel} {provider_id}".strip()[:200],
        }
    else:
        values = {"receipt": _why_not(result)[:200]}
        if final and result.page_outcome is None:
            values["delivery"] = "failed"
    await session.execute(update(Page).where(Page.id == page_id).values(**values))
