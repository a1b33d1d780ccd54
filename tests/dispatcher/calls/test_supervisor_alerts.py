"""The escalation step ``alert_supervisor`` reaches the real supervisors of the call's
area (issue 13): the station's and the street's, the county's when the street has none,
each through their own channels; nobody qualifying is recorded and the county centre's
duty group gets the alert — never a placeholder (SQLite and, with --db postgresql,
PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.auth.models import User
from dispatcher.calls.models import Call
from dispatcher.calls.outbox import area_supervisors
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.channel_notifier import ChannelNotifier
from dispatcher.notifications.channels import (
    ChannelKind,
    DeliveryReceipt,
    Notice,
    NotificationsConfig,
    ReceiptStatus,
)
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.registry.models import Staff
from tests.dispatcher.engine.support import T0, ManualClock, setup, store_event

__all__ = ["setup"]  # the dispatcher fixture (county → st1 → cm1, supervisor sup-st1 at st1)

Maker = async_sessionmaker[AsyncSession]
TRAVEL_LIMIT_S = 15 * 60  # the urban service circle: when alert_supervisor is due


@dataclass
class FakeChannel:
    name: str
    kind: ChannelKind
    sent: list[Notice] = field(default_factory=list)

    async def send(self, notice: Notice) -> DeliveryReceipt:
        self.sent.append(notice)
        return DeliveryReceipt(
            channel=self.name, kind=self.kind, status=ReceiptStatus.delivered, provider="fake", elapsed_ms=1.0
        )

    async def aclose(self) -> None:
        return None


async def _users(maker: Maker, users: dict[str, str], *, staff_id: str | None = None) -> None:
    async with maker() as s, s.begin():
        for username, station in users.items():
            s.add(
                User(
                    username=username, password_hash="x", role="supervisor", station_id=station, created_at=T0
                )
            )
        if staff_id is not None:
            await s.flush()
            await s.execute(update(User).where(User.username == "sup-st1").values(staff_id=staff_id))


async def _deactivate(maker: Maker, username: str) -> None:
    async with maker() as s, s.begin():
        await s.execute(update(User).where(User.username == username).values(active=False))


async def _past_travel_limit(d: Dispatcher, clock: ManualClock, maker: Maker) -> int:
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    while await d.intake_once():
        pass
    clock.advance(TRAVEL_LIMIT_S + 1)
    while await d.timers_once():
        pass
    async with maker() as s:
        return int((await s.scalars(select(Call.id))).one())


async def _supervisor_targets(maker: Maker) -> list[str]:
    async with maker() as s:
        rows = await s.scalars(select(Notification.target).where(Notification.purpose == "alert_supervisor"))
        return sorted(rows)


async def _audit(maker: Maker, call_id: int, kind: str) -> list[AuditRow]:
    async with maker() as s:
        return list(
            await s.scalars(select(AuditRow).where(AuditRow.call_id == call_id, AuditRow.kind == kind))
        )


async def test_station_and_street_supervisors_are_alerted_not_the_county(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    d, clock, _ = setup
    await _users(maker, {"sup-cm1": "cm1", "sup-cty": "county"})
    call_id = await _past_travel_limit(d, clock, maker)
    assert await _supervisor_targets(maker) == ["user:sup-cm1", "user:sup-st1"]
    (alerted,) = [
        r for r in await _audit(maker, call_id, "alerted") if r.detail.get("purpose") == "alert_supervisor"
    ]
    assert alerted.detail["supervisors"] == ["sup-cm1", "sup-st1"]
    assert alerted.detail["layers"] == ["station", "street"]
    assert (await verify_log(maker)).ok


async def test_a_street_without_supervisor_brings_in_the_county_and_inactive_users_never(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    d, clock, _ = setup
    await _users(maker, {"sup-cty": "county", "sup-cty-gone": "county"})
    await _deactivate(maker, "sup-st1")
    await _deactivate(maker, "sup-cty-gone")
    await _past_travel_limit(d, clock, maker)
    assert await _supervisor_targets(maker) == ["user:sup-cty"]


async def test_nobody_qualifies_recorded_and_sent_to_the_county_centre(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    d, clock, _ = setup
    await _deactivate(maker, "sup-st1")
    call_id = await _past_travel_limit(d, clock, maker)
    assert await _supervisor_targets(maker) == ["station:county"]
    failed = [r for r in await _audit(maker, call_id, "notification_failed") if r.detail.get("error_code")]
    (gap,) = failed
    assert gap.detail["error_code"] == "no_supervisor" and gap.detail["purpose"] == "alert_supervisor"
    assert gap.detail["fallback"] == ["station:county"] and gap.detail["final"] is False
    async with maker() as s:
        assert not list(await s.scalars(select(Notification).where(Notification.target.like("supervisor:%"))))
    # the outbox delivers it like any notification (the log notifier here)
    while await d.outbox_once():
        pass
    async with maker() as s:
        (n,) = await s.scalars(select(Notification).where(Notification.purpose == "alert_supervisor"))
    assert n.status == "sent"


async def test_area_supervisors_for_a_call_without_station(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    await _users(maker, {"sup-cty": "county"})
    async with maker() as s:
        assert (await area_supervisors(s, station_id=None)).usernames == ("sup-cty",)
        assert (await area_supervisors(s, station_id="no-such-station")).usernames == ("sup-cty",)
        assert (await area_supervisors(s, station_id="st1")).usernames == ("sup-st1",)


def _notifier(robot: FakeChannel, sms: FakeChannel) -> ChannelNotifier:
    placeholder = {"type": "http_sms", "url": "http://127.0.0.1:9/unused", "hmac_secret_env": "UNUSED"}
    cfg = NotificationsConfig.model_validate(
        {
            "channels": {robot.name: placeholder, sms.name: placeholder},
            "routing": {"supervisor": [robot.name, sms.name]},
            "retry": {"max_attempts_per_channel": 1},
        }
    )
    return ChannelNotifier(cfg, {robot.name: robot, sms.name: sms}, LogNotifier())


async def test_each_supervisor_through_their_own_channels_else_the_route(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    d, clock, _ = setup
    robot = FakeChannel("fake_robot", ChannelKind.robot)
    sms = FakeChannel("fake_sms", ChannelKind.sms)
    d.notifier = _notifier(robot, sms)
    # sup-st1 is bound to a staff row that asks for SMS; sup-cm1 has no staff row: the route
    await _users(maker, {"sup-cm1": "cm1"}, staff_id="st1-r1")
    async with maker() as s, s.begin():
        await s.execute(update(Staff).where(Staff.id == "st1-r1").values(channels="sms"))
    await _past_travel_limit(d, clock, maker)
    clock.advance(1)
    while await d.outbox_once():
        pass
    assert [n.recipient.person_id for n in sms.sent] == ["user:sup-st1"]
    assert sms.sent[0].channels == ("sms",) and sms.sent[0].recipient.phone is not None
    assert "user:sup-cm1" in [n.recipient.person_id for n in robot.sent]
    assert "user:sup-st1" not in [n.recipient.person_id for n in robot.sent]
    assert clock.now() - T0 > timedelta(seconds=TRAVEL_LIMIT_S)
