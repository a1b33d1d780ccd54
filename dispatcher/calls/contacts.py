"""The contact ladder's shell: who of the resident's contacts was told (the outbox's
``notify_contact`` rows), what they answered (``contact_answered`` rows on the call's
timeline), and telling the next one when dispatcher/calls/ladder.py says so.

Run by the ``notify_contacts`` escalation step each time it fires, and by the family page
right after an answer, in the caller's transaction with the call's row locked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.audit.chain import AuditKind
from dispatcher.audit.models import AuditRow
from dispatcher.calls.context import DispatchContext, Outcome, record
from dispatcher.calls.ladder import LadderDecision, LadderState, next_contact
from dispatcher.calls.models import Call
from dispatcher.calls.outbox import queue_notification
from dispatcher.notifications.models import Notification
from dispatcher.registry.models import Contact

__all__ = ["CONTACT_ANSWERED", "DEFAULT_TIMEOUT_S", "NOTIFY_CONTACT", "ladder_timeout", "tell_next_contact"]

CONTACT_ANSWERED = "contact_answered"
NOTIFY_CONTACT = "notify_contact"
DEFAULT_TIMEOUT_S = 120.0


def ladder_timeout(policy: dict[str, Any] | None) -> timedelta:
    """The contact timeout of a call's policy snapshot (its notify_contacts step)."""
    for step in (policy or {}).get("steps") or ():
        if isinstance(step, dict) and step.get("action") == "notify_contacts":
            ladder = step.get("contacts") or {}
            return timedelta(seconds=float(ladder.get("timeout_s", DEFAULT_TIMEOUT_S)))
    return timedelta(seconds=DEFAULT_TIMEOUT_S)


async def _told(session: AsyncSession, call_id: int, contacts: list[Contact]) -> dict[int, datetime]:
    """Contact id -> when first told. A row written before the ladder (no ``contact_id``
    in its body: every contact was told at once) is matched by its target."""
    by_target = {f"phone:{c.phone}": c.id for c in contacts}
    rows = await session.execute(
        select(Notification.body, Notification.target, Notification.created_at)
        .where(Notification.call_id == call_id, Notification.purpose == NOTIFY_CONTACT)
        .order_by(Notification.id)
    )
    told: dict[int, datetime] = {}
    for body, target, at in rows:
        cid = body.get("contact_id") if isinstance(body, dict) else None
        if not isinstance(cid, int):
            cid = by_target.get(target)
        if cid is not None and cid not in told:
            told[cid] = at
    return told


async def _answers(session: AsyncSession, call_id: int) -> dict[int, str]:
    rows = await session.scalars(
        select(AuditRow.detail)
        .where(AuditRow.call_id == call_id, AuditRow.kind == CONTACT_ANSWERED)
        .order_by(AuditRow.seq)
    )
    answers: dict[int, str] = {}
    for detail in rows:  # the latest answer of each contact counts
        cid, answer = detail.get("contact_id"), detail.get("answer")
        if isinstance(cid, int) and isinstance(answer, str):
            answers[cid] = answer
    return answers


async def tell_next_contact(
    session: AsyncSession,
    call: Call,
    *,
    ctx: DispatchContext,
    out: Outcome,
    actor: str,
    now: datetime,
    contact_timeout: timedelta,
    base: dict[str, Any] | None = None,
) -> LadderDecision:
    """Tell the next contact of the ladder, if it says so: one outbox row with their link,
    one ``alerted`` row on the timeline (naming the contact, never their number)."""
    contacts = (
        list(
            (
                await session.scalars(
                    select(Contact)
                    .where(Contact.resident_id == call.resident_id)
                    .order_by(Contact.priority, Contact.id)
                )
            ).all()
        )
        if call.resident_id
        else []
    )
    decision = next_contact(
        [c.id for c in contacts],
        await _told(session, call.id, contacts),
        await _answers(session, call.id),
        timeout=contact_timeout,
        now=now,
    )
    if decision.state is not LadderState.tell:
        return decision
    c = next(x for x in contacts if x.id == decision.contact_id)
    extra = dict(base or {})
    detail = {
        **extra,
        "purpose": "notify_contacts",
        "contacts": len(contacts),
        "contact_id": c.id,
        "name": c.name,
        "order": c.priority,
    }
    await record(session, call, AuditKind.alerted, at=now, actor=actor, detail=detail)
    body: dict[str, Any] = {
        **extra,
        "contact_id": c.id,
        "name": c.name,
        "relation": c.relation,
        "order": c.priority,
    }
    if c.channels.strip():  # their own channel order (contacts.channels) wins over the route's
        body["channels"] = c.channels.strip()
    link: Callable[[int, int, datetime], str] | None = ctx.family_link
    if link is not None:  # their one-page view of the call (dispatcher/family)
        body["link"] = link(call.id, c.id, now)
    await queue_notification(
        session, call, purpose=NOTIFY_CONTACT, target=f"phone:{c.phone}", ctx=ctx, body=body, out=out, now=now
    )
    return decision
