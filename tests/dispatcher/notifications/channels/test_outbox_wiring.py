"""The whole path on the local fake vendors: an SOS opens a call, its page_station step
pages the station's people, each page queues a notification, the dispatcher's outbox
sends it as an Alibaba SMS, and the page, the outbox row and the audit log say so — with
the cost guard stopping the SMS past the hourly cap, and no phone number in the record."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.shell.runtime import context_for
from config.settings import load_settings
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.calls import paging
from dispatcher.calls.models import Call
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.channel_notifier import ChannelNotifier, outbox_notifier
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.paging.models import Page
from dispatcher.registry.models import Staff
from tests.conftest import add_small_registry
from tests.dispatcher.engine.support import T0
from tests.dispatcher.notifications.channels.fakes import FakeVendors
from tests.support.clock import ManualClock
from tests.support.events import store_event
from tests.support.registry import staff_row

Maker = async_sessionmaker[AsyncSession]

POLICY = """
policies:
  - name: paging
    steps:
      - {action: alert_station, after_s: 0, until: closed}
      - {action: page_station, after_s: 0, until: acknowledged, paging: {mode: all_at_once, timeout_s: 600}}
"""

PHONES = ("13800000001", "13800000002", "13800000005")


def _notifications_yaml(vendors: FakeVendors, sms_per_hour: int) -> str:
    return f"""
channels:
  aliyun_sms:
    type: aliyun_sms
    access_key_id_env: T_ALIYUN_AK
    access_key_secret_env: T_ALIYUN_SECRET
    endpoint: "{vendors.host}"
    protocol: http
    sign_name: 关爱呼叫
    timeout_s: 3
    templates:
      sos_page: {{code: SMS_480000001, params: [resident, address, link]}}
routing:
  page: [app, aliyun_sms]
retry: {{max_attempts_per_channel: 1}}
cost_guard: {{sms_per_hour: {sms_per_hour}}}
"""


@pytest.fixture
async def wired(
    maker: Maker, tmp_path: Path, vendors: FakeVendors, env: dict[str, str]
) -> AsyncIterator[tuple[Dispatcher, ManualClock]]:
    await add_small_registry(maker, {"h1-btn": "button", "h1-hub": "hub"})
    async with maker() as s, s.begin():
        s.add_all(
            [
                staff_row("cm1-r1"),
                staff_row("cm1-r2", on_duty=True),
                Staff(
                    id="cm1-r3", station_id="cm1", name="孙医生", role="doctor", phone=PHONES[2], on_duty=True
                ),
            ]
        )
    (tmp_path / "escalation.yaml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "notifications.yaml").write_text(_notifications_yaml(vendors, 2), encoding="utf-8")
    settings = load_settings(
        database_url="sqlite:///unused.db",
        escalation_file=tmp_path / "escalation.yaml",
        notifications_file=tmp_path / "notifications.yaml",
        public_url="https://carecall.example.org",
    )
    notifier = outbox_notifier(LogNotifier(), settings.notifications_file, env=env)
    assert isinstance(notifier, ChannelNotifier)
    clock = ManualClock(T0)
    d = Dispatcher(
        settings=settings,
        maker=maker,
        bus=MemoryBus(),
        clock=clock,
        mqtt=None,
        notifier=notifier,
        ctx=context_for(settings),
    )
    try:
        yield d, clock
    finally:
        await notifier.close()


async def _drain(d: Dispatcher) -> None:
    while await d.intake_once():
        pass
    while await d.timers_once():
        pass
    while await d.outbox_once():
        pass


async def test_sos_pages_by_sms_marks_the_page_delivered_and_the_cost_guard_stops_the_third(
    wired: tuple[Dispatcher, ManualClock], maker: Maker, vendors: FakeVendors
) -> None:
    d, clock = wired
    assert d.ctx.page_notifications
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await _drain(d)

    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
        pages = {p.staff_id: p for p in (await s.scalars(select(Page))).all()}
        notes = {n.target: n for n in (await s.scalars(select(Notification))).all()}
        rows = list((await s.scalars(select(AuditRow).where(AuditRow.call_id == call.id))).all())
        listed = await paging.page_rows(s, call_id=call.id)  # what the console's call detail shows
    assert set(pages) == {"cm1-r1", "cm1-r2", "cm1-r3"}
    assert sorted((p.channel, p.delivery) for p in listed) == [
        ("app", "pending"),
        ("sms", "delivered"),
        ("sms", "delivered"),
    ]

    # two SMS reached the fake Alibaba endpoint, signed, with the approved template
    sms = vendors.of("aliyun", "SendSms")
    assert len(sms) == 2 and not vendors.refused
    sent_to = {m.params["PhoneNumbers"] for m in sms}
    assert sent_to <= set(PHONES)
    params = json.loads(sms[0].params["TemplateParam"])
    assert params["link"] == f"https://carecall.example.org/m/?call={call.id}"
    assert params["address"] == "建设路1号"

    delivered = [p for p in pages.values() if p.delivery == "delivered"]
    assert len(delivered) == 2
    assert all(p.channel == "sms" and p.receipt.startswith("aliyun_sms ") for p in delivered)
    (blocked,) = [p for p in pages.values() if p.delivery != "delivered"]
    assert blocked.delivery == "pending" and "blocked_by_cost_guard" in blocked.receipt

    # the blocked one stays in the outbox for its retry, like any failed notification
    note = notes[f"staff:{blocked.staff_id}"]
    assert note.status == "pending" and note.attempts == 1 and note.purpose == "page"
    assert sum(n.status == "sent" for n in notes.values() if n.purpose == "page") == 2

    sent_rows = [r for r in rows if r.kind == "notification_sent" and r.detail.get("purpose") == "page"]
    assert len(sent_rows) == 2
    assert {r.detail["provider"] for r in sent_rows} == {"aliyun"}
    assert all(r.detail["status"] == "delivered" and r.detail["provider_id"] for r in sent_rows)
    failed = [r for r in rows if r.kind == "notification_failed" and r.detail.get("purpose") == "page"]
    assert [r.detail["status"] for r in failed] == ["blocked_by_cost_guard"]
    assert [r.kind for r in rows].count("cost_guard_hit") == 1

    # the retry is blocked again, and the alert is not raised twice
    clock.advance(3)
    await _drain(d)
    async with maker() as s:
        kinds = list(await s.scalars(select(AuditRow.kind).where(AuditRow.call_id == call.id)))
        details = list(await s.scalars(select(AuditRow.detail)))
    assert kinds.count("cost_guard_hit") == 1
    assert len(vendors.of("aliyun", "SendSms")) == 2
    # never a phone number in the record
    record = json.dumps(details, ensure_ascii=False)
    assert not any(phone in record for phone in PHONES)
    assert (await verify_log(maker)).ok


async def test_without_a_notifications_file_pages_queue_nothing(maker: Maker, tmp_path: Path) -> None:
    settings = load_settings(database_url="sqlite:///unused.db")
    assert outbox_notifier(notifier := LogNotifier(), settings.notifications_file) is notifier
    assert not context_for(settings).page_notifications
