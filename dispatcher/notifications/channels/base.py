"""Helpers shared by the channel plugins: timing a receipt and resolving a template."""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from dispatcher.notifications.channels.config import VendorTemplate
from dispatcher.notifications.channels.masking import mask_phone
from dispatcher.notifications.channels.models import ChannelKind, DeliveryReceipt, Notice, ReceiptStatus

log = structlog.get_logger("carecall.notify.channels")


class ReceiptClock:
    """Started when an attempt starts; makes that attempt's receipt with its elapsed time."""

    def __init__(self, channel: str, kind: ChannelKind, provider: str) -> None:
        self.channel = channel
        self.kind = kind
        self.provider = provider
        self.started = time.monotonic()

    def receipt(
        self,
        status: ReceiptStatus,
        *,
        retryable: bool = False,
        provider_id: str | None = None,
        request_id: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        retry_after_s: float | None = None,
    ) -> DeliveryReceipt:
        return DeliveryReceipt(
            channel=self.channel,
            kind=self.kind,
            status=status,
            provider=self.provider,
            provider_id=provider_id or None,
            request_id=request_id or None,
            error_code=error_code,
            error_message=error_message,
            retryable=retryable and status is not ReceiptStatus.delivered,
            retry_after_s=retry_after_s,
            elapsed_ms=round((time.monotonic() - self.started) * 1000, 3),
        )

    def rejected_locally(self, code: str, message: str) -> DeliveryReceipt:
        """The channel refused before calling anyone (no address, no template)."""
        return self.receipt(ReceiptStatus.rejected, error_code=code, error_message=message)


@dataclass(frozen=True)
class ResolvedTemplate:
    code: str
    ordered: list[str]  # values in the vendor's parameter order
    named: dict[str, str]  # the same, by name


def resolve_template(templates: dict[str, VendorTemplate], notice: Notice) -> ResolvedTemplate | str:
    """The vendor template for ``notice``, or a message saying why there is none."""
    template = templates.get(notice.template)
    if template is None:
        return f"template {notice.template!r} is not configured on this channel"
    missing = [p for p in template.params if p not in notice.params]
    if missing:
        return f"template {notice.template!r} needs parameter(s) {', '.join(missing)}"
    ordered = [notice.params[p] for p in template.params]
    return ResolvedTemplate(
        code=template.code_for(notice.locale),
        ordered=ordered,
        named={p: notice.params[p] for p in template.params},
    )


def phone_call_inputs(
    clock: ReceiptClock, notice: Notice, templates: dict[str, VendorTemplate]
) -> tuple[str, ResolvedTemplate] | DeliveryReceipt:
    """What every SMS and voice vendor needs before the request: the number and the
    template — or the receipt refusing the notice locally (nothing is sent)."""
    phone = notice.recipient.phone
    if phone is None:
        return clock.rejected_locally("no_address", "the recipient has no phone number")
    template = resolve_template(templates, notice)
    if isinstance(template, str):
        return clock.rejected_locally("template_not_configured", template)
    return phone, template


def log_phone_receipt(event: str, channel: str, phone: str, receipt: DeliveryReceipt) -> None:
    """One log line per vendor attempt; the number is masked, never logged whole."""
    log.info(
        event,
        channel=channel,
        to=mask_phone(phone),
        status=receipt.status.value,
        code=receipt.error_code,
        request_id=receipt.request_id,
    )
