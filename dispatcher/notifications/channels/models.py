"""The channel interface: what is sent (``Notice``), what came back (``DeliveryReceipt``)
and what every channel plugin offers (``Channel``).

A notice names one person (or one duty group) and carries both a vendor template with
its parameters (SMS and voice vendors only send approved templates) and a plain text
(robots, email, generic gateways). A channel sends it once and always answers with a
receipt, never an exception: the delivery policy (``policy``) decides on retries and
failover from the receipt's ``status`` and ``retryable``.

Phone numbers and e-mail addresses are left out of the models' ``repr`` and every log
line of this package masks them (``masking``).
"""

from __future__ import annotations

import re
import uuid
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dispatcher.notifications.channels.masking import mask_email, mask_phone, scrub


class Purpose(StrEnum):
    """Why a person is told: it chooses the channel order in config."""

    page = "page"  # a responder is asked to take a call
    alert = "alert"  # a station's duty group is told of a call
    contact = "contact"  # a family contact is told
    supervisor = "supervisor"  # a supervisor is told (escalation, cost guard, outages)


class ChannelKind(StrEnum):
    sms = "sms"
    voice = "voice"
    robot = "robot"
    email = "email"
    app = "app"


class ReceiptStatus(StrEnum):
    delivered = "delivered"  # the provider accepted it for delivery
    failed = "failed"  # transport or provider fault; may work on another try
    throttled = "throttled"  # the provider's rate limit said no
    rejected = "rejected"  # the provider (or the channel) refused this notice as it is


_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CN_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Recipient(BaseModel):
    """Where one person (or duty group) is reached. Each channel uses the address of its
    kind: ``phone`` for SMS and voice, ``email`` for e-mail, ``group`` for robots (the name
    of a group configured on the robot channel, never a URL: webhook URLs hold tokens and
    live in the environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    person_id: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=64, repr=False)
    phone: str | None = Field(default=None, repr=False, description="E.164, e.g. +8613812345678")
    email: str | None = Field(default=None, repr=False, max_length=254)
    group: str | None = Field(default=None, max_length=64, description="robot duty-group name")

    @field_validator("phone")
    @classmethod
    def _phone_e164(cls, value: str | None) -> str | None:
        if value is None:
            return None
        compact = re.sub(r"[\s()-]", "", value)
        if _CN_MOBILE.match(compact):
            compact = "+86" + compact
        if not _E164.match(compact):
            raise ValueError("must be an E.164 number (+8613812345678) or a mainland mobile")
        return compact

    @field_validator("email")
    @classmethod
    def _email_shape(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("must look like name@domain.tld")
        return value

    def masked(self) -> str:
        """A log-safe label of this recipient."""
        parts = [f"person={self.person_id}"] if self.person_id else []
        if self.phone:
            parts.append(f"phone={mask_phone(self.phone)}")
        if self.email:
            parts.append(f"email={mask_email(self.email)}")
        if self.group:
            parts.append(f"group={self.group}")
        return " ".join(parts) or "(no address)"


class Notice(BaseModel):
    """One message to one recipient. ``template`` is our own template id (``sos_page``);
    each vendor channel maps it to its approved template code in config, and sends
    ``params`` by name (Alibaba) or in the configured order (Tencent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notice_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="idempotency key: the vendor's OutId / SessionContext, the gateway's id",
    )
    purpose: Purpose
    recipient: Recipient
    call_id: int | None = Field(
        default=None, ge=0, description="the call this is about (cost guard per call)"
    )
    template: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    params: dict[str, str] = Field(default_factory=dict)
    text: str = Field(min_length=1, max_length=2000, description="plain text for robots, email, gateways")
    subject: str | None = Field(default=None, max_length=200, description="email subject; default from text")
    locale: str = Field(default="zh-CN", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    channels: tuple[str, ...] = Field(
        default=(),
        max_length=16,
        description="the recipient's own channel order (kinds or channel names); empty: the purpose's",
    )

    @model_validator(mode="after")
    def _params_are_short(self) -> Notice:
        for key, value in self.params.items():
            if not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,31}$", key):
                raise ValueError(f"template parameter name {key!r} must be an identifier")
            if len(value) > 200:
                raise ValueError(f"template parameter {key!r} is longer than 200 characters")
        return self


class DeliveryReceipt(BaseModel):
    """What one send attempt gave. ``retryable`` says whether another attempt on the
    *same* channel, after the policy's backoff, may succeed; a non-retryable failure moves
    on to the person's next channel. ``error_message`` never holds a phone number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str
    kind: ChannelKind
    status: ReceiptStatus
    provider: str
    provider_id: str | None = Field(default=None, description="the vendor's receipt: BizId, SerialNo, CallId")
    request_id: str | None = Field(default=None, description="the vendor's request id, for support tickets")
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False
    retry_after_s: float | None = Field(
        default=None, ge=0, description="the provider asked to wait this long"
    )
    elapsed_ms: float = Field(ge=0)

    @field_validator("error_message")
    @classmethod
    def _no_phone_numbers(cls, value: str | None) -> str | None:
        return None if value is None else scrub(value)[:500]

    @property
    def delivered(self) -> bool:
        return self.status is ReceiptStatus.delivered


@runtime_checkable
class Channel(Protocol):
    """A way to reach people. ``send`` makes one attempt and answers with a receipt; it
    does not retry and does not raise for provider or transport errors. ``aclose`` frees
    connections (safe to call twice)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> ChannelKind: ...

    async def send(self, notice: Notice) -> DeliveryReceipt: ...

    async def aclose(self) -> None: ...
