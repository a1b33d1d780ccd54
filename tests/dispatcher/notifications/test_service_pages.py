"""Outbox rows about an order or a visit, not a call: exactly one subject (enforced by
the database too), who runs a station as the registry says, the notice such a row
becomes, the channel path's retries and records without a call (no phone number in an
audit row or a log line), and the cost guard's alert about such a page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.logs import configure_logging
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.auth.models import User
from dispatcher.calls.outbox import queue_supervisor_alert
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.channel_notifier import ChannelNotifier
from dispatcher.notifications.channels import (
    ChannelKind,
    DeliveryReceipt,
    Notice,
    NotificationsConfig,
    Purpose,
    ReceiptStatus,
)
from dispatcher.notifications.compose import CallFacts, compose, recipient, target_person
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.notifications.service_pages import ORDER_BREACH, queue_service_page
from dispatcher.orders.catalogue_file import load_catalogue
from dispatcher.orders.schemas import BookingIn
from dispatcher.orders.service import create_order
from dispatcher.registry.models import Staff
from dispatcher.registry.people import station_people
from tests.dispatcher.engine.support import T0, ManualClock, setup

__all__ = ["setup"]  # the dispatcher fixture

Maker = async_sessionmaker[AsyncSession]
PHONE = "13900000001"


async def _order(maker: Maker) -> int:
    async with maker() as s, s.begin():
        order, _ = await create_order(
            s,
            catalogue=load_catalogue(),
            booking=BookingIn(resident_id="r1", kind="chat"),
            source="operator",
            actor="op",
            scope=None,
            client_ref=None,
            now=T0,
        )
        return order.id


def _row(**subject: int | None) -> Notification:
    return Notification(
        channel="log",
        purpose=ORDER_BREACH,
        target="station:cm1",
        body={},
        status="pending",
        attempts=0,
        next_attempt_at=T0,
        created_at=T0,
        **subject,
    )


async def test_a_row_is_about_exactly_one_call_order_or_visit(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    order_id = await _order(maker)
    with pytest.raises(ValueError):
        queue_service_page(None, purpose=ORDER_BREACH, targets=[], body={}, channel="log", now=T0)  # type: ignore[arg-type]
    for subject in ({}, {"order_id": order_id, "visit_id": order_id}):
        with pytest.raises(IntegrityError):
            async with maker() as s, s.begin():
                s.add(_row(**subject))
    async with maker() as s, s.begin():
        rows = queue_service_page(
            s,
            purpose=ORDER_BREACH,
            targets=["station:cm1", "station:cm1", "staff:cm1-r1"],
            body={"order_id": order_id},
            channel="log",
            now=T0,
            order_id=order_id,
        )
    assert [(r.target, r.order_id, r.call_id, r.status) for r in rows] == [
        ("station:cm1", order_id, None, "pending"),
        ("staff:cm1-r1", order_id, None, "pending"),
    ]


async def test_who_runs_a_station_as_the_registry_says(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    async with maker() as s, s.begin():
        s.add(Staff(id="cm1-m1", station_id="cm1", name="王站长", role="manager", phone="13800000011"))
        s.add(Staff(id="cm1-m2", station_id="cm1", name="刘站长", role="manager", phone="13800000012"))
        await s.flush()
        s.add_all(
            [
                # bound to a manager's staff row: counted once, as the login
                User(
                    username="wang",
                    password_hash="x",
                    role="supervisor",
                    station_id="cm1",
                    staff_id="cm1-m1",
                    created_at=T0,
                ),
                User(
                    username="gone",
                    password_hash="x",
                    role="supervisor",
                    station_id="cm1",
                    active=False,
                    created_at=T0,
                ),
                User(username="op", password_hash="x", role="operator", station_id="cm1", created_at=T0),
            ]
        )
    async with maker() as s:
        people = await station_people(s, ["cm1", "st1", "nowhere"])
    assert people["cm1"].managers == ("user:wang", "staff:cm1-m2")
    assert people["cm1"].on_duty == ("staff:cm1-r1",)  # cm1-r2 is off duty
    assert people["st1"].managers == ("user:sup-st1",) and people["st1"].on_duty == ("staff:st1-r1",)
    assert people["nowhere"].managers == people["nowhere"].on_duty == ()


def test_an_order_page_names_the_order_never_a_call() -> None:
    body = {"order_id": 7, "level": "accept", "step": "manager", "station_id": "cm1"}
    notice = compose(
        notification_id=3,
        call_id=None,
        purpose=ORDER_BREACH,
        body=body,
        facts=CallFacts(),
        to=recipient(target_person(f"phone:{PHONE}")),
    )
    assert notice.purpose is Purpose.supervisor and notice.call_id is None
    assert notice.text.startswith("【服务单超时】服务单 #7 未按时接单") and "呼叫" not in notice.text
    assert notice.params["call"] == "" and notice.params["subject"] == "服务单 #7 未按时接单"
    assert "None" not in notice.text + str(notice.subject)
    visit = compose(
        notification_id=4,
        call_id=None,
        purpose="visit_missed",
        body={"visit_id": 9, "level": 1},
        facts=CallFacts(),
        to=recipient(target_person("station:cm1")),
    )
    assert visit.text.startswith("【探访未完成】探访 #9")


@dataclass
class Broken:
    """An SMS channel that fails ``failures`` times, naming the number it failed for."""

    failures: int
    name: str = "fake_sms"
    kind: ChannelKind = ChannelKind.sms
    sent: list[Notice] = field(default_factory=list)

    async def send(self, notice: Notice) -> DeliveryReceipt:
        self.sent.append(notice)
        ok = len(self.sent) > self.failures
        return DeliveryReceipt(
            channel=self.name,
            kind=self.kind,
            status=ReceiptStatus.delivered if ok else ReceiptStatus.failed,
            provider="fake",
            provider_id="biz-1" if ok else None,
            error_code=None if ok else "fake.BROKEN",
            error_message=None if ok else f"no route to {PHONE}",
            retryable=False,
            elapsed_ms=1.0,
        )

    async def aclose(self) -> None:
        return None


def _channels(fake: Broken) -> ChannelNotifier:
    placeholder = {"type": "http_sms", "url": "http://127.0.0.1:9/unused", "hmac_secret_env": "UNUSED"}
    cfg = NotificationsConfig.model_validate(
        {
            "channels": {fake.name: placeholder},
            "routing": {"supervisor": [fake.name]},
            "retry": {"max_attempts_per_channel": 1},
        }
    )
    return ChannelNotifier(cfg, {fake.name: fake}, LogNotifier())


async def test_a_failing_channel_retries_the_order_page_and_no_log_or_record_holds_the_number(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    d, clock, _ = setup
    fake = Broken(failures=2)
    d.notifier = _channels(fake)
    order_id = await _order(maker)
    async with maker() as s, s.begin():
        [note] = queue_service_page(
            s,
            purpose=ORDER_BREACH,
            targets=[f"phone:{PHONE}"],
            body={"order_id": order_id, "level": "accept", "station_id": "cm1"},
            channel="log",
            now=T0,
            order_id=order_id,
        )
    for _ in range(10):
        while await d.outbox_once():
            pass
        clock.advance(2)
    async with maker() as s:
        row = await s.get(Notification, note.id)
        rows = (
            await s.scalars(
                select(AuditRow)
                .where(AuditRow.kind.in_(["notification_failed", "notification_sent"]))
                .order_by(AuditRow.seq)
            )
        ).all()
    assert row is not None and (row.status, row.attempts) == ("sent", 3)
    assert [n.recipient.phone for n in fake.sent] == [f"+86{PHONE}"] * 3
    assert [r.kind for r in rows] == ["notification_failed", "notification_failed", "notification_sent"]
    assert all(r.call_id is None and r.detail["order_id"] == order_id and r.station_id == "cm1" for r in rows)
    assert all(PHONE not in str(r.detail) for r in rows)
    err = capsys.readouterr().err
    assert "notify attempt" in err and "fake.BROKEN" in err, "the failures were logged"
    assert PHONE not in err
    assert (await verify_log(maker)).ok
    assert clock.now() - T0 >= timedelta(seconds=6)


async def test_a_cost_alert_about_an_order_page_goes_to_the_stations_supervisors(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    order_id = await _order(maker)
    async with maker() as s, s.begin():
        s.add(User(username="sup-cm1", password_hash="x", role="supervisor", station_id="cm1", created_at=T0))
    async with maker() as s, s.begin():
        plan = await queue_supervisor_alert(
            s,
            call_id=None,
            purpose="cost_guard",
            body={"kind": "sms"},
            channel="log",
            now=T0,
            actor="test",
            order_id=order_id,
            station_id="cm1",
        )
    assert plan.targets == ("user:sup-cm1", "user:sup-st1")
    async with maker() as s:
        alerts = (await s.scalars(select(Notification).where(Notification.purpose == "cost_guard"))).all()
    assert sorted((n.target, n.order_id, n.call_id) for n in alerts) == [
        ("user:sup-cm1", order_id, None),
        ("user:sup-st1", order_id, None),
    ]
