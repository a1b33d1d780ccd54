"""Pages about things that are not calls — a service order's missed level
(dispatcher/orders/breaches.py) and a missed welfare visit (dispatcher/visits/generation.py)
— written to the same outbox as call notifications, in the caller's transaction: the
dispatchers deliver and retry them like any notification, and a crash after the commit
cannot lose one. They name their order or visit, never a call; the outbox delivers call
rows first when both wait (dispatcher/engine/outbox_loop.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.notifications.models import Notification, NotificationStatus

__all__ = ["ORDER_BREACH", "SERVICE_PURPOSES", "VISIT_MISSED", "queue_service_page"]

ORDER_BREACH = "order_breach"  # a service order missed a level
VISIT_MISSED = "visit_missed"  # a welfare visit was missed
SERVICE_PURPOSES = (ORDER_BREACH, VISIT_MISSED)


def queue_service_page(
    session: AsyncSession,
    *,
    purpose: str,
    targets: Iterable[str],
    body: Mapping[str, Any],
    channel: str,
    now: datetime,
    order_id: int | None = None,
    visit_id: int | None = None,
) -> list[Notification]:
    """One pending outbox row per target, about ``order_id`` or ``visit_id`` (exactly one)."""
    if (order_id is None) == (visit_id is None):
        raise ValueError("a service page is about one order or one visit")
    rows = [
        Notification(
            call_id=None,
            order_id=order_id,
            visit_id=visit_id,
            channel=channel,
            purpose=purpose,
            target=target,
            body=dict(body),
            status=NotificationStatus.pending.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for target in dict.fromkeys(targets)
    ]
    session.add_all(rows)
    return rows
