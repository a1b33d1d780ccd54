"""Building blocks of the service-order and page tests, each written once.

``provider_row``: the canteen next to home h1 (幸福食堂, meals, open 07:00-19:00) or a
variant of it. ``FailingFirst``: a notifier whose first sends fail, like a gateway having a
bad minute, keeping what it delivered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dispatcher.notifications.notifiers import Message, Notifier, NotifyError
from dispatcher.orders.models import Provider

__all__ = ["FailingFirst", "provider_row"]


def provider_row(*, created_at: datetime, **overrides: Any) -> Provider:
    fields: dict[str, Any] = dict(
        id="p-meals",
        name="幸福食堂",
        lat=32.693,
        lon=112.853,
        radius_km=3.0,
        stations=[],
        hours="07:00-19:00",
        kinds=["meal"],
        capacity=5,
        manager_name="孙经理",
        manager_phone="13900000001",
        active=True,
        created_at=created_at,
    )
    return Provider(**{**fields, **overrides})


class FailingFirst(Notifier):
    """Fails the first ``failures`` sends, then delivers; keeps what it delivered."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[Message] = []

    async def send(self, message: Message) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise NotifyError("gateway down")
        self.sent.append(message)
        return "ok"
