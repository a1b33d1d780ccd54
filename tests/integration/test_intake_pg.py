"""Call intake on PostgreSQL, in process: the paths SQLite forgives (a restore's join over
``calls.*`` with its json columns) must open calls on PostgreSQL too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.clock import SystemClock
from carecall.shell.app import create_app
from config.settings import load_settings
from device_gateway.models import DeviceEvent
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import create_user
from dispatcher.calls import intake as calls_intake
from dispatcher.calls.context import Outcome
from dispatcher.calls.models import Call, EventIntake, IntakeFailure
from dispatcher.engine import handling
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.notifiers import LogNotifier
from tests.conftest import add_small_registry
from tests.dispatcher.engine.support import SHORT_POLICY, T0, ManualClock, store_event

pytestmark = pytest.mark.integration


@pytest.fixture
async def pg_dispatcher(
    pg_maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> AsyncIterator[tuple[Dispatcher, ManualClock]]:
    await add_small_registry(pg_maker, {"h1-btn": "button", "h1-hub": "hub"})
    policy = tmp_path / "escalation.yaml"
    policy.write_text(SHORT_POLICY, encoding="utf-8")
    settings = load_settings(database_url="sqlite:///unused.db", escalation_file=policy)
    clock = ManualClock(T0)
    d = Dispatcher(
        settings=settings, maker=pg_maker, bus=MemoryBus(), clock=clock, mqtt=None, notifier=LogNotifier()
    )
    yield d, clock


async def test_sos_after_a_restore_opens_a_call_on_postgresql(
    pg_dispatcher: tuple[Dispatcher, ManualClock], pg_maker: async_sessionmaker[AsyncSession]
) -> None:
    d, clock = pg_dispatcher
    await store_event(pg_maker, "h1-hub", "sup-offline-1", "offline", T0, cls="trouble")
    assert await d.intake_once() == 1
    clock.advance(60)
    await store_event(pg_maker, "h1-hub", "sup-online-1", "online", clock.now(), cls="trouble")
    assert await d.intake_once() == 1
    clock.advance(5)
    await store_event(pg_maker, "h1-btn", "e1", "sos", clock.now())
    assert await d.intake_once() == 1
    async with pg_maker() as s:
        trouble, sos = (await s.scalars(select(Call).order_by(Call.id))).all()
        decisions = {
            pk: d for pk, d in (await s.execute(select(EventIntake.event_pk, EventIntake.decision))).all()
        }
    assert trouble.status == "resolved" and trouble.outcome == "restored"
    assert sos.event_class == "emergency" and sos.status != "resolved"
    assert sorted(decisions.values()) == ["opened", "opened", "restored"]


async def test_restore_clears_every_open_trouble_call_of_the_device_once(
    pg_dispatcher: tuple[Dispatcher, ManualClock], pg_maker: async_sessionmaker[AsyncSession]
) -> None:
    """Two offline events joined into one call: the restore's join yields that call twice;
    it is closed once."""
    d, clock = pg_dispatcher
    await store_event(pg_maker, "h1-hub", "sup-offline-1", "offline", T0, cls="trouble")
    await store_event(
        pg_maker, "h1-hub", "sup-offline-2", "offline", T0 + timedelta(seconds=1), cls="trouble"
    )
    while await d.intake_once():
        pass
    clock.advance(60)
    await store_event(pg_maker, "h1-hub", "sup-online-1", "online", clock.now(), cls="trouble")
    assert await d.intake_once() == 1
    async with pg_maker() as s:
        rows = (await s.scalars(select(Call))).all()
    assert [(c.status, c.outcome) for c in rows] == [("resolved", "restored")]


async def test_a_poison_event_is_set_aside_while_the_next_sos_becomes_a_call(
    pg_dispatcher: tuple[Dispatcher, ManualClock],
    pg_maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The running dispatcher (its real loops, real time) on PostgreSQL. Handling one
    event runs a query PostgreSQL refuses — the same ProgrammingError the restore raised.
    It used to be taken for an unavailable database and retried forever, so the next SOS
    never became a call. Now it is set aside after bounded retries, listed for operators,
    and an admin puts it back once the cause is gone."""
    d0, _ = pg_dispatcher
    d = Dispatcher(
        settings=d0.settings,
        maker=pg_maker,
        bus=d0.bus,
        clock=SystemClock(),
        mqtt=None,
        notifier=LogNotifier(),
    )
    d.handling_retry_s = 0.2
    real = calls_intake.handle_event
    poisoned = {"poison"}

    async def handle_event(session: AsyncSession, ev: Any, *a: Any, **kw: Any) -> Outcome:
        if ev.event_id in poisoned:
            await session.execute(text("SELECT DISTINCT x FROM (SELECT '{}'::json AS x) AS t"))
        return await real(session, *a, ev=ev, **kw)

    monkeypatch.setattr(calls_intake, "handle_event", handle_event)
    logged: list[str] = []
    real_log = handling.log

    class Spy:
        def __getattr__(self, level: str) -> Any:
            def record(event: str, **kw: Any) -> None:
                logged.append(event)
                getattr(real_log, level)(event, **kw)

            return record

    monkeypatch.setattr(handling, "log", Spy())
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    try:
        now = datetime.now(UTC)
        await store_event(pg_maker, "h1-btn", "poison", "sos", now)
        await store_event(pg_maker, "h1-hub", "next", "fall", now + timedelta(milliseconds=5))

        async def poll(what: str, check: Any, timeout_s: float = 40.0) -> None:
            deadline = time.monotonic() + timeout_s
            while not await check():
                if time.monotonic() > deadline:
                    pytest.fail(f"{what} within {timeout_s} s")
                await asyncio.sleep(0.1)

        async def sos_call() -> bool:
            async with pg_maker() as s:
                return bool(await s.scalar(select(func.count()).select_from(Call)))

        async def set_aside() -> bool:
            async with pg_maker() as s:
                f = await s.scalar(select(IntakeFailure).where(IntakeFailure.kind == "event"))
                return f is not None and f.set_aside_at is not None

        await poll("the next event became a call", sos_call)
        await poll("the poison event was set aside", set_aside)
        async with pg_maker() as s:
            f = (await s.scalars(select(IntakeFailure))).one()
            poison_pk = await s.scalar(select(DeviceEvent.id).where(DeviceEvent.event_id == "poison"))
            intake = await s.get(EventIntake, poison_pk)
        assert f.ref == poison_pk and f.attempts == d.max_handling_attempts
        assert "ProgrammingError" in f.error and "json" in f.error
        assert intake is not None and intake.decision == "failed"
        assert "dispatcher.handling_failed" in logged and "dispatcher.db_unavailable" not in logged

        # operators see it; an admin puts it back once the cause is fixed
        async with pg_maker() as s, s.begin():
            await create_user(
                s,
                username="root",
                password="password-123",
                role="admin",
                station_id=None,
                display_name="",
                now=T0,
            )
        app = create_app(pg_maker, signer=TokenSigner(b"k" * 32), ctx=d.ctx, bus=d.bus, clock=SystemClock())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            r = await c.post("/api/v1/auth/token", data={"username": "root", "password": "password-123"})
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            [listed] = (await c.get("/api/v1/intake/failures", headers=auth)).json()["events"]
            assert listed["event_pk"] == poison_pk and listed["device_id"] == "h1-btn"
            assert listed["attempts"] == d.max_handling_attempts and "ProgrammingError" in listed["error"]
            poisoned.clear()
            r = await c.post(f"/api/v1/intake/failures/{poison_pk}/retry", headers=auth)
            assert r.status_code == 200, r.text

            async def handled() -> bool:
                async with pg_maker() as s:
                    row = await s.get(EventIntake, poison_pk)
                    return row is not None and row.decision != "failed"

            await poll("the event put back was handled", handled)
            assert (await c.get("/api/v1/intake/failures", headers=auth)).json()["events"] == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
