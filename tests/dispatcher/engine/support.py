"""What the dispatcher's tests share: a short escalation policy, a dispatcher over a small
registry (the ``setup`` fixture), and driving its loops (the clock and storing events come
from tests/support, re-exported here for the tests that import them from this module)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from config.settings import load_settings
from dispatcher.audit.models import AuditRow
from dispatcher.auth.models import User
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.registry.models import Contact
from tests.conftest import add_small_registry
from tests.support.clock import ManualClock
from tests.support.events import store_event
from tests.support.registry import staff_row

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # 11:00 in the county: daytime

SHORT_POLICY = """
policies:
  - name: short
    steps:
      - {action: alert_station, after_s: 0, until: closed}
      - {action: remind, after_s: 2, repeat_every_s: 2, max_repeats: 50, until: acknowledged}
      - {action: escalate_street, after_s: 6, until: acknowledged}
      - {action: escalate_county, after_s: 18, until: acknowledged}
      - {action: notify_contacts, after_s: 18, until: acknowledged, contacts: {timeout_s: 1}}
      - {action: alert_supervisor, after: travel_limit, until: on_scene}
"""


@pytest.fixture
async def setup(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> AsyncIterator[tuple[Dispatcher, ManualClock, LogNotifier]]:
    await add_small_registry(maker, {"h1-btn": "button", "h1-hub": "hub"})
    async with maker() as s, s.begin():
        s.add_all(
            [
                staff_row("cm1-r1"),
                staff_row("cm1-r2"),
                staff_row("st1-r1"),
                staff_row("cty-r1"),
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

__all__ = ["SHORT_POLICY", "T0", "ManualClock", "kinds", "run_until", "setup", "store_event"]
