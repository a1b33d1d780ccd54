"""End to end: ``carecall demo --history-days`` (the embedded runtime, SQLite, a temp dir)
fills simulated days in which the simulated staff answered, dispatched, arrived and closed
calls through the audit log, worked the service orders (service buttons and phone
bookings) and the welfare visits, and the oversight figures for those days are not empty."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from carecall.core.clock import Clock
from carecall.core.db import make_engine, make_sessionmaker
from carecall.shell.demo import run_demo
from carecall.shell.demo_history import HISTORY_HEARTBEATS_FILE
from config.settings import load_settings
from device_gateway.models import Device
from device_gateway.service import Gateway
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.auth.models import User
from dispatcher.calls.models import Call
from dispatcher.orders.models import Order
from dispatcher.oversight.figures import Period
from dispatcher.oversight.reports import ReportScope, summary_report
from dispatcher.oversight.services_reports import orders_data, visits_data
from dispatcher.oversight.targets import Targets
from dispatcher.visits.models import Visit
from tests.support.ports import free_port

# SQLite only: `carecall demo` runs its embedded runtime on a SQLite file of its own.
# demo_history: the month-of-history catch-up is timing-sensitive on a shared 2-core machine
# (it failed 2 of 3 runs at the base commit too); .ci/run gives it its own step, see there.
pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only, pytest.mark.demo_history]

HISTORY_DAYS = 1.5


async def test_history_fills_days_the_dashboard_can_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/demo.db"
    settings = load_settings(
        database_url=url,
        http_port=free_port(),
        embedded_mqtt_port=free_port(),
        speed=10_000,
        log_level="WARNING",
    )
    stop = asyncio.Event()
    lines: list[str] = []
    clocks: list[Clock] = []
    offsets: list[float] = []

    async def ready(gateway: Gateway) -> None:
        clocks.append(gateway.clock)

    def progress(line: str) -> None:
        lines.append(line)
        if "filled" in line:
            # issue 13: the hand-over to ×1 is at the true now, however long it took
            offsets.append(clocks[0].now().timestamp() - time.time())
            stop.set()

    started = datetime.now(UTC)
    await asyncio.wait_for(
        run_demo(
            settings,
            stop,
            simulate=True,
            announce=lines.append,
            ready=ready,
            history_days=HISTORY_DAYS,
            progress=progress,
            progress_every_s=2.0,
            fine_speed=100.0,
        ),
        timeout=150,
    )
    assert any("filled" in line and "real time" in line for line in lines), lines
    assert len(offsets) == 1 and abs(offsets[0]) < 1.0, offsets

    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    try:
        async with maker() as s:
            calls = int(await s.scalar(select(func.count()).select_from(Call)) or 0)
            kinds = dict((await s.execute(select(AuditRow.kind, func.count()).group_by(AuditRow.kind))).all())
            first = await s.scalar(select(func.min(AuditRow.at)))
            actors = set(
                await s.scalars(select(AuditRow.actor).where(AuditRow.kind == "acknowledged").distinct())
            )
            sim_users = set(await s.scalars(select(User.username).where(User.username.like("sim-%"))))
            heartbeats = set(await s.scalars(select(Device.heartbeat_s).distinct()))
        assert (await verify_log(maker)).ok
        assert calls >= 3
        for kind in ("acknowledged", "responder_dispatched", "on_scene"):
            assert kinds.get(kind, 0) > 0, kinds
        assert kinds.get("resolved", 0) + kinds.get("cancelled", 0) > 0, kinds
        assert first is not None
        first = first if first.tzinfo else first.replace(tzinfo=UTC)
        assert first < started - timedelta(hours=12)  # history, not "now"
        # answered by simulated staff who are real users of the registry
        assert actors and all(a.startswith("user:sim-") for a in actors)
        assert {a.removeprefix("user:") for a in actors} <= sim_users
        # the catch-up rhythm was put back
        assert 43200 not in heartbeats
        assert not (tmp_path / HISTORY_HEARTBEATS_FILE).exists()

        # the period in local days (Asia/Shanghai, UTC+8): after 16:00 UTC the calls of the
        # last hours fall on tomorrow's date there, so the period runs to tomorrow
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
        period = Period(start=(started - timedelta(days=HISTORY_DAYS + 1)).date(), end=tomorrow)
        report = await summary_report(
            maker, where=ReportScope(None), period=period, targets=Targets(), now=datetime.now(UTC)
        )
        summary = report["summary"]
        assert summary["calls"] == calls
        assert summary["answer_n"] > 0
        assert summary["answer_median_s"] is not None and summary["answer_p90_s"] is not None
        # the simulated staff answer at human scale, not after minutes of compressed lag
        print(
            f"\n{calls} calls; answer median {summary['answer_median_s']} s, "
            f"p90 {summary['answer_p90_s']} s (n {summary['answer_n']})"
        )
        assert summary["answer_median_s"] < 180

        # service orders and welfare visits: booked by service buttons and by phone,
        # worked by the simulated providers and visitors, counted from the audit log
        async with maker() as s:
            order_states = dict(
                (await s.execute(select(Order.status, func.count()).group_by(Order.status))).all()
            )
            sources = set(await s.scalars(select(Order.source).distinct()))
            visit_states = dict(
                (await s.execute(select(Visit.status, func.count()).group_by(Visit.status))).all()
            )
        assert sum(order_states.values()) >= 5 and len(order_states) >= 3, order_states
        assert {"device", "operator"} <= sources, sources
        assert visit_states.get("done", 0) > 0, visit_states
        months = sorted({f"{d:%Y-%m}" for d in (period.start, period.end)})
        figures = []
        for month in months:
            async with maker() as s:
                figures.append(
                    (
                        await orders_data(s, scope=None, station_id=None, month=month, now=datetime.now(UTC)),
                        await visits_data(s, scope=None, station_id=None, month=month, now=datetime.now(UTC)),
                    )
                )
        assert sum(o["summary"]["orders"] for o, _ in figures) == sum(order_states.values())
        assert sum(o["summary"]["accept_n"] for o, _ in figures) > 0
        assert sum(v["totals"]["due"] for _, v in figures) > 0
        assert sum(v["totals"]["done_on_time"] + v["totals"]["late"] for _, v in figures) > 0
    finally:
        await engine.dispose()
