"""A small county with calls made through the real dispatcher at known moments.

Two streets: st1 (community cm1, home h1, urban) and st2 (cm2, home h2). Calls start one
hour apart from S0; every action is taken at a chosen second after the start, so each
figure in the tests can be computed by hand from the table in ``CALLS`` below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from config.settings import load_settings
from device_gateway.models import Device
from dispatcher.auth.models import User
from dispatcher.calls.actions import act
from dispatcher.calls.context import Actor
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.notifiers import LogNotifier
from tests.conftest import add_small_registry
from tests.support.clock import ManualClock
from tests.support.events import store_event
from tests.support.registry import add_second_street, staff_row

S0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # 11:00 in Asia/Shanghai

# Escalation timers never fire in these tests (the loops are not run), so every time is
# the one written here. Policy steps would only add alert rows.
NO_TIMERS = """
policies:
  - name: quiet
    steps:
      - {action: alert_station, after_s: 0, until: closed}
"""


@dataclass(frozen=True)
class Plan:
    """One call: its home, and the second after its start at which each action happens."""

    home: str
    ack: int | None = None
    escalate_county: int | None = None
    dispatch: int | None = None
    arrive: int | None = None
    resolve: int | None = None
    outcome: str = "helped_on_site"
    resident_cancel: int | None = None


CALLS: list[Plan] = [
    Plan("h1", ack=10, dispatch=40, arrive=600, resolve=1200),
    Plan("h1", ack=45, dispatch=100, arrive=1000, resolve=1500, outcome="no_access"),
    Plan("h1", ack=60, resolve=300, outcome="false_alarm"),
    Plan("h1", ack=61, dispatch=120, arrive=900, resolve=2000),
    Plan("h1", escalate_county=150, ack=200, dispatch=260, arrive=700, resolve=1000),
    Plan("h1", resident_cancel=20),
    Plan("h2", ack=30, resolve=90, outcome="false_alarm"),
    Plan("h1"),  # still open, never answered: the report is taken 100 s after it started
]
NOW = S0 + timedelta(hours=len(CALLS) - 1, seconds=100)  # 100 s after the last call started


@dataclass
class World:
    maker: async_sessionmaker[AsyncSession]
    clock: ManualClock
    call_ids: list[int]
    url: str


async def _act(d: Dispatcher, cid: int, action: str, at: datetime, **body: Any) -> None:
    async with d.maker() as s, s.begin():
        await act(
            s, call_id=cid, action=action, actor=Actor("user:op"), body=body, now=at, ctx=d.ctx
        )


async def build_world(maker: async_sessionmaker[AsyncSession], tmp_path: Path, url: str) -> World:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        await add_second_street(s, area="rural")
        await s.flush()
        s.add(Device(id="h2-btn", home_id="h2", kind="button", heartbeat_s=60, enabled=True, created_at=S0))
        s.add_all(
            [
                staff_row("cm1-r1", phone="1", shifts="day"),
                staff_row("cm2-r1", phone="2", shifts="day late night"),
                User(
                    username="sup-st1", password_hash="x", role="supervisor", station_id="st1", created_at=S0
                ),
                User(
                    username="sup-st2", password_hash="x", role="supervisor", station_id="st2", created_at=S0
                ),
                User(
                    username="sup-county",
                    password_hash="x",
                    role="supervisor",
                    station_id="county",
                    created_at=S0,
                ),
                User(username="op-cm1", password_hash="x", role="operator", station_id="cm1", created_at=S0),
                User(
                    username="op-county",
                    password_hash="x",
                    role="operator",
                    station_id="county",
                    created_at=S0,
                ),
            ]
        )
    policy = tmp_path / "escalation.yaml"
    policy.write_text(NO_TIMERS, encoding="utf-8")
    settings = load_settings(database_url=url, escalation_file=policy)
    clock = ManualClock(S0)
    d = Dispatcher(
        settings=settings, maker=maker, bus=MemoryBus(), clock=clock, mqtt=None, notifier=LogNotifier()
    )
    ids: list[int] = []
    for n, plan in enumerate(CALLS):
        start = S0 + timedelta(hours=n)
        clock.t = start
        await store_event(maker, f"{plan.home}-btn", f"sos-{n}", "sos", start, home_id=plan.home)
        assert await d.intake_once()
        cid = max(ids, default=0) + 1
        ids.append(cid)
        steps: list[tuple[int, str, dict[str, Any]]] = []
        if plan.escalate_county is not None:
            steps.append((plan.escalate_county, "escalate", {"to": "county"}))
        if plan.ack is not None:
            steps.append((plan.ack, "acknowledge", {}))
        if plan.dispatch is not None:
            staff = "cm1-r1" if plan.home == "h1" else "cm2-r1"
            steps.append((plan.dispatch, "dispatch", {"staff_ids": [staff]}))
        if plan.arrive is not None:
            steps.append((plan.arrive, "arrive", {}))
        if plan.resolve is not None:
            steps.append((plan.resolve, "resolve", {"outcome": plan.outcome}))
        for sec, action, body in sorted(steps, key=lambda x: x[0]):
            await _act(d, cid, action, start + timedelta(seconds=sec), **body)
        if plan.resident_cancel is not None:
            at = start + timedelta(seconds=plan.resident_cancel)
            clock.t = at
            await store_event(
                maker, f"{plan.home}-btn", f"cancel-{n}", "cancel", at, "cancel", home_id=plan.home
            )
            assert await d.intake_once()
    clock.t = NOW
    return World(maker, clock, ids, url)


@pytest.fixture
async def world(maker: async_sessionmaker[AsyncSession], tmp_path: Path, db_url: str) -> AsyncIterator[World]:
    yield await build_world(maker, tmp_path, db_url)


# Moments with every microsecond digit in play, on both sides of midnight and of a
# second, and long before and after today: what epoch_us must return exactly.
EXACT_MOMENTS = [
    datetime(2026, 11, 26, 3, 4, 5, 123456, tzinfo=UTC),
    datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 11, 27, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 11, 27, 0, 0, 0, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    datetime(2099, 1, 1, 12, 0, 0, 654321, tzinfo=UTC),
]


async def check_epoch_us_exact(maker: async_sessionmaker[AsyncSession]) -> None:
    """Store audit rows at awkward moments, read them back through the report's
    epoch_us expression, and compare with the exact microseconds."""
    from sqlalchemy import insert, select

    from dispatcher.audit.models import AuditRow
    from dispatcher.oversight.figures import from_us, to_us
    from dispatcher.oversight.service import epoch_us

    async with maker() as s, s.begin():
        top = await s.scalar(select(func.coalesce(func.max(AuditRow.seq), 0)))
        await s.execute(
            insert(AuditRow),
            [
                dict(
                    seq=int(top or 0) + 1000 + i,
                    call_id=None,
                    at=at,
                    kind="epoch_probe",
                    actor="test",
                    station_id=None,
                    detail={},
                    prev_hash="x",
                    hash="y",
                )
                for i, at in enumerate(EXACT_MOMENTS)
            ],
        )
    async with maker() as s:
        got = (
            await s.execute(
                select(epoch_us(AuditRow.at), AuditRow.at)
                .where(AuditRow.kind == "epoch_probe")
                .order_by(AuditRow.seq)
            )
        ).all()
    assert [us for us, _ in got] == [to_us(at) for at in EXACT_MOMENTS]
    assert [from_us(us) for us, _ in got] == EXACT_MOMENTS
