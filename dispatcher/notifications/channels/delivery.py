"""``deliver``: one notice through a person's channels, by the pure policy.

For each channel in order: ask the cost guard, send, and let ``policy.after_receipt``
say done, retry (after a backoff) or fail over to the next channel. Every attempt, sent
or blocked, is reported to ``on_attempt`` (the caller's audit row) and kept in the
outcome. A channel that raises or hangs past ``send_timeout_s`` gives a ``failed``
receipt: a broken plugin never stops the ladder.

``InMemoryCostCounters`` counts paid sends in this process; copies of the platform that
must share one budget plug in counters backed by a shared store with the same two methods.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import structlog
from pydantic import BaseModel, ConfigDict, Field

from dispatcher.notifications.channels.models import (
    Channel,
    ChannelKind,
    DeliveryReceipt,
    Notice,
    ReceiptStatus,
)
from dispatcher.notifications.channels.policy import (
    HOUR_S,
    Action,
    CostScope,
    CostUsage,
    CostVerdict,
    DeliveryPolicy,
    OutcomeStatus,
    after_receipt,
    check_cost,
    counts_against_cost,
    outcome_status,
)

log = structlog.get_logger("carecall.notify.channels")


class CostCounters(Protocol):
    """Paid sends made so far. ``usage`` then ``record`` run with no await between them,
    so in one event loop a check and its count cannot interleave with another's; an
    attempt that the vendor provably did not send is ``release``d afterwards."""

    def usage(self, kind: ChannelKind, call_id: int | None, now: float) -> CostUsage: ...

    def record(self, kind: ChannelKind, call_id: int | None, now: float) -> None: ...

    def release(self, kind: ChannelKind, call_id: int | None, at: float) -> None: ...


@runtime_checkable
class ReservingCostCounters(CostCounters, Protocol):
    """Counters shared by processes: the check and the count happen in one step against the
    shared store (``reserve``), committed before the send, so a send in flight in another
    process is already counted. ``settle`` tells the store how the send went."""

    async def reserve(
        self, kind: ChannelKind, call_id: int | None, now: float, check: Callable[[CostUsage], CostVerdict]
    ) -> tuple[CostVerdict, str | None]:
        """``check`` the usage including every reservation; when allowed, reserve one send
        and return its id."""
        ...

    def settle(self, reservation: str, counted: bool) -> None:
        """The send's answer: ``counted`` False releases the reservation (nothing was sent)."""
        ...


class InMemoryCostCounters:
    """Per-call counts (forgotten a day after the call's last send) and a rolling hour."""

    CALL_MEMORY_S = 24 * HOUR_S

    def __init__(self) -> None:
        self._hour: dict[ChannelKind, deque[float]] = defaultdict(deque)
        self._per_call: dict[tuple[ChannelKind, int], int] = {}
        self._call_seen: dict[int, float] = {}

    def _prune(self, now: float) -> None:
        for times in self._hour.values():
            while times and times[0] <= now - HOUR_S:
                times.popleft()
        stale = [c for c, seen in self._call_seen.items() if seen <= now - self.CALL_MEMORY_S]
        for call_id in stale:
            del self._call_seen[call_id]
            for kind in ChannelKind:
                self._per_call.pop((kind, call_id), None)

    def usage(self, kind: ChannelKind, call_id: int | None, now: float) -> CostUsage:
        self._prune(now)
        per_call = self._per_call.get((kind, call_id), 0) if call_id is not None else 0
        return CostUsage(per_call=per_call, last_hour=len(self._hour[kind]))

    def record(self, kind: ChannelKind, call_id: int | None, now: float) -> None:
        self._hour[kind].append(now)
        if call_id is not None:
            self._per_call[(kind, call_id)] = self._per_call.get((kind, call_id), 0) + 1
            self._call_seen[call_id] = now

    def release(self, kind: ChannelKind, call_id: int | None, at: float) -> None:
        times = self._hour[kind]
        for i in range(len(times) - 1, -1, -1):
            if times[i] == at:
                del times[i]
                break
        key = (kind, call_id) if call_id is not None else None
        if key is not None and self._per_call.get(key, 0) > 0:
            self._per_call[key] -= 1


class Attempt(BaseModel):
    """One step of a delivery: a send (with its receipt) or a send the cost guard stopped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notice_id: str
    call_id: int | None
    channel: str
    kind: ChannelKind
    number: int = Field(ge=1, description="attempt number on this channel")
    at: float = Field(description="unix time the attempt started")
    receipt: DeliveryReceipt | None = None
    blocked_by_cost_guard: bool = False
    decision: str = Field(description="done / retry / failover, with the reason")
    reservation: str | None = Field(default=None, description="the shared budget's reservation of this send")


def _attempt(notice: Notice, channel: Channel, number: int, now: float, **outcome: Any) -> Attempt:
    """One attempt of ``notice`` on ``channel``; ``outcome``: receipt, block, decision."""
    return Attempt(
        notice_id=notice.notice_id,
        call_id=notice.call_id,
        channel=channel.name,
        kind=channel.kind,
        number=number,
        at=now,
        **outcome,
    )


class CostAlert(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ChannelKind
    scope: CostScope
    limit: int
    used: int
    call_id: int | None
    channel: str


class DeliveryOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    notice_id: str
    status: OutcomeStatus
    delivered_by: str | None = None
    steps: list[Attempt] = Field(default_factory=list)
    cost_alerts: list[CostAlert] = Field(default_factory=list)

    @property
    def alert(self) -> bool:
        """A cost cap was hit: supervisors must be told."""
        return bool(self.cost_alerts)


async def _send_bounded(channel: Channel, notice: Notice, timeout_s: float) -> DeliveryReceipt:
    started = time.monotonic()

    def failed(code: str, message: str) -> DeliveryReceipt:
        return DeliveryReceipt(
            channel=channel.name,
            kind=channel.kind,
            status=ReceiptStatus.failed,
            provider="carecall",
            error_code=code,
            error_message=message,
            retryable=code == "timeout",
            elapsed_ms=(time.monotonic() - started) * 1000,
        )

    try:
        async with asyncio.timeout(timeout_s):
            return await channel.send(notice)
    except TimeoutError:
        return failed("timeout", f"no answer within {timeout_s:g} s")
    except Exception as exc:  # a plugin bug must not stop the ladder
        log.exception("channel raised", channel=channel.name)
        return failed("channel_error", f"{type(exc).__name__}")


async def _guard(
    counters: CostCounters, policy: DeliveryPolicy, kind: ChannelKind, call_id: int | None, now: float
) -> tuple[CostVerdict, str | None]:
    """Ask the cost guard; an allowed paid send is counted before it goes out (reserved in
    the shared store when the counters are shared, else recorded in memory)."""

    def check(usage: CostUsage) -> CostVerdict:
        return check_cost(policy.cost_guard, kind, usage, has_call=call_id is not None)

    paid = policy.cost_guard.caps_for(kind) is not None
    if paid and isinstance(counters, ReservingCostCounters):
        return await counters.reserve(kind, call_id, now, check)
    verdict = check(counters.usage(kind, call_id, now))
    if verdict.allowed and paid:
        counters.record(kind, call_id, now)  # reserved before the await
    return verdict, None


def _unbudgeted(channel: Channel, exc: BaseException) -> DeliveryReceipt:
    """The shared budget could not be asked (its store failed): nothing is sent on this
    paid channel — the next channel is tried."""
    return DeliveryReceipt(
        channel=channel.name,
        kind=channel.kind,
        status=ReceiptStatus.failed,
        provider="carecall",
        error_code="cost_ledger_error",
        error_message=type(exc).__name__,
        retryable=False,
        elapsed_ms=0.0,
    )


async def deliver(
    notice: Notice,
    channels: Sequence[Channel],
    policy: DeliveryPolicy,
    counters: CostCounters,
    *,
    on_attempt: Callable[[Attempt], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.time,
    jitter: Callable[[], float] = random.random,
) -> DeliveryOutcome:
    """Try ``channels`` in order until one delivers; see the module's doc."""
    steps: list[Attempt] = []
    alerts: list[CostAlert] = []
    blocked: list[bool] = []

    async def note(step: Attempt) -> None:
        steps.append(step)
        log.info(
            "notify attempt",
            notice=notice.notice_id,
            call=notice.call_id,
            purpose=notice.purpose.value,
            recipient=notice.recipient.masked(),
            channel=step.channel,
            number=step.number,
            status=step.receipt.status.value if step.receipt else "blocked_by_cost_guard",
            error=step.receipt.error_code if step.receipt else None,
            decision=step.decision,
        )
        if on_attempt is not None:
            await on_attempt(step)

    for channel in channels:
        number = 1
        was_blocked = False
        while True:
            now = clock()
            try:
                verdict, reservation = await _guard(counters, policy, channel.kind, notice.call_id, now)
            except Exception as exc:  # the shared store failed: this paid channel is skipped
                log.exception("cost guard unavailable", channel=channel.name)
                receipt = _unbudgeted(channel, exc)
                await note(
                    _attempt(
                        notice,
                        channel,
                        number,
                        now,
                        receipt=receipt,
                        decision="failover: cost budget unavailable",
                    )
                )
                break
            if not verdict.allowed:
                assert verdict.scope is not None and verdict.limit is not None and verdict.used is not None
                was_blocked = True
                alert = CostAlert(
                    kind=channel.kind,
                    scope=verdict.scope,
                    limit=verdict.limit,
                    used=verdict.used,
                    call_id=notice.call_id,
                    channel=channel.name,
                )
                alerts.append(alert)
                log.warning("cost guard", **alert.model_dump(mode="json"))
                await note(
                    _attempt(
                        notice,
                        channel,
                        number,
                        now,
                        blocked_by_cost_guard=True,
                        decision=f"failover: {verdict.reason}",
                    )
                )
                break
            paid = policy.cost_guard.caps_for(channel.kind) is not None
            receipt = await _send_bounded(channel, notice, policy.send_timeout_s)
            counted = counts_against_cost(receipt.status, receipt.error_code)
            if reservation is not None and isinstance(counters, ReservingCostCounters):
                counters.settle(reservation, counted)
            elif paid and not counted:
                counters.release(channel.kind, notice.call_id, now)
            decision = after_receipt(
                policy.retry,
                number,
                receipt.status,
                receipt.retryable,
                receipt.retry_after_s,
                min(1.0, max(0.0, jitter())),
            )
            await note(
                _attempt(
                    notice,
                    channel,
                    number,
                    now,
                    receipt=receipt,
                    decision=f"{decision.action.value}: {decision.reason}",
                    reservation=reservation,
                )
            )
            if decision.action is Action.done:
                return DeliveryOutcome(
                    notice_id=notice.notice_id,
                    status=OutcomeStatus.delivered,
                    delivered_by=channel.name,
                    steps=steps,
                    cost_alerts=alerts,
                )
            if decision.action is Action.retry:
                await sleep(decision.delay_s)
                number += 1
                continue
            break
        blocked.append(was_blocked)
    return DeliveryOutcome(
        notice_id=notice.notice_id,
        status=outcome_status(len(channels), False, blocked),
        steps=steps,
        cost_alerts=alerts,
    )
