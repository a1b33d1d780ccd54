"""The dispatcher shell on a real (SQLite) database with a hand-driven clock: calls open,
escalate, notify and stop escalating exactly as the policy says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import load_settings
from device_gateway.store import EventRow, insert_events
from dispatcher import calls
from dispatcher.audit import verify_log
from dispatcher.bus import MemoryBus
from dispatcher.clock import Clock
from dispatcher.engine import Dispatcher
from dispatcher.models import AuditRow, Call, Contact, Notification, Staff, Timer, User
from dispatcher.notifiers import LogNotifier, Message, NotifyError
from tests.conftest import add_small_registry

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # 11:00 in the county: daytime

SHORT_POLICY = """
policies:
  - name: short
    steps:
      - {action: alert_station, after_s: 0, until: closed}
      - {action: remind, after_s: 2, repeat_every_s: 2, max_repeats: 50, until: acknowledged}
      - {action: escalate_street, after_s: 6, until: acknowledged}
      - {action: escalate_county, after_s: 18, until: acknowledged}
      - {action: notify_contacts, after_s: 18, until: acknowledged}
      - {action: alert_supervisor, after: travel_limit, until: on_scene}
"""


class ManualClock(Clock):
    def __init__(self, start: datetime) -> None:
        super().__init__(1.0)
        self.t = start

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture
async def setup(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> AsyncIterator[tuple[Dispatcher, ManualClock, LogNotifier]]:
    await add_small_registry(maker, {"h1-btn": "button", "h1-hub": "hub"})
    async with maker() as s, s.begin():
        s.add_all(
            [
                Staff(
                    id="cm1-r1",
                    station_id="cm1",
                    name="李师傅",
                    role="responder",
                    phone="13800000001",
                    on_duty=True,
                ),
                Staff(
                    id="cm1-r2",
                    station_id="cm1",
                    name="赵护士",
                    role="nurse",
                    phone="13800000002",
                    on_duty=False,
                ),
                Staff(
                    id="st1-r1",
                    station_id="st1",
                    name="周主任",
                    role="responder",
                    phone="13800000003",
                    on_duty=True,
                ),
                Staff(
                    id="cty-r1",
                    station_id="county",
                    name="县值班",
                    role="responder",
                    phone="13800000004",
                    on_duty=True,
                ),
                Contact(resident_id="r1", name="王强", relation="儿子", phone="13900000001", priority=1),
                Contact(resident_id="r1", name="王丽", relation="女儿", phone="13900000002", priority=2),
                User(
                    username="sup-st1", password_hash="x", role="supervisor", station_id="st1", created_at=T0
                ),
            ]
        )
    policy = tmp_path / "escalation.yaml"
    policy.write_text(SHORT_POLICY, encoding="utf-8")
    settings = load_settings(database_url="sqlite:///unused.db", escalation_file=policy)
    clock = ManualClock(T0)
    notifier = LogNotifier()
    d = Dispatcher(settings=settings, maker=maker, bus=MemoryBus(), clock=clock, mqtt=None, notifier=notifier)
    yield d, clock, notifier


async def store_event(
    maker: async_sessionmaker[AsyncSession],
    device: str,
    event_id: str,
    type_: str,
    at: datetime,
    cls: str = "emergency",
    data: dict[str, object] | None = None,
) -> None:
    async with maker() as s, s.begin():
        await insert_events(
            s,
            [
                EventRow(
                    device_id=device,
                    event_id=event_id,
                    home_id="h1",
                    type=type_,
                    event_class=cls,
                    sensor=None,
                    data=data or {},
                    source="device",
                    device_ts=at,
                    received_at=at,
                    clock_skew_s=0.0,
                    clock_suspect=False,
                    gateway="test",
                )
            ],
        )


async def run_until(d: Dispatcher, clock: ManualClock, seconds: float, step: float = 0.5) -> None:
    """Advance the clock in steps, letting every loop do its work at each step."""
    for _ in range(int(seconds / step)):
        clock.advance(step)
        while await d.intake_once():
            pass
        while await d.timers_once():
            pass
        while await d.outbox_once():
            pass


async def kinds(maker: async_sessionmaker[AsyncSession], call_id: int) -> list[str]:
    async with maker() as s:
        return list(
            await s.scalars(select(AuditRow.kind).where(AuditRow.call_id == call_id).order_by(AuditRow.seq))
        )


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
        await calls.act(
            s,
            call_id=call.id,
            action="acknowledge",
            actor=calls.Actor("user:op"),
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
        await calls.act(
            s,
            call_id=cid,
            action="acknowledge",
            actor=calls.Actor("user:alice"),
            body={},
            now=clock.now(),
            ctx=d.ctx,
        )
    with pytest.raises(calls.CallError) as exc:
        async with maker() as s, s.begin():
            await calls.act(
                s,
                call_id=cid,
                action="acknowledge",
                actor=calls.Actor("user:bob"),
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
        await calls.act(
            s,
            call_id=cid,
            action="dispatch",
            actor=calls.Actor("user:op"),
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
            out = await calls.act(
                s,
                call_id=cid,
                action=action,
                actor=calls.Actor("user:op"),
                body=body or {},
                now=clock.now(),
                ctx=d.ctx,
            )
            await calls.queue_device_notices(s, out.device_notices, clock.now())

    async with maker() as s:
        cid = (await s.scalars(select(Call.id))).one()
    with pytest.raises(calls.CallError, match="not on duty"):
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
    with pytest.raises(calls.CallError, match="outcome"):
        await act("resolve", {})
    await act("note", {"text": "老人摔倒，已扶起，无明显外伤"})
    await act("resolve", {"outcome": "helped_on_site"})
    async with maker() as s:
        times = (await calls.call_times(s, [cid]))[cid]
        call = await s.get(Call, cid)
        acks = list(await s.scalars(select(Notification.body).where(Notification.channel == "mqtt")))
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
        await calls.act(
            s,
            call_id=cid2,
            action="dispatch",
            actor=calls.Actor("user:op"),
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


async def test_webhook_notifier_posts_json_and_reports_http_errors() -> None:
    import httpx

    from dispatcher.notifiers import WebhookNotifier

    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        seen.append(json.loads(request.content))
        return httpx.Response(200 if len(seen) == 1 else 503, text="busy")

    n = WebhookNotifier("http://bridge.invalid/notify")
    n._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    msg = Message(
        notification_id=7, call_id=3, purpose="notify_contact", target="phone:139", body={"name": "王强"}
    )
    assert await n.send(msg) == "HTTP 200"
    with pytest.raises(NotifyError, match="503"):
        await n.send(msg)
    assert seen[0]["target"] == "phone:139" and seen[0]["body"] == {"name": "王强"}
    await n.close()
