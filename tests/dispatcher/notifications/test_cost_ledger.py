"""The cost guard's shared counts: the audit log of every copy plus this copy's sends not
recorded yet, never counted twice (SQLite and, with --db postgresql, PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit import service as audit
from dispatcher.notifications.channels.models import ChannelKind
from dispatcher.notifications.channels.policy import CostUsage
from dispatcher.notifications.cost_ledger import SharedCostCounters, alert_key, paid_kind

Maker = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


async def _attempt(maker: Maker, *, actor: str, call_id: int, at: datetime, **detail: object) -> None:
    async with maker() as s, s.begin():
        kind = "notification_sent" if detail.get("status") == "delivered" else "notification_failed"
        await audit.append(s, kind=kind, at=at, actor=actor, call_id=call_id, detail=detail)


def test_which_rows_count() -> None:
    assert paid_kind({"kind": "sms", "status": "delivered"}) is ChannelKind.sms
    assert paid_kind({"kind": "voice", "status": "failed", "error_code": "timeout"}) is ChannelKind.voice
    assert paid_kind({"kind": "sms", "status": "failed", "error_code": "isp.SYSTEM_ERROR"}) is None
    assert paid_kind({"kind": "sms", "status": "rejected"}) is None
    assert paid_kind({"kind": "sms", "status": "blocked_by_cost_guard"}) is None
    assert paid_kind({"kind": "robot", "status": "delivered"}) is None
    assert paid_kind({"kind": 3}) is None and paid_kind("junk") is None


async def test_counts_every_copy_adds_own_unrecorded_sends_and_never_twice(maker: Maker) -> None:
    now = T0.timestamp()
    mine = SharedCostCounters(maker, "dispatcher-a")
    await _attempt(maker, actor="dispatcher-b", call_id=1, at=T0, kind="sms", status="delivered")
    await _attempt(maker, actor="dispatcher-b", call_id=2, at=T0, kind="sms", status="delivered")
    await _attempt(maker, actor="dispatcher-b", call_id=1, at=T0, kind="voice", status="rejected")
    # an old send of call 1: out of the hour, still the call's
    await _attempt(
        maker, actor="dispatcher-b", call_id=1, at=T0 - timedelta(hours=2), kind="sms", status="delivered"
    )
    await mine.refresh(1, now)
    assert mine.usage(ChannelKind.sms, 1, now) == CostUsage(per_call=2, last_hour=2)
    assert mine.usage(ChannelKind.voice, 1, now) == CostUsage(per_call=0, last_hour=0)

    mine.record(ChannelKind.sms, 1, now)  # a send of ours, its row not written yet
    assert mine.usage(ChannelKind.sms, 1, now) == CostUsage(per_call=3, last_hour=3)
    await _attempt(maker, actor="dispatcher-a", call_id=1, at=T0, kind="sms", status="delivered")
    await mine.refresh(1, now)  # now it is in the log: counted once, not twice
    assert mine.usage(ChannelKind.sms, 1, now) == CostUsage(per_call=3, last_hour=3)
    mine.record(ChannelKind.sms, 1, now + 1)
    mine.release(ChannelKind.sms, 1, now + 1)  # the vendor said no: nothing was sent
    assert mine.usage(ChannelKind.sms, 1, now + 1) == CostUsage(per_call=3, last_hour=3)
    # another copy sees the same totals
    other = SharedCostCounters(maker, "dispatcher-b")
    await other.refresh(1, now)
    assert other.usage(ChannelKind.sms, 1, now) == CostUsage(per_call=3, last_hour=3)
    await other.refresh(None, now + 3600)  # an hour on: the window is empty
    assert other.usage(ChannelKind.sms, None, now + 3600) == CostUsage(per_call=0, last_hour=0)


async def test_a_cost_alert_recorded_by_one_copy_is_known_to_the_others(maker: Maker) -> None:
    now = T0.timestamp()
    async with maker() as s, s.begin():
        await audit.append(
            s,
            kind="cost_guard_hit",
            at=T0,
            actor="dispatcher-b",
            call_id=7,
            detail={
                "kind": "sms",
                "scope": "hour",
                "limit": 2,
                "used": 2,
                "call_id": 7,
                "channel": "aliyun_sms",
            },
        )
    mine = SharedCostCounters(maker, "dispatcher-a")
    await mine.refresh(7, now + 60)
    assert mine.raised(alert_key("sms", "hour", 7, now + 60))
    assert not mine.raised(alert_key("sms", "hour", 7, now + 3600))  # the next clock hour alerts again
    assert not mine.raised(alert_key("voice", "hour", 7, now + 60))
    assert not mine.raised(alert_key("sms", "call", 7, now + 60))
