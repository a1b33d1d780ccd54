"""Delivery policy as pure decisions: retry with bounded exponential backoff, failover to
the person's next channel, and a cost guard on SMS and voice.

Nothing here does I/O, sleeps, reads a clock or draws a random number: the orchestrator
(``deliver``) passes the time, the usage counts and the jitter draw in, and carries the
decision out. That keeps every rule testable with plain values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dispatcher.notifications.channels.models import ChannelKind, ReceiptStatus

HOUR_S = 3600.0


class RetryPolicy(BaseModel):
    """How often one channel is tried before the next one, and how long to wait between."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts_per_channel: int = Field(default=3, ge=1, le=10)
    base_delay_s: float = Field(default=1.0, ge=0, le=60)
    multiplier: float = Field(default=2.0, ge=1, le=10)
    max_delay_s: float = Field(default=20.0, ge=0, le=600)
    jitter: float = Field(
        default=0.2, ge=0, le=1, description="± this fraction of the delay, drawn per retry"
    )

    @model_validator(mode="after")
    def _max_not_below_base(self) -> RetryPolicy:
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must not be below base_delay_s")
        return self


class CostCaps(BaseModel):
    """Caps on paid channels: per call (all its recipients together) and per rolling hour
    (the whole platform copy). An attacker or a flapping device must not run up the bill."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sms_per_call: int = Field(default=20, ge=0)
    voice_per_call: int = Field(default=6, ge=0)
    sms_per_hour: int = Field(default=300, ge=0)
    voice_per_hour: int = Field(default=60, ge=0)

    def caps_for(self, kind: ChannelKind) -> tuple[int, int] | None:
        """(per call, per hour) for a paid kind; None for free ones."""
        if kind is ChannelKind.sms:
            return self.sms_per_call, self.sms_per_hour
        if kind is ChannelKind.voice:
            return self.voice_per_call, self.voice_per_hour
        return None


class DeliveryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retry: RetryPolicy = RetryPolicy()
    cost_guard: CostCaps = CostCaps()
    send_timeout_s: float = Field(default=10.0, gt=0, le=120, description="one attempt's limit")


# --- backoff -------------------------------------------------------------------------


def backoff_delay(policy: RetryPolicy, retry_number: int, jitter_draw: float = 0.5) -> float:
    """Seconds to wait before retry ``retry_number`` (1 = the first retry).

    ``base * multiplier**(n-1)``, capped at ``max_delay_s``, then spread by ±``jitter``
    with ``jitter_draw`` in [0, 1] (0.5 = no spread), and never above ``max_delay_s``."""
    if retry_number < 1:
        raise ValueError("retry_number starts at 1")
    if not 0.0 <= jitter_draw <= 1.0:
        raise ValueError("jitter_draw must be in [0, 1]")
    try:
        growth = policy.multiplier ** (retry_number - 1)
    except OverflowError:
        growth = math.inf
    raw = 0.0 if policy.base_delay_s == 0 else min(policy.base_delay_s * growth, policy.max_delay_s)
    spread = 1.0 + policy.jitter * (2.0 * jitter_draw - 1.0)
    return max(0.0, min(raw * spread, policy.max_delay_s))


# --- what to do after a receipt ------------------------------------------------------


class Action(StrEnum):
    done = "done"  # delivered: stop
    retry = "retry"  # the same channel again, after delay_s
    failover = "failover"  # the next channel of the person


@dataclass(frozen=True)
class Decision:
    action: Action
    delay_s: float = 0.0
    reason: str = ""


def after_receipt(
    policy: RetryPolicy,
    attempt: int,
    status: ReceiptStatus,
    retryable: bool,
    retry_after_s: float | None = None,
    jitter_draw: float = 0.5,
) -> Decision:
    """The next step after attempt number ``attempt`` (1-based) on one channel."""
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    if status is ReceiptStatus.delivered:
        return Decision(Action.done, reason="delivered")
    if not retryable:
        return Decision(Action.failover, reason=f"{status.value}, not retryable")
    if attempt >= policy.max_attempts_per_channel:
        return Decision(Action.failover, reason=f"{status.value} after {attempt} attempts")
    delay = backoff_delay(policy, attempt, jitter_draw)
    if retry_after_s is not None:
        # the provider said when: wait that long, but never past our own cap (an
        # emergency does not wait an hour; the next channel is tried instead)
        if retry_after_s > policy.max_delay_s:
            return Decision(Action.failover, reason=f"provider asks to wait {retry_after_s:.0f} s")
        delay = max(delay, retry_after_s)
    return Decision(Action.retry, delay_s=delay, reason=f"{status.value}, retry {attempt}")


def max_attempts(policy: RetryPolicy, channel_count: int) -> int:
    """The most send attempts one notice can cause."""
    return policy.max_attempts_per_channel * channel_count


# --- cost guard -------------------------------------------------------------------


@dataclass(frozen=True)
class CostUsage:
    """Paid sends already made of one kind: for this call, and in the last hour."""

    per_call: int
    last_hour: int


class CostScope(StrEnum):
    call = "call"
    hour = "hour"


@dataclass(frozen=True)
class CostVerdict:
    allowed: bool
    scope: CostScope | None = None
    limit: int | None = None
    used: int | None = None
    alert: bool = False  # blocked: supervisors must hear of it

    @property
    def decision(self) -> str:
        """``allowed`` or ``blocked_by_cost_guard``."""
        return "allowed" if self.allowed else "blocked_by_cost_guard"

    @property
    def reason(self) -> str:
        if self.allowed:
            return "allowed"
        return f"{self.decision}: {self.used}/{self.limit} per {self.scope}"


ALLOWED = CostVerdict(allowed=True)


def check_cost(caps: CostCaps, kind: ChannelKind, usage: CostUsage, has_call: bool = True) -> CostVerdict:
    """May one more paid send of ``kind`` go out? Free kinds always may. The per-call cap
    applies only to notices about a call (``has_call``); the hourly cap to all."""
    limits = caps.caps_for(kind)
    if limits is None:
        return ALLOWED
    per_call, per_hour = limits
    if has_call and usage.per_call >= per_call:
        return CostVerdict(False, CostScope.call, per_call, usage.per_call, alert=True)
    if usage.last_hour >= per_hour:
        return CostVerdict(False, CostScope.hour, per_hour, usage.last_hour, alert=True)
    return ALLOWED


# our own codes for an attempt whose fate at the vendor is unknown (it may have been sent)
UNKNOWN_OUTCOME_CODES = frozenset({"timeout", "network_error"})


def counts_against_cost(status: ReceiptStatus, error_code: str | None) -> bool:
    """Does a finished attempt keep its place in the cost budget? A paid send is counted
    (reserved) before it goes out and released again when the answer shows the vendor
    sent nothing: throttled, rejected, or failed with the vendor's own error answer. A
    delivered message and an attempt whose answer never came (timeout, broken connection)
    stay counted."""
    if status is ReceiptStatus.delivered:
        return True
    return status is ReceiptStatus.failed and error_code in UNKNOWN_OUTCOME_CODES


def in_window(times: Iterable[float], now: float, window_s: float = HOUR_S) -> list[float]:
    """The times within the rolling window ending at ``now`` (a send exactly ``window_s``
    ago has left it)."""
    return [t for t in times if now - window_s < t <= now]


# --- the outcome of one notice -----------------------------------------------------


class OutcomeStatus(StrEnum):
    delivered = "delivered"
    failed = "failed"  # every channel tried, none delivered
    blocked_by_cost_guard = "blocked_by_cost_guard"  # nothing delivered and a cap stopped a channel
    no_channel = "no_channel"  # the person has no channel for this purpose


def outcome_status(channel_count: int, delivered: bool, blocked: Sequence[bool]) -> OutcomeStatus:
    """Sum up one notice: ``blocked`` has one flag per channel reached (True = the cost guard
    stopped it)."""
    if delivered:
        return OutcomeStatus.delivered
    if channel_count == 0:
        return OutcomeStatus.no_channel
    if any(blocked):
        return OutcomeStatus.blocked_by_cost_guard
    return OutcomeStatus.failed
