"""Notifier plugins: how a station, a family contact or a supervisor gets told.

A notifier sends one notification and says whether it worked; the outbox (the
``notifications`` table) retries failures with backoff and records every attempt in the
audit log, so a failing SMS gateway never blocks a call. SMS or WeChat notifiers subclass
``Notifier`` the same way; the channel is chosen by configuration.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from carecall.core.logs import mask_phone

log = structlog.get_logger("carecall.notify")


@dataclass(frozen=True)
class Message:
    notification_id: int
    call_id: int | None  # None: a service order's or a welfare visit's page (body names it)
    purpose: str  # alert_station, remind, notify_contact, alert_supervisor, order_breach, visit_missed
    target: str  # station:ID, phone:NUMBER, user:NAME
    body: dict[str, Any]


class NotifyError(Exception):
    """A failed attempt; the outbox retries it."""


class Notifier(ABC):
    name: str

    @abstractmethod
    async def send(self, message: Message) -> str:
        """Deliver, returning a short receipt; raise NotifyError on failure."""

    async def close(self) -> None:
        return None


class LogNotifier(Notifier):
    """Writes each notification as a structured log line (the demo's and tests' channel),
    with phone numbers masked (138****5678)."""

    name = "log"

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> str:
        self.sent.append(message)
        if len(self.sent) > 10_000:
            del self.sent[:5_000]
        # the target may be a relative's phone number: logs never hold one in clear
        log.info("notify", purpose=message.purpose, target=mask_phone(message.target), call=message.call_id)
        return "logged"


class WebhookNotifier(Notifier):
    """POSTs the notification as JSON to a URL (an SMS/WeChat bridge, a pager service)."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self._client = httpx.AsyncClient(timeout=timeout_s, headers=headers or {})

    async def send(self, message: Message) -> str:
        payload = {
            "notification_id": message.notification_id,
            "call_id": message.call_id,
            "purpose": message.purpose,
            "target": message.target,
            "body": message.body,
        }
        try:
            resp = await self._client.post(
                self.url,
                content=json.dumps(payload, ensure_ascii=False),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise NotifyError(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 300:
            raise NotifyError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return f"HTTP {resp.status_code}"

    async def close(self) -> None:
        await self._client.aclose()


def make_notifier(channel: str, webhook_url: str | None) -> Notifier:
    if channel == "webhook":
        if not webhook_url:
            raise ValueError("notifier 'webhook' needs CARECALL_WEBHOOK_URL")
        return WebhookNotifier(webhook_url)
    if channel == "log":
        return LogNotifier()
    raise ValueError(f"unknown notifier {channel!r}: log or webhook")
