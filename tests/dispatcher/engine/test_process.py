"""The dispatcher shell on a real database (--db) with a hand-driven clock: calls open,
escalate, notify and stop escalating exactly as the policy says."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from dispatcher.audit.service import verify_log
from dispatcher.calls import actions, queries
from dispatcher.calls.context import Actor, CallError
from dispatcher.calls.models import Call, Timer
from dispatcher.calls.outbox import queue_device_notices
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier, Message, NotifyError
from tests.dispatcher.engine.support import T0, kinds, run_until, store_event


async def test_unacknowledged_sos_climbs_street_then_county_notifies_contacts_and_reminds(
    setup, maker
) -> None:  # type: ignore[no-untyped-def]
    d, clock, notifier = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()
    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
    assert call.station_id == "cm1" and call.tier == "community" and call.priority == "P1"
    assert "OWN_STATION_STAFFED_IN_RANGE" in call.route_reasons
    await run_until(d, clock, 20)
    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
        targets = list(
            await s.scalars(
                select(Notification.target).where(Notification.channel == "log").order_by(Notification.id)
            )
        )
    assert call.station_id == "county" and call.escalation_level == 2
    k = await kinds(maker, call.id)
    assert k.count("escalated") == 2
    assert k.count("reminder") >= 8  # every 2 s from 2 s on
    assert "phone:13900000001" in targets and "phone:13900000002" in targets
    assert targets.index("phone:13900000001") < targets.index("phone:13900000002"), "contacts in order"
    assert "station:st1" in targets and "station:county" in targets
    assert notifier.sent, "notifications went through the notifier plugin"
    assert (await verify_log(maker)).ok


async def test_acknowledging_stops_all_escalation_at_once(setup, maker) -> None:  # type: ignore[no-untyped-def]
    d, clock, _ = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await run_until(d, clock, 3)  # one reminder fired
    async with maker() as s, s.begin():
        call = (await s.scalars(select(Call))).one()
        await actions.act(
            s,
            call_id=call.id,
            action="acknowledge",
            actor=Actor("user:op"),
            body={},
            now=clock.now(),
            ctx=d.ctx,
        )
    before = await kinds(maker, call.id)
    await run_until(d, clock, 30)
    after = await kinds(maker, call.id)
    new = after[len(before) :]
    assert "reminder" not in new and "escalated" not in new, new
    async with maker() as s:
        pending = await s.scalar(
            select(func.count())
            .select_from(Timer)
            .where(Timer.status == "pending", Timer.action != "alert_supervisor")
        )
        assert pending == 0
        call = (await s.scalars(select(Call))).one()
    assert call.station_id == "cm1"


async def test_second_acknowledge_is_told_who_did_it(setup, maker) -> None:  # type: ignore[no-untyped-def]
    d, clock, _ = setup
    await store_event(maker, "h1-btn", "e1", "fall", T0)
    await d.intake_once()
    async with maker() as s, s.begin():
        cid = (await s.scalars(select(Call.id))).one()
        await actions.act(
            s,
            call_id=cid,
            action="acknowledge",
            actor=Actor("user:alice"),
            body={},
            now=clock.now(),
            ctx=d.ctx,
        )
    with pytest.raises(CallError) as exc:
        async with maker() as s, s.begin():
            await actions.act(
                s,
                call_id=cid,
                action="acknowledge",
                actor=Actor("user:bob"),
                body={},
                now=clock.now(),
                ctx=d.ctx,
            )
    assert exc.value.status == 409 and exc.value.detail["by"] == "user:alice"


async def test_repeated_presses_join_one_call_and_cancel_before_dispatch_closes_it(setup, maker) -> None:  # type: ignore[no-untyped-def]
    d, clock, _ = setup
    for i in range(5):
        await store_event(maker, "h1-btn", f"e{i}", "sos", T0 + timedelta(seconds=i))
    await store_event(maker, "h1-hub", "smoke1", "smoke", T0 + timedelta(seconds=6))
    await run_until(d, clock, 8)
    async with maker() as s:
        assert await s.scalar(select(func.count()).select_from(Call)) == 1
    await store_event(
        maker, "h1-btn", "c1", "cancel", T0 + timedelta(seconds=9), cls="cancel", data={"ref": "e0"}
    )
    await run_until(d, clock, 2)
    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
    assert call.status == "cancelled" and call.outcome == "cancelled_by_resident"
    assert "cancelled" in await kinds(maker, call.id)


async def test_cancel_after_dispatch_is_only_noted(setup, maker) -> None:  # type: ignore[no-untyped-def]
    d, clock, _ = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()
    async with maker() as s, s.begin():
        cid = (await s.scalars(select(Call.id))).one()
        await actions.act(
            s,
            call_id=cid,
            action="dispatch",
            actor=Actor("user:op"),
            body={"staff_ids": ["cm1-r1"]},
            now=clock.now(),
            ctx=d.ctx,
        )
    await store_event(
        maker, "h1-btn", "c1", "cancel", T0 + timedelta(seconds=5), cls="cancel", data={"ref": "e1"}
    )
    await run_until(d, clock, 6)
    async with maker() as s:
        call = await s.get(Call, cid)
    assert call is not None and call.status == "dispatched"
    assert "cancel_requested" in await kinds(maker, cid)


async def test_full_lifecycle_and_responder_rules(setup, maker) -> None:  # type: ignore[no-untyped-def]
    d, clock, _ = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()

    async def act(action: str, body: dict[str, object] | None = None) -> None:
        async with maker() as s, s.begin():
            out = await actions.act(
                s,
                call_id=cid,
                action=action,
                actor=Actor("user:op"),
                body=body or {},
                now=clock.now(),
                ctx=d.ctx,
            )
            await queue_device_notices(s, notices=out.device_notices, now=clock.now())

    async with maker() as s:
        cid = (await s.scalars(select(Call.id))).one()
    with pytest.raises(CallError, match="not on duty"):
        await act("dispatch", {"staff_ids": ["cm1-r2"]})
    await act("acknowledge")
    clock.advance(30)
    await act("dispatch", {"staff_ids": ["cm1-r1"]})
    await store_event(
        maker, "h1-hub", "e9", "gas", T0 + timedelta(seconds=40)
    )  # another home? same home joins
    clock.advance(60)
    await act("en-route")
    clock.advance(300)
    await act("arrive")
    with pytest.raises(CallError, match="outcome"):
        await act("resolve", {})
    await act("note", {"text": "老人摔倒，已扶起，无明显外伤"})
    await act("resolve", {"outcome": "helped_on_site"})
    async with maker() as s:
        times = (await queries.call_times(s, call_ids=[cid]))[cid]
        call = await s.get(Call, cid)
        acks = list(
            await s.scalars(
                select(Notification.body).where(Notification.channel == "mqtt").order_by(Notification.id)
            )
        )
    assert call is not None and call.status == "resolved" and call.outcome == "helped_on_site"
    assert times.opened_at == T0 and times.acknowledged_at == T0
    assert times.dispatched_at == T0 + timedelta(seconds=30)
    assert times.on_scene_at == T0 + timedelta(seconds=390)
    assert [b["state"] for b in acks][-3:] == ["en_route", "on_scene", "resolved"]
    # the responder is free again
    await store_event(maker, "h1-btn", "e2", "fall", T0 + timedelta(hours=2))
    clock.advance(7200)
    await d.intake_once()
    async with maker() as s:
        cid2 = max(await s.scalars(select(Call.id)))
    async with maker() as s, s.begin():
        await actions.act(
            s,
            call_id=cid2,
            action="dispatch",
            actor=Actor("user:op"),
            body={"staff_ids": ["cm1-r1"]},
            now=clock.now(),
            ctx=d.ctx,
        )


async def test_offline_trouble_call_cleared_by_restore(setup, maker) -> None:  # type: ignore[no-untyped-def]
    d, clock, _ = setup
    await store_event(maker, "h1-hub", "sup-offline-1", "offline", T0, cls="trouble")
    await d.intake_once()
    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
    assert call.priority == "P4" and call.status == "assigned"
    await store_event(maker, "h1-hub", "sup-online-1", "online", T0 + timedelta(minutes=5), cls="trouble")
    await run_until(d, clock, 1)
    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
    assert call.status == "resolved" and call.outcome == "restored"


async def test_watchdog_repairs_a_call_that_lost_its_timers(setup, maker) -> None:  # type: ignore[no-untyped-def]
    d, clock, _ = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()
    async with maker() as s, s.begin():
        await s.execute(update(Timer).values(status="cancelled"))  # as if a bug or a crash lost them
    await d.watchdog_once()
    async with maker() as s:
        cid = (await s.scalars(select(Call.id))).one()
        pending = await s.scalar(select(func.count()).select_from(Timer).where(Timer.status == "pending"))
    assert pending and pending > 0
    assert "watchdog_repair" in await kinds(maker, cid)
    await run_until(d, clock, 8)
    assert "escalated" in await kinds(maker, cid)


class FlakyNotifier(LogNotifier):
    """Fails the first attempts of every notification, like an SMS gateway having a bad minute."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts: dict[int, int] = {}

    async def send(self, message: Message) -> str:
        n = self.attempts[message.notification_id] = self.attempts.get(message.notification_id, 0) + 1
        if n <= self.failures:
            raise NotifyError("gateway timeout")
        return await super().send(message)


async def test_failed_notifications_are_retried_recorded_and_never_block_the_call(setup, maker) -> None:  # type: ignore[no-untyped-def]
    d, clock, _ = setup
    d.notifier = FlakyNotifier(failures=2)
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await run_until(d, clock, 20)
    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
        statuses = list(await s.scalars(select(Notification.status).where(Notification.channel == "log")))
    k = await kinds(maker, call.id)
    assert call.escalation_level == 2, "escalation went on while notifications failed"
    assert k.count("notification_failed") >= 2 and "notification_sent" in k
    assert "sent" in statuses
