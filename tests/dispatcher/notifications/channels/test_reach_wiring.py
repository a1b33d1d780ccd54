"""Reaching people on the local fake vendors, through the whole dispatcher: each person's
own channel order, "app first, then the phone if nobody looks" (fallback_after_s), the
voice round before the county, and one cost budget shared by two dispatcher copies on one
database (SQLite and, with --db postgresql, PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
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
from dispatcher.notifications.cost_ledger import SharedCostCounters
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.paging.models import Page
from dispatcher.registry.models import Staff
from tests.conftest import add_small_registry
from tests.dispatcher.engine.support import T0
from tests.dispatcher.notifications.channels.fakes import FakeVendors
from tests.support.clock import ManualClock
from tests.support.events import store_event

Maker = async_sessionmaker[AsyncSession]

# app first; the phone 20 s later if the page is still unanswered; then a voice round
POLICY = """
policies:
  - name: paging
    steps:
      - {action: alert_station, after_s: 0, until: closed}
      - {action: page_station, after_s: 0, until: acknowledged,
         paging: {mode: all_at_once, timeout_s: 60, fallback_after_s: 20}}
      - {action: page_station, after_s: 120, until: acknowledged, max_repeats: 1,
         paging: {mode: all_at_once, timeout_s: 60, via: [voice]}}
"""

BUDGET_POLICY = """
policies:
  - name: paging
    steps:
      - {action: alert_station, after_s: 0, until: closed}
      - {action: page_station, after_s: 0, until: acknowledged, paging: {mode: all_at_once, timeout_s: 600}}
"""

PHONES = {"p-voice": "13800000011", "p-route": "13800000012", "p-app": "13800000013", "p-4": "13800000014"}


def _notifications_yaml(vendors: FakeVendors, *, sms_per_hour: int = 300) -> str:
    vendor = f"""    access_key_id_env: T_ALIYUN_AK
    access_key_secret_env: T_ALIYUN_SECRET
    endpoint: "{vendors.host}"
    protocol: http"""
    return f"""
channels:
  aliyun_sms:
    type: aliyun_sms
{vendor}
    sign_name: 关爱呼叫
    templates:
      sos_page: {{code: SMS_480000001, params: [resident, address, link]}}
  aliyun_voice:
    type: aliyun_voice
{vendor}
    templates:
      sos_page: {{code: TTS_480000001, params: [resident, address]}}
routing:
  page: [app, aliyun_sms, aliyun_voice]
retry: {{max_attempts_per_channel: 1}}
cost_guard: {{sms_per_hour: {sms_per_hour}}}
"""


async def _staff(maker: Maker, orders: dict[str, str]) -> None:
    await add_small_registry(maker, {"h1-btn": "button", "h1-hub": "hub"})
    async with maker() as s, s.begin():
        await s.execute(Staff.__table__.update().where(Staff.station_id == "cm1").values(on_duty=False))
        s.add_all(
            [
                Staff(
                    id=sid,
                    station_id="cm1",
                    name=sid,
                    role="responder",
                    phone=PHONES[sid],
                    on_duty=True,
                    channels=o,
                )
                for sid, o in orders.items()
            ]
        )


def _dispatcher(
    tmp_path: Path, maker: Maker, env: dict[str, str], clock: ManualClock, instance: str
) -> Dispatcher:
    settings = load_settings(
        database_url="sqlite:///unused.db",
        escalation_file=tmp_path / "escalation.yaml",
        notifications_file=tmp_path / "notifications.yaml",
        public_url="https://carecall.example.org",
        instance=instance,
    )
    notifier = outbox_notifier(LogNotifier(), settings.notifications_file, env=env)
    assert isinstance(notifier, ChannelNotifier)
    return Dispatcher(
        settings=settings,
        maker=maker,
        bus=MemoryBus(),
        clock=clock,
        mqtt=None,
        notifier=notifier,
        ctx=context_for(settings),
    )


@pytest.fixture
async def copies(
    maker: Maker, tmp_path: Path, vendors: FakeVendors, env: dict[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Dispatcher, Dispatcher, ManualClock]]:
    policy, sms_per_hour = request.param
    (tmp_path / "escalation.yaml").write_text(policy, encoding="utf-8")
    (tmp_path / "notifications.yaml").write_text(
        _notifications_yaml(vendors, sms_per_hour=sms_per_hour), encoding="utf-8"
    )
    clock = ManualClock(T0)
    a = _dispatcher(tmp_path, maker, env, clock, "a")
    b = _dispatcher(tmp_path, maker, env, clock, "b")
    try:
        yield a, b, clock
    finally:
        for d in (a, b):
            assert isinstance(d.notifier, ChannelNotifier)
            await d.notifier.close()


async def _drain(d: Dispatcher) -> None:
    while await d.intake_once():
        pass
    while await d.timers_once():
        pass
    while await d.outbox_once():
        pass


def _numbers(vendors: FakeVendors, action: str) -> list[str]:
    key = "PhoneNumbers" if action == "SendSms" else "CalledNumber"
    return sorted(m.params[key] for m in vendors.of("aliyun", action))


@pytest.mark.parametrize("copies", [(POLICY, 300)], indirect=True)
async def test_own_orders_app_first_fallback_and_the_voice_round(
    copies: tuple[Dispatcher, Dispatcher, ManualClock], maker: Maker, vendors: FakeVendors
) -> None:
    d, _, clock = copies
    await _staff(maker, {"p-voice": "voice sms", "p-route": "", "p-app": "app"})
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await _drain(d)
    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
        pages = {p.staff_id: p for p in await paging.pages_of(s, call_id=call.id)}
        notes = {
            n.target: n for n in (await s.scalars(select(Notification).where(Notification.purpose == "page")))
        }
    assert set(pages) == {"p-voice", "p-route", "p-app"}
    # the app alone for p-app: no notification outside it; the others wait 20 s for the app
    assert set(notes) == {"staff:p-voice", "staff:p-route"}
    assert notes["staff:p-voice"].body["channels"] == ["voice", "sms"]
    assert "channels" not in notes["staff:p-route"].body
    assert all(n.next_attempt_at == T0 + timedelta(seconds=20) for n in notes.values())
    assert vendors.seen == []  # nothing sent while the app page may still be answered

    async with maker() as s, s.begin():  # p-route declines in the app within the 20 s
        await paging.answer(
            s,
            page_id=pages["p-route"].id,
            staff_id="p-route",
            accept=False,
            now=T0 + timedelta(seconds=10),
            actor="x",
        )
    clock.advance(20)
    await _drain(d)
    # p-voice is called (their own order: voice first), p-route is not disturbed any more
    assert _numbers(vendors, "SingleCallByTts") == [PHONES["p-voice"]]
    assert _numbers(vendors, "SendSms") == []
    async with maker() as s:
        notes = {
            n.target: n for n in (await s.scalars(select(Notification).where(Notification.purpose == "page")))
        }
        voice_page = await s.get(Page, pages["p-voice"].id)
    assert notes["staff:p-voice"].status == "sent"
    assert notes["staff:p-route"].status == "failed" and "declined" in (
        notes["staff:p-route"].last_error or ""
    )
    assert voice_page is not None and (voice_page.channel, voice_page.delivery) == ("voice", "delivered")

    # 60 s: the app round times out; 120 s: the last page before the county, by voice, to the
    # silent ones not yet called (p-app, whatever their own order); never to who declined
    clock.advance(40)
    await _drain(d)
    clock.advance(60)
    await _drain(d)
    async with maker() as s:
        rows = await paging.page_rows(s, call_id=call.id)
        notes_now = list(await s.scalars(select(Notification).where(Notification.purpose == "page")))
        paged = [r.detail for r in await s.scalars(select(AuditRow).where(AuditRow.kind == "paged"))]
    voice_round = [r for r in rows if r.paged_at == T0 + timedelta(seconds=120)]
    assert [(r.staff_id, r.channel, r.delivery) for r in voice_round] == [("p-app", "voice", "delivered")]
    assert all(r.channel != "voice" for r in rows if r.paged_at == T0 and r.staff_id != "p-voice")
    assert [d_["via"] for d_ in paged if "via" in d_] == [["voice"]]
    (new,) = [n for n in notes_now if n.target == "staff:p-app"]
    assert new.body["channels"] == ["voice"] and new.next_attempt_at == T0 + timedelta(seconds=120)
    assert _numbers(vendors, "SingleCallByTts") == sorted([PHONES["p-voice"], PHONES["p-app"]])
    assert _numbers(vendors, "SendSms") == []
    assert not vendors.refused
    assert (await verify_log(maker)).ok


@pytest.mark.parametrize("copies", [(BUDGET_POLICY, 2)], indirect=True)
async def test_two_dispatcher_copies_share_one_hourly_sms_budget(
    copies: tuple[Dispatcher, Dispatcher, ManualClock], maker: Maker, vendors: FakeVendors
) -> None:
    a, b, _ = copies
    assert isinstance(a.notifier, ChannelNotifier) and isinstance(a.notifier.counters, SharedCostCounters)
    await _staff(maker, {"p-voice": "sms", "p-route": "sms", "p-app": "sms", "p-4": "sms"})
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    while await a.intake_once():
        pass
    while await a.timers_once():
        pass
    # the copies take the outbox rows in turns, one a round: the device's ack, the station
    # alert, then the four pages' SMS (a, b, a, b)
    rounds = 0
    while await (a, b)[rounds % 2].outbox_once(limit=1):
        rounds += 1
    assert rounds == 7  # and the cost alert to the county centre (no supervisor here)
    assert len(vendors.of("aliyun", "SendSms")) == 2  # each copy alone would have sent 2 more
    async with maker() as s:
        rows = list(
            await s.scalars(
                select(AuditRow)
                .where(AuditRow.kind.in_(["notification_sent", "notification_failed", "cost_guard_hit"]))
                .order_by(AuditRow.seq)
            )
        )
    sent = [r for r in rows if r.kind == "notification_sent" and r.detail.get("purpose") == "page"]
    blocked = [
        r
        for r in rows
        if r.kind == "notification_failed" and r.detail.get("status") == "blocked_by_cost_guard"
    ]
    assert {r.actor for r in sent} == {"dispatcher-a", "dispatcher-b"} and len(sent) == 2
    assert {r.actor for r in blocked} == {"dispatcher-a", "dispatcher-b"} and len(blocked) == 2
    # the alert is raised once for the hour, by whichever copy hit the cap first
    (hit,) = [r for r in rows if r.kind == "cost_guard_hit"]
    assert hit.detail["scope"] == "hour" and hit.detail["kind"] == "sms" and hit.detail["limit"] == 2
