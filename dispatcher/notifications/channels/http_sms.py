"""A generic HTTP SMS gateway: one signed JSON POST per message, for any provider (or an
in-house bridge) that is not Alibaba or Tencent.

Request (``POST url``, ``Content-Type: application/json``)::

    {"id": "<notice id, idempotency key>", "to": "+8613812345678", "text": "...",
     "template": "sos_page", "params": {...}, "locale": "zh-CN", "purpose": "page",
     "call_id": 42}

Headers: ``X-CareCall-Timestamp: <unix seconds>`` and
``X-CareCall-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``.

Answer: 2xx (optionally ``{"id": "<gateway message id>"}``) = delivered; 429 = throttled
(``Retry-After`` honoured); 400/401/403/404/409/422 = rejected; 408 and 5xx = failed,
retryable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping

import httpx
import structlog

from dispatcher.notifications.channels.base import ReceiptClock
from dispatcher.notifications.channels.config import HttpSmsConfig, read_secret
from dispatcher.notifications.channels.masking import mask_phone
from dispatcher.notifications.channels.models import ChannelKind, DeliveryReceipt, Notice, ReceiptStatus

log = structlog.get_logger("carecall.notify.channels")


def sign_body(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: our own backoff decides


class HttpSmsChannel:
    kind = ChannelKind.sms

    def __init__(self, name: str, cfg: HttpSmsConfig, env: Mapping[str, str]) -> None:
        self.name = name
        self.cfg = cfg
        self._secret = read_secret(env, cfg.hmac_secret_env, f"channel {name}")
        self._client = httpx.AsyncClient(timeout=cfg.timeout_s, follow_redirects=False)

    async def send(self, notice: Notice) -> DeliveryReceipt:
        clock = ReceiptClock(self.name, self.kind, self.cfg.provider)
        phone = notice.recipient.phone
        if phone is None:
            return clock.rejected_locally("no_address", "the recipient has no phone number")
        body = json.dumps(
            {
                "id": notice.notice_id,
                "to": phone,
                "text": notice.text,
                "template": notice.template,
                "params": notice.params,
                "locale": notice.locale,
                "purpose": notice.purpose.value,
                "call_id": notice.call_id,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            self.cfg.timestamp_header: timestamp,
            self.cfg.signature_header: sign_body(self._secret, timestamp, body),
        }
        try:
            response = await self._client.post(self.cfg.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            receipt = clock.receipt(
                ReceiptStatus.failed,
                retryable=True,
                error_code="network_error",
                error_message=type(exc).__name__,
            )
        else:
            receipt = self._from_response(clock, response)
        log.info(
            "http sms",
            channel=self.name,
            to=mask_phone(phone),
            status=receipt.status.value,
            code=receipt.error_code,
        )
        return receipt

    @staticmethod
    def _from_response(clock: ReceiptClock, response: httpx.Response) -> DeliveryReceipt:
        code = response.status_code
        request_id = response.headers.get("X-Request-Id")
        if 200 <= code < 300:
            provider_id = None
            try:
                data = response.json()
                if isinstance(data, dict) and data.get("id") is not None:
                    provider_id = str(data["id"])
            except ValueError:
                pass
            return clock.receipt(ReceiptStatus.delivered, provider_id=provider_id, request_id=request_id)
        message = response.text[:300]
        if code == 429:
            return clock.receipt(
                ReceiptStatus.throttled,
                retryable=True,
                request_id=request_id,
                error_code="http_429",
                error_message=message,
                retry_after_s=_retry_after(response.headers.get("Retry-After")),
            )
        if code in (400, 401, 403, 404, 409, 422):
            return clock.receipt(
                ReceiptStatus.rejected,
                request_id=request_id,
                error_code=f"http_{code}",
                error_message=message,
            )
        return clock.receipt(
            ReceiptStatus.failed,
            retryable=code == 408 or code >= 500,
            request_id=request_id,
            error_code=f"http_{code}",
            error_message=message,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
