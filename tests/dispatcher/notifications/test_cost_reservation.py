"""The shared cost budget's reservations (issue 12): each paid send is reserved and
committed before it goes out, so two dispatcher copies sending at the same moment never
exceed a cap; a send the vendor refused gives its place back; a reservation whose send
was never recorded stays counted (SQLite and, with --db postgresql, PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit import service as audit
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.notifications.channel_notifier import ChannelNotifier
from dispatcher.notifications.channels import (
    ChannelKind,
    DeliveryReceipt,
    Notice,
    NotificationsConfig,
    Purpose,
    ReceiptStatus,
    Recipient,
)
from dispatcher.notifications.channels.delivery import Attempt, ReservingCostCounters
from dispatcher.notifications.channels.policy import ALLOWED, CostUsage, CostVerdict, OutcomeStatus
from dispatcher.notifications.cost_ledger import SharedCostCounters, alert_key, tally
from dispatcher.notifications.notifiers import LogNotifier

Maker = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


@dataclass
class Overlap:
    """Sends in flight across both copies' channels. A send holds until a second one is
    in flight (or 5 s pass), so the copies' sends overlap however slow the machine is:
    with a fixed 50 ms send, a loaded CI machine finished each before the next began."""

    in_flight: int = 0
    most: int = 0
    two: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class SlowSms:
    """A paid channel whose sends take a while, so the copies' sends overlap."""

    name: str = "fake_sms"
    kind: ChannelKind = ChannelKind.sms
    delay_s: float = 0.05
    answers: list[ReceiptStatus] = field(default_factory=list)
    sent: list[Notice] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    overlap: Overlap | None = None

    async def send(self, notice: Notice) -> DeliveryReceipt:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        o = self.overlap
        if o is not None:
            o.in_flight += 1
            o.most = max(o.most, o.in_flight)
            if o.in_flight >= 2:
                o.two.set()
        try:
            await asyncio.sleep(self.delay_s)
            if o is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(o.two.wait(), 5.0)
        finally:
            self.in_flight -= 1
            if o is not None:
                o.in_flight -= 1
        self.sent.append(notice)
        status = self.answers.pop(0) if self.answers else ReceiptStatus.delivered
        return DeliveryReceipt(
            channel=self.name,
            kind=self.kind,
            status=status,
            provider="fake",
            error_code=None if status is ReceiptStatus.delivered else "isv.BUSINESS_LIMIT_CONTROL",
            retryable=False,
            elapsed_ms=self.delay_s * 1000,
        )

    async def aclose(self) -> None:
        return None


def _copy(maker: Maker, actor: str, channel: SlowSms, **caps: int) -> ChannelNotifier:
    placeholder = {"type": "http_sms", "url": "http://127.0.0.1:9/unused", "hmac_secret_env": "UNUSED"}
    cfg = NotificationsConfig.model_validate(
        {
            "channels": {channel.name: placeholder},
            "routing": {"alert": [channel.name]},
            "retry": {"max_attempts_per_channel": 1},
            "cost_guard": caps,
        }
    )
    notifier = ChannelNotifier(cfg, {channel.name: channel}, LogNotifier())
    notifier.share_budget(maker, actor)
    return notifier


def _notice(i: int, call_id: int) -> Notice:
    return Notice(
        purpose=Purpose.alert,
        recipient=Recipient(person_id=f"p{i}", phone="+8613800000001"),
        call_id=call_id,
        template="station_alert",
        text=f"alert {i}",
        notice_id=f"n{i}",
    )


async def _record_attempts(maker: Maker, actor: str, steps: list[Attempt]) -> None:
    """What the outbox writes at the end of its round: one row per attempt."""
    async with maker() as s, s.begin():
        for step in steps:
            r = step.receipt
            status = r.status.value if r else "blocked_by_cost_guard"
            kind = "notification_sent" if r and r.delivered else "notification_failed"
            detail = {
                "kind": step.kind.value,
                "status": status,
                "error_code": r.error_code if r else "cost_guard",
            }
            if step.reservation:
                detail["reservation"] = step.reservation
            await audit.append(s, kind=kind, at=T0, actor=actor, call_id=step.call_id, detail=detail)


async def test_two_copies_sending_at_once_never_exceed_the_hourly_cap(maker: Maker) -> None:
    now = T0.timestamp()
    overlap = Overlap()
    channel_a, channel_b = SlowSms(overlap=overlap), SlowSms(overlap=overlap)
    a = _copy(maker, "dispatcher-a", channel_a, sms_per_hour=3)
    b = _copy(maker, "dispatcher-b", channel_b, sms_per_hour=3)
    assert isinstance(a.counters, ReservingCostCounters)
    outcomes = await asyncio.gather(
        *(a.deliver(_notice(i, 100 + i), "alert_station", clock=lambda: now) for i in range(6)),
        *(b.deliver(_notice(10 + i, 200 + i), "alert_station", clock=lambda: now) for i in range(6)),
    )
    sent = len(channel_a.sent) + len(channel_b.sent)
    assert sent == 3, "twelve notices at once, two copies, one budget of three"
    assert overlap.most >= 2, "the sends did overlap"
    statuses = [o.status for o in outcomes]
    assert statuses.count(OutcomeStatus.delivered) == 3
    assert statuses.count(OutcomeStatus.blocked_by_cost_guard) == 9
    async with maker() as s:
        reserved = list(await s.scalars(select(AuditRow).where(AuditRow.kind == "cost_reserved")))
    assert len(reserved) == 3 and {r.detail["kind"] for r in reserved} == {"sms"}
    assert {r.actor for r in reserved} <= {"dispatcher-a", "dispatcher-b"}
    assert all(r.call_id is not None for r in reserved)
    assert (await verify_log(maker)).ok


class ReadOnlyShared:
    """The shared counts without reservations (how the budget was shared before): each
    copy reads the log before a delivery and counts its own sends in memory."""

    def __init__(self, inner: SharedCostCounters) -> None:
        self.inner = inner

    def usage(self, kind: ChannelKind, call_id: int | None, now: float) -> CostUsage:
        return self.inner.usage(kind, call_id, now)

    def record(self, kind: ChannelKind, call_id: int | None, now: float) -> None:
        self.inner.record(kind, call_id, now)

    def release(self, kind: ChannelKind, call_id: int | None, at: float) -> None:
        self.inner.release(kind, call_id, at)


async def test_without_reservations_the_same_race_overshoots(maker: Maker) -> None:
    """The control: the race above is real — counting only what is recorded lets each
    copy spend the whole budget while the other's sends are in flight."""
    now = T0.timestamp()
    channel_a, channel_b = SlowSms(), SlowSms()
    a = _copy(maker, "dispatcher-a", channel_a, sms_per_hour=3)
    b = _copy(maker, "dispatcher-b", channel_b, sms_per_hour=3)
    for n in (a, b):
        shared = n.counters
        assert isinstance(shared, SharedCostCounters)
        await shared.refresh(None, now)
        n.counters = ReadOnlyShared(shared)
        assert not isinstance(n.counters, ReservingCostCounters)
    await asyncio.gather(
        *(a.deliver(_notice(i, 100 + i), "alert_station", clock=lambda: now) for i in range(6)),
        *(b.deliver(_notice(10 + i, 200 + i), "alert_station", clock=lambda: now) for i in range(6)),
    )
    assert len(channel_a.sent) + len(channel_b.sent) == 6


async def test_two_copies_and_the_per_call_cap(maker: Maker) -> None:
    now = T0.timestamp()
    channel_a, channel_b = SlowSms(), SlowSms()
    a = _copy(maker, "dispatcher-a", channel_a, sms_per_call=2)
    b = _copy(maker, "dispatcher-b", channel_b, sms_per_call=2)
    await asyncio.gather(
        *(a.deliver(_notice(i, 7), "alert_station", clock=lambda: now) for i in range(4)),
        *(b.deliver(_notice(10 + i, 7), "alert_station", clock=lambda: now) for i in range(4)),
        b.deliver(_notice(99, 8), "alert_station", clock=lambda: now),  # another call: its own budget
    )
    call_7 = [n for n in channel_a.sent + channel_b.sent if n.call_id == 7]
    assert len(call_7) == 2
    assert [n.call_id for n in channel_b.sent].count(8) == 1


async def test_a_refused_send_gives_its_place_back_and_the_other_copy_sees_it_once_recorded(
    maker: Maker,
) -> None:
    now = T0.timestamp()
    channel_a = SlowSms(delay_s=0.0, answers=[ReceiptStatus.throttled])
    a = _copy(maker, "dispatcher-a", channel_a, sms_per_hour=1)
    b_counters = SharedCostCounters(maker, "dispatcher-b")
    steps: list[Attempt] = []

    async def keep(step: Attempt) -> None:
        steps.append(step)

    first = await a.deliver(_notice(1, 1), "alert_station", clock=lambda: now, on_attempt=keep)
    assert first.status is OutcomeStatus.failed and steps[0].reservation
    # this copy knows at once that nothing was sent
    await a.counters.refresh(1, now)  # type: ignore[attr-defined]
    assert a.counters.usage(ChannelKind.sms, 1, now) == CostUsage(per_call=0, last_hour=0)
    # the other copy still counts the reservation until the attempt row is committed
    await b_counters.refresh(2, now)
    assert b_counters.usage(ChannelKind.sms, 2, now).last_hour == 1
    await _record_attempts(maker, "dispatcher-a", steps)
    await b_counters.refresh(2, now)
    assert b_counters.usage(ChannelKind.sms, 2, now).last_hour == 0
    second = await a.deliver(_notice(2, 2), "alert_station", clock=lambda: now)
    assert second.status is OutcomeStatus.delivered and len(channel_a.sent) == 2


async def test_a_reservation_never_recorded_stays_counted_and_a_delivered_one_once(maker: Maker) -> None:
    now = T0.timestamp()
    counters = SharedCostCounters(maker, "dispatcher-a")
    verdict, reservation = await counters.reserve(ChannelKind.voice, 5, now, _allow)
    assert verdict.allowed and reservation
    other = SharedCostCounters(maker, "dispatcher-b")
    await other.refresh(5, now)  # the copy died before its round: the send may have gone out
    assert other.usage(ChannelKind.voice, 5, now) == CostUsage(per_call=1, last_hour=1)
    async with maker() as s, s.begin():  # its delivered attempt row names the reservation: still one
        await audit.append(
            s,
            kind="notification_sent",
            at=T0,
            actor="dispatcher-a",
            call_id=5,
            detail={"kind": "voice", "status": "delivered", "reservation": reservation},
        )
    await other.refresh(5, now)
    assert other.usage(ChannelKind.voice, 5, now) == CostUsage(per_call=1, last_hour=1)
    await other.refresh(5, now + 3600)  # an hour later: out of the window, still the call's
    assert other.usage(ChannelKind.voice, 5, now + 3600) == CostUsage(per_call=1, last_hour=0)


def _allow(usage: CostUsage) -> CostVerdict:
    assert usage.last_hour == 0
    return ALLOWED


def test_tally_rules() -> None:
    at = T0
    rows = [
        (1, "a", {"kind": "sms", "reservation": "r1"}, "cost_reserved", at),
        (1, "a", {"kind": "sms", "status": "delivered", "reservation": "r1"}, "notification_sent", at),
        (1, "a", {"kind": "sms", "reservation": "r2"}, "cost_reserved", at),
        (1, "a", {"kind": "sms", "status": "rejected", "reservation": "r2"}, "notification_failed", at),
        (1, "b", {"kind": "sms", "status": "delivered"}, "notification_sent", at),  # no reservation
        (1, "a", {"kind": "voice", "reservation": "r3"}, "cost_reserved", at),
        (1, "a", {"kind": "robot", "reservation": "r4"}, "cost_reserved", at),  # free: never counted
    ]
    every, mine = tally(rows, "b")
    assert every == {ChannelKind.sms: 2, ChannelKind.voice: 1}
    assert mine == {ChannelKind.sms: 1}
    every, _ = tally(rows, "b", released=["r3"])
    assert every[ChannelKind.voice] == 0
    every, _ = tally(rows, "b", since=at)
    assert not every


async def test_a_cost_alert_is_claimed_by_one_copy_when_both_raise_it_at_once(maker: Maker) -> None:
    copies = [SharedCostCounters(maker, f"dispatcher-{c}") for c in "abcd"]
    key = alert_key("sms", "hour", 3, T0.timestamp())

    def writer(actor: str) -> Callable[[AsyncSession], Awaitable[None]]:
        async def write(s: AsyncSession) -> None:
            await asyncio.sleep(0.02)  # the others are waiting for the lock meanwhile
            detail = {"kind": "sms", "scope": "hour", "limit": 2, "used": 2, "call_id": 3}
            await audit.append(s, kind="cost_guard_hit", at=T0, actor=actor, call_id=3, detail=detail)

        return write

    claimed = await asyncio.gather(*(c.claim_alert(key, writer(c.actor)) for c in copies))
    assert sorted(claimed) == [False, False, False, True]
    assert all(c.raised(key) for c in copies)
    async with maker() as s:
        hits = list(await s.scalars(select(AuditRow).where(AuditRow.kind == "cost_guard_hit")))
    assert len(hits) == 1
    # a new clock hour is a new alert
    later = alert_key("sms", "hour", 3, T0.timestamp() + 3600)
    assert await copies[0].claim_alert(later, writer("dispatcher-a"))
