"""The outbox's channel path with a fake channel: what is routed and what stays with the
plain notifier, the notice a row becomes, the audit rows of each attempt (no phone
number), the outbox's retry and give-up, the page's delivery, and one cost alert."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.calls.models import Call
from dispatcher.engine import handling
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.channel_notifier import ChannelNotifier
from dispatcher.notifications.channels import (
    ChannelKind,
    CostAlert,
    DeliveryReceipt,
    Notice,
    NotificationsConfig,
    Purpose,
    ReceiptStatus,
    Recipient,
)
from dispatcher.notifications.channels.policy import CostScope
from dispatcher.notifications.compose import CallFacts, Person, compose, masked_target, recipient
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier, Message
from dispatcher.paging.models import Page
from tests.dispatcher.engine.support import T0, ManualClock, setup, store_event

__all__ = ["setup"]  # the dispatcher fixture

Maker = async_sessionmaker[AsyncSession]


@dataclass
class FakeChannel:
    """One attempt per send; answers from ``answers`` (then delivered)."""

    name: str = "fake_sms"
    kind: ChannelKind = ChannelKind.sms
    answers: list[ReceiptStatus] = field(default_factory=list)
    sent: list[Notice] = field(default_factory=list)

    async def send(self, notice: Notice) -> DeliveryReceipt:
        self.sent.append(notice)
        status = self.answers.pop(0) if self.answers else ReceiptStatus.delivered
        ok = status is ReceiptStatus.delivered
        return DeliveryReceipt(
            channel=self.name,
            kind=self.kind,
            status=status,
            provider="fake",
            provider_id=f"biz-{len(self.sent)}" if ok else None,
            error_code=None if ok else "fake.BROKEN",
            error_message=None if ok else "broken for 13800000001",
            retryable=False,
            elapsed_ms=1.0,
        )

    async def aclose(self) -> None:
        return None


def _config(names: list[str], routing: dict[str, list[str]], **more: object) -> NotificationsConfig:
    """A config naming the fakes (their entries are never built: the fakes stand in)."""
    placeholder = {"type": "http_sms", "url": "http://127.0.0.1:9/unused", "hmac_secret_env": "UNUSED"}
    return NotificationsConfig.model_validate(
        {
            "channels": {name: placeholder for name in names},
            "routing": routing,
            "retry": {"max_attempts_per_channel": 1},
            **more,
        }
    )


def _notifier(fake: FakeChannel, routing: dict[str, list[str]]) -> ChannelNotifier:
    return ChannelNotifier(_config([fake.name], routing), {fake.name: fake}, LogNotifier())


# --------------------------------------------------------------------------- pure parts


def test_only_routed_purposes_go_through_the_channels_and_app_is_left_to_the_page() -> None:
    n = _notifier(FakeChannel(), {"alert": ["app", "fake_sms"], "page": ["app"]})
    assert n.handles("alert_station") and n.handles("remind")
    assert not n.handles("page"), "app alone: the page's own stream, nothing to send here"
    assert not n.handles("notify_contact") and not n.handles("alert_supervisor")
    assert not n.handles("device_ack")
    assert [c.name for c in n.order("alert_station")] == ["fake_sms"]


async def test_unrouted_messages_go_to_the_plain_notifier() -> None:
    n = _notifier(FakeChannel(), {"alert": ["fake_sms"]})
    msg = Message(notification_id=1, call_id=2, purpose="notify_contact", target="phone:13900000001", body={})
    assert await n.send(msg) == "logged"
    assert isinstance(n.fallback, LogNotifier) and n.fallback.sent == [msg]


def test_a_cost_alert_is_new_once_per_call_or_per_hour() -> None:
    n = _notifier(FakeChannel(), {"alert": ["fake_sms"]})

    def alert(scope: CostScope, call_id: int) -> CostAlert:
        return CostAlert(
            kind=ChannelKind.sms, scope=scope, limit=2, used=2, call_id=call_id, channel="fake_sms"
        )

    assert len(n.new_alerts([alert(CostScope.call, 1)], 7200.0)) == 1
    assert n.new_alerts([alert(CostScope.call, 1)], 7300.0) == []
    assert len(n.new_alerts([alert(CostScope.call, 2)], 7300.0)) == 1
    assert len(n.new_alerts([alert(CostScope.hour, 1)], 7300.0)) == 1
    assert n.new_alerts([alert(CostScope.hour, 3)], 10799.0) == []
    assert len(n.new_alerts([alert(CostScope.hour, 3)], 10800.0)) == 1, "a new clock hour"


def test_compose_keeps_one_idempotency_key_per_row_and_drops_an_unusable_number() -> None:
    body = {"page_id": 3, "priority": "P1", "event_types": ["sos"], "link": "https://x/m/?call=9"}
    facts = CallFacts(resident="王秀英", address="幸福里 3-2-101", event_types=("fall",))
    to = recipient(Person(person_id="staff:a", name="Anna", phone="13812345678", group="cm1"))
    notice = compose(notification_id=5, call_id=9, purpose="page", body=body, facts=facts, to=to)
    assert notice.notice_id == "n5" and notice.purpose is Purpose.page and notice.template == "sos_page"
    assert notice.params["resident"] == "王秀英" and notice.params["event"] == "sos"
    assert notice.params["link"] == "https://x/m/?call=9" and notice.call_id == 9
    assert "幸福里" in notice.text and "P1" in notice.text and notice.text.endswith("https://x/m/?call=9")
    assert notice.recipient.phone == "+8613812345678" and notice.recipient.group == "cm1"
    assert recipient(Person(phone="not a number")).phone is None
    assert recipient(Person(phone="")) == Recipient()
    assert masked_target("phone:13900000001") == "phone:139****0001"


# --------------------------------------------------------------------------- the outbox


async def _open_call(d: Dispatcher, maker: Maker) -> int:
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()
    async with maker() as s:
        return int((await s.scalars(select(Call.id))).one())


async def test_station_alerts_go_through_the_channel_contacts_stay_with_the_notifier(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    d, _clock, _ = setup
    fake = FakeChannel()
    d.notifier = _notifier(fake, {"alert": ["fake_sms"]})
    call_id = await _open_call(d, maker)
    while await d.timers_once():
        pass
    while await d.outbox_once():
        pass
    assert [n.purpose for n in fake.sent] == [Purpose.alert]
    assert fake.sent[0].recipient.group == "cm1" and fake.sent[0].template == "station_alert"
    async with maker() as s:
        row = (await s.scalars(select(Notification).where(Notification.purpose == "alert_station"))).one()
        audit_rows = list(
            (await s.scalars(select(AuditRow).where(AuditRow.kind == "notification_sent"))).all()
        )
    assert row.status == "sent" and row.attempts == 1
    (sent,) = audit_rows
    assert sent.call_id == call_id
    assert sent.detail["channel"] == "fake_sms" and sent.detail["provider"] == "fake"
    assert sent.detail["status"] == "delivered" and sent.detail["provider_id"] == "biz-1"
    assert sent.detail["target"] == "station:cm1" and sent.detail["attempt"] == 1


async def test_a_failed_delivery_is_retried_with_the_outbox_backoff_then_given_up_and_the_page_says_so(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    d, _clock, _ = setup
    fake = FakeChannel(answers=[ReceiptStatus.failed] * 10)
    d.notifier = _notifier(fake, {"page": ["app", "fake_sms"]})
    call_id = await _open_call(d, maker)
    async with maker() as s, s.begin():
        page = Page(call_id=call_id, station_id="cm1", staff_id="cm1-r1", paged_at=T0)
        s.add(page)
        await s.flush()
        s.add(
            Notification(
                call_id=call_id,
                channel="log",
                purpose="page",
                target="staff:cm1-r1",
                body={"page_id": page.id, "link": "/m/?call=1"},
                status="pending",
                attempts=0,
                next_attempt_at=T0,
                created_at=T0,
            )
        )
        page_id = page.id
    while await d.outbox_once():
        pass
    async with maker() as s:
        note = (await s.scalars(select(Notification).where(Notification.purpose == "page"))).one()
        p = await s.get(Page, page_id)
    assert p is not None
    assert note.status == "pending" and note.attempts == 1
    assert note.next_attempt_at == T0 + timedelta(seconds=2) and note.last_error == "failed: fake.BROKEN"
    assert p.delivery == "pending" and p.receipt == "failed: fake.BROKEN"
    assert fake.sent[0].recipient.phone == "+8613800000001", "the staff record's phone"

    async with maker() as s, s.begin():  # the last attempt the outbox allows
        await s.execute(
            update(Notification)
            .where(Notification.id == note.id)
            .values(attempts=handling.MAX_ATTEMPTS - 1, next_attempt_at=T0)
        )
    while await d.outbox_once():
        pass
    async with maker() as s:
        note = (await s.scalars(select(Notification).where(Notification.purpose == "page"))).one()
        p = await s.get(Page, page_id)
        failed = list(
            (
                await s.scalars(
                    select(AuditRow).where(AuditRow.kind == "notification_failed").order_by(AuditRow.seq)
                )
            ).all()
        )
    assert p is not None
    assert note.status == "failed" and p.delivery == "failed" and p.channel == "app"
    assert [r.detail["final"] for r in failed] == [False, True]
    assert all(r.detail["error_code"] == "fake.BROKEN" and r.detail["channel"] == "fake_sms" for r in failed)
    assert all("13800000001" not in str(r.detail) for r in failed)
    assert (await verify_log(maker)).ok


async def test_the_cost_guard_is_one_audit_row_and_the_free_channel_still_delivers(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    d, clock, _ = setup
    sms = FakeChannel()
    robot = FakeChannel(name="fake_robot", kind=ChannelKind.robot)
    config = _config(
        ["fake_sms", "fake_robot"], {"alert": ["fake_sms", "fake_robot"]}, cost_guard={"sms_per_call": 1}
    )
    d.notifier = ChannelNotifier(config, {"fake_sms": sms, "fake_robot": robot}, LogNotifier())
    call_id = await _open_call(d, maker)
    for _ in range(3):  # the first alert and two reminders
        while await d.timers_once():
            pass
        while await d.outbox_once():
            pass
        clock.advance(2.1)
    assert len(sms.sent) == 1 and len(robot.sent) >= 2
    async with maker() as s:
        kinds = list(await s.scalars(select(AuditRow.kind).where(AuditRow.call_id == call_id)))
    assert kinds.count("cost_guard_hit") == 1


async def test_a_retry_of_a_page_answered_meanwhile_is_not_sent(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: Maker
) -> None:
    d, clock, _ = setup
    fake = FakeChannel(answers=[ReceiptStatus.failed])
    d.notifier = _notifier(fake, {"page": ["fake_sms"]})
    call_id = await _open_call(d, maker)
    async with maker() as s, s.begin():
        page = Page(call_id=call_id, station_id="cm1", staff_id="cm1-r1", paged_at=T0)
        s.add(page)
        await s.flush()
        s.add(
            Notification(
                call_id=call_id,
                channel="log",
                purpose="page",
                target="staff:cm1-r1",
                body={"page_id": page.id},
                status="pending",
                attempts=0,
                next_attempt_at=T0,
                created_at=T0,
            )
        )
        page_id = page.id
    while await d.outbox_once():
        pass
    assert len(fake.sent) == 1
    async with maker() as s, s.begin():  # accepted in the app before the retry
        await s.execute(update(Page).where(Page.id == page_id).values(outcome="accepted"))
    clock.advance(3)
    while await d.outbox_once():
        pass
    assert len(fake.sent) == 1, "no SMS for a page already answered"
    async with maker() as s:
        note = (await s.scalars(select(Notification).where(Notification.purpose == "page"))).one()
        p = await s.get(Page, page_id)
        last = (await s.scalars(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1))).one()
    assert p is not None and p.receipt == "not sent: the page was accepted" and p.delivery == "pending"
    assert note.status == "failed" and note.attempts == 2
    assert last.kind == "notification_failed" and last.detail["final"] is True
