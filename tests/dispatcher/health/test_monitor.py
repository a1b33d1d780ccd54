"""The stall alarm end to end on SQLite: each stall injected, /healthz turning 503 and
naming it, the console's endpoint, the Prometheus gauge, audit rows, admins told once
across copies, and back to 200 when it clears. Time is hand-driven (database clock, wall
clock and the loops' monotonic clock move together)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.db import make_engine, make_sessionmaker
from carecall.core.metrics import REGISTRY
from config.settings import load_settings
from dispatcher.audit.service import verify_log
from dispatcher.calls.models import EventIntake, Timer
from dispatcher.engine.process import Dispatcher
from dispatcher.health.models import DispatchStall
from dispatcher.health.monitor import StallMonitor
from dispatcher.health.state import DispatchHealth
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier, Message, NotifyError
from tests.conftest import add_small_registry
from tests.dispatcher.engine.support import store_event
from tests.dispatcher.health.support import T0, World, admin_messages, audit_kinds, drain, gauge, make_world


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    from argon2 import PasswordHasher

    import dispatcher.auth.passwords as auth

    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1), raising=False)


@pytest.fixture
async def world(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[World]:
    async with make_world(maker) as w:
        yield w


# ----------------------------------------------------------------------------- the stalls


async def test_stored_event_never_taken_turns_healthz_red_naming_intake_until_it_is_taken(world: World) -> None:
    notifier = LogNotifier()
    mon = world.monitor("serve-1", notifier)
    await store_event(world.maker, "h1-btn", "sos-1", "sos", T0)
    world.time.advance(5)
    await mon.check_once()
    assert await world.stalled_parts() == []  # 5 s: within the 15 s allowed
    assert gauge("intake") == 0

    world.time.advance(11)  # 16 s and no dispatcher took it
    await mon.check_once()
    code, body = await world.healthz()
    assert code == 503 and body["status"] == "stalled"
    [part] = body["stalled"]
    assert part["part"] == "intake" and part["kind"] == "event_waiting"
    assert part["age_s"] == pytest.approx(16, abs=0.5) and part["limit_s"] == 15
    assert part["since"] is not None
    assert gauge("intake") == 1
    assert REGISTRY.get_sample_value("carecall_dispatch_oldest_age_seconds", {"part": "intake"}) == pytest.approx(16)
    [(kind, detail)] = await audit_kinds(world.maker)
    assert kind == "dispatch_stalled" and detail["part"] == "intake" and detail["episode"] == 1
    told = admin_messages(notifier, purpose="dispatch_stalled")
    assert sorted(m.target for m in told) == ["user:admin", "user:admin2"]  # admins, not the operator
    assert "自动派单延迟" in told[0].body["text"] and "intake" in told[0].body["text"]

    # the dispatcher comes back and takes it: the episode closes once nobody has
    # confirmed it for the hold (3 checks), and /healthz is 200 again
    await drain(world.dispatcher, timers=False, outbox=False)
    world.time.advance(2)
    await mon.check_once()
    assert await world.stalled_parts() == ["intake"]  # held: one healthy look does not close it
    world.time.advance(5)
    await mon.check_once()
    assert await world.stalled_parts() == []
    code, body = await world.healthz()
    assert code == 200 and body["status"] == "ok"
    assert gauge("intake") == 0
    kinds = await audit_kinds(world.maker)
    assert [k for k, _ in kinds] == ["dispatch_stalled", "dispatch_recovered"]
    assert kinds[1][1]["part"] == "intake" and kinds[1][1]["how"] == "recovered"
    assert kinds[1][1]["stalled_s"] == pytest.approx(7)
    recovered = admin_messages(notifier, purpose="dispatch_recovered")
    assert len(recovered) == 2 and "恢复" in recovered[0].body["text"]
    assert (await verify_log(world.maker)).ok


async def test_due_timer_not_fired_names_timers(world: World) -> None:
    mon = world.monitor("serve-1")
    await store_event(world.maker, "h1-btn", "sos-1", "sos", T0)
    await drain(world.dispatcher, timers=False, outbox=False)  # a call; its opening steps fired with it
    async with world.maker() as s, s.begin():
        # its first reminder made due now (the intake fires only the steps due at the opening)
        due = await s.execute(
            update(Timer).where(Timer.status == "pending", Timer.action == "remind").values(due_at=T0)
        )
        assert due.rowcount == 1
    world.time.advance(9)
    await mon.check_once()
    assert await world.stalled_parts() == []
    world.time.advance(3)  # 12 s late, no timer loop running
    await mon.check_once()
    code, body = await world.healthz()
    assert code == 503
    assert [p["part"] for p in body["stalled"]] == ["timers"]
    assert body["stalled"][0]["kind"] == "timer_late"
    assert body["stalled"][0]["age_s"] == pytest.approx(12, abs=0.5)


async def test_device_ack_pending_too_long_names_acks(world: World) -> None:
    """The broker connection is gone: calls open and escalate, notifications go out, but
    no device hears "assigned" for 30 s. Everything else keeps flowing."""
    mon = world.monitor("serve-1")
    await store_event(world.maker, "h1-btn", "sos-1", "sos", T0)
    for _ in range(31):
        await drain(world.dispatcher)
        world.time.advance(1)
        await mon.check_once()
        if await world.stalled_parts():
            break
    async with world.maker() as s:
        acks = list(await s.scalars(select(Notification).where(Notification.channel == "mqtt")))
    assert acks and all(a.status == "pending" for a in acks)  # retried, never sent
    code, body = await world.healthz()
    assert code == 503
    assert [p["part"] for p in body["stalled"]] == ["acks"]
    assert body["stalled"][0]["age_s"] == pytest.approx(31, abs=0.5)
    assert "device ack" in body["stalled"][0]["reason"]


async def test_notification_overdue_names_notifications(world: World) -> None:
    mon = world.monitor("serve-1")
    await store_event(world.maker, "h1-btn", "sos-1", "sos", T0)
    await drain(world.dispatcher, outbox=False)  # the station's alert is queued; no outbox runs
    async with world.maker() as s:
        assert await s.scalar(select(func.count()).select_from(Notification).where(Notification.channel == "log"))
    world.time.advance(31)
    await drain(world.dispatcher, outbox=False)  # timers keep firing: only the outbox is stuck
    await mon.check_once()
    parts = await world.stalled_parts()
    assert "notifications" in parts and "timers" not in parts and "intake" not in parts


async def test_loop_heartbeat_too_old_names_that_loop_and_clears_when_it_beats_again(world: World) -> None:
    mon = world.monitor("dispatcher-a", loops=True)
    for loop in ("intake", "timers", "outbox", "watchdog", "visits", "order_levels"):
        world.beats[loop] = world.time.mono
    await mon.check_once()
    assert await world.stalled_parts() == []
    for _ in range(16):  # 32 s in which every loop but the outbox completes rounds
        world.time.advance(2)
        for loop in ("intake", "timers", "watchdog", "visits", "order_levels"):
            world.beats[loop] = world.time.mono
        await mon.check_once()
    code, body = await world.healthz()
    assert code == 503
    [part] = body["stalled"]
    assert part["part"] == "loop:outbox" and part["reporter"] == "dispatcher-a"
    assert part["age_s"] == pytest.approx(32)
    assert gauge("loop:outbox") == 1
    async with world.maker() as s:
        row = await s.get(DispatchStall, "loop:outbox@dispatcher-a")
        assert row is not None and row.since is not None

    world.beats["outbox"] = world.time.mono
    for _ in range(4):
        world.time.advance(2)
        for loop in world.beats:
            world.beats[loop] = world.time.mono
        await mon.check_once()
    assert await world.stalled_parts() == []
    assert gauge("loop:outbox") == 0


async def test_a_loop_stall_of_a_copy_that_died_is_shown_elsewhere_then_expires(world: World) -> None:
    """The console process learns of a dispatcher copy's stuck loop through the database;
    if that copy stops reporting (it died), the episode ends instead of staying red."""
    dsp = world.monitor("dispatcher-a", loops=True)
    serve = world.monitor("serve-1")
    world.beats.update(dict.fromkeys(("intake", "timers", "outbox", "watchdog", "visits", "order_levels"), world.time.mono))
    world.time.advance(31)
    await dsp.check_once()
    await serve.check_once()
    code, body = await world.healthz()
    assert code == 503
    assert [(p["part"], p["reporter"]) for p in body["stalled"]] == [
        ("loop:intake", "dispatcher-a"),
        ("loop:timers", "dispatcher-a"),
        ("loop:outbox", "dispatcher-a"),
    ]
    world.time.advance(7)  # dispatcher-a reports no more
    await serve.check_once()
    assert await world.stalled_parts() == []
    kinds = await audit_kinds(world.maker)
    assert [k for k, _ in kinds].count("dispatch_recovered") == 3
    assert {d["how"] for k, d in kinds if k == "dispatch_recovered"} == {"reporter_silent"}


async def test_admins_are_told_once_per_episode_across_two_monitors(world: World) -> None:
    n1, n2 = LogNotifier(), LogNotifier()
    a, b = world.monitor("serve-1", n1), world.monitor("dispatcher-b", n2)
    world.dispatcher.mqtt = None  # device acks are dropped, not kept waiting: only intake stalls here
    await store_event(world.maker, "h1-btn", "sos-1", "sos", T0)
    for _ in range(20):  # 40 s, both copies checking every 2 s
        world.time.advance(2)
        await a.check_once()
        await b.check_once()
    assert len(admin_messages(n1, n2, purpose="dispatch_stalled")) == 2  # one per admin, from one copy
    assert [k for k, _ in await audit_kinds(world.maker)] == ["dispatch_stalled"]

    for _ in range(5):
        await drain(world.dispatcher)  # back: intake, timers and outbox run again
        world.time.advance(2)
        await a.check_once()
        await b.check_once()
    assert len(admin_messages(n1, n2, purpose="dispatch_recovered")) == 2
    assert [k for k, _ in await audit_kinds(world.maker)] == ["dispatch_stalled", "dispatch_recovered"]

    # a second episode is a second announcement
    await store_event(world.maker, "h1-btn", "sos-2", "sos", world.time.clock.now())
    for _ in range(9):
        await drain(world.dispatcher, intake=False)  # intake alone is stuck this time
        world.time.advance(2)
        await b.check_once()
        await a.check_once()
    assert len(admin_messages(n1, n2, purpose="dispatch_stalled")) == 4
    async with world.maker() as s:
        row = await s.get(DispatchStall, "intake")
        assert row is not None and row.episodes == 2 and row.notified_at is not None


class FailingNotifier(LogNotifier):
    async def send(self, message: Message) -> str:
        raise NotifyError("SMS gateway down")


async def test_an_announcement_that_failed_is_sent_by_another_copy_later(world: World) -> None:
    from dispatcher.health.recording import NOTIFY_RETRY_S

    broken, ok = FailingNotifier(), LogNotifier()
    a, b = world.monitor("serve-1", broken), world.monitor("dispatcher-b", ok)
    await store_event(world.maker, "h1-btn", "sos-1", "sos", T0)
    world.time.advance(16)
    await a.check_once()  # opens the episode, fails to tell anyone
    await b.check_once()
    assert admin_messages(ok, purpose="dispatch_stalled") == []  # claimed by a: not at once
    world.time.advance(NOTIFY_RETRY_S + 1)
    await b.check_once()
    assert len(admin_messages(ok, purpose="dispatch_stalled")) == 2
    world.time.advance(NOTIFY_RETRY_S + 1)
    await a.check_once()
    await b.check_once()
    assert len(admin_messages(ok, purpose="dispatch_stalled")) == 2  # confirmed: never again


async def test_unreachable_database_is_a_stall(world: World, tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/no/such/dir/db.sqlite")
    try:
        mon = StallMonitor(
            make_sessionmaker(engine),
            settings=world.settings,
            clock=lambda: world.time.clock,
            name="serve-1",
            notifier=None,
            health=world.health,
            monotonic=world.time.monotonic,
        )
        await mon.check_once()
    finally:
        await engine.dispose()
    code, body = await world.healthz()
    assert code == 503 and [p["part"] for p in body["stalled"]] == ["database"]


async def test_a_silent_monitor_is_itself_named(world: World) -> None:
    mon = world.monitor("serve-1")
    world.health.watched(15)
    await mon.check_once()
    assert (await world.healthz())[0] == 200
    world.time.advance(16)  # no check for 16 s (its task died or hangs)
    assert await world.stalled_parts() == ["monitor"]


# ----------------------------------------------------------------------------- console


async def test_console_endpoint_needs_a_login_and_names_the_stall(world: World) -> None:
    assert (await world.client.get("/api/v1/health/dispatch")).status_code == 401
    r = await world.client.post("/api/v1/auth/token", data={"username": "op", "password": "password-123"})
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    got = (await world.client.get("/api/v1/health/dispatch", headers=auth)).json()
    assert got["ok"] is True and got["stalled"] == []
    mon = world.monitor("serve-1")
    await store_event(world.maker, "h1-btn", "sos-1", "sos", T0)
    world.time.advance(20)
    await mon.check_once()
    got = (await world.client.get("/api/v1/health/dispatch", headers=auth)).json()
    assert got["ok"] is False and [p["part"] for p in got["stalled"]] == ["intake"]
    assert got["checked_at"] is not None


# ----------------------------------------------------------------------------- readiness


async def test_healthz_says_starting_until_ready(world: World) -> None:
    world.health.ready = False
    code, body = await world.healthz()
    assert code == 503 and body["status"] == "starting" and body["ready"] is False
    world.health.ready = True
    code, body = await world.healthz()
    assert code == 200 and body["status"] == "ok"
    assert (await world.client.get("/livez")).status_code == 200


async def test_event_floor_skips_what_is_taken_and_still_sees_a_stuck_event(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monitor reads waiting events from just below the oldest one it saw (not the
    whole table every few seconds): a stuck event stays in view however many events are
    taken after it, and a new one beyond the floor is seen."""
    from device_gateway.models import DeviceEvent
    from dispatcher.health import queries as h

    monkeypatch.setattr(h, "EVENT_FLOOR_MARGIN", 2)

    async def take(*event_ids: str) -> None:
        async with world.maker() as s, s.begin():
            pks = list(await s.scalars(select(DeviceEvent.id).where(DeviceEvent.event_id.in_(event_ids))))
            s.add_all(
                EventIntake(event_pk=pk, decision="noted", call_id=None, handled_at=T0, handled_by="test")
                for pk in pks
            )

    names = [f"e{i}" for i in range(1, 11)]
    for i, name in enumerate(names):
        await store_event(world.maker, "h1-btn", name, "test", T0 + timedelta(seconds=i), cls="test")
    await take(*names[:5])  # e6 (pk 6) is the oldest waiting
    async with world.maker() as s:
        first = await h.read_oldest(s)
    assert first.event_received_at == T0 + timedelta(seconds=5) and first.event_floor == 4
    await take(*names[6:])  # everything after e6 is taken; e6 is stuck
    async with world.maker() as s:
        again = await h.read_oldest(s, event_floor=first.event_floor)
    assert again.event_received_at == T0 + timedelta(seconds=5) and again.event_floor == 4
    await take("e6")
    async with world.maker() as s:
        clear = await h.read_oldest(s, event_floor=again.event_floor)
    assert clear.event_received_at is None and clear.event_floor == 9  # top id 10 + 1 - margin
    await store_event(world.maker, "h1-btn", "e11", "sos", T0 + timedelta(seconds=30))
    async with world.maker() as s:
        new = await h.read_oldest(s, event_floor=clear.event_floor)
    assert new.event_received_at == T0 + timedelta(seconds=30)


async def test_no_dispatcher_running_here_means_no_loops_to_watch(world: World) -> None:
    """Between a demo's history and live phases no dispatcher runs in the process: its
    loops are not stuck, they do not exist (the database checks still watch the work)."""
    running = True
    mon = StallMonitor(
        world.maker,
        settings=world.settings,
        clock=lambda: world.time.clock,
        name="demo-1",
        notifier=None,
        heartbeats=lambda: world.beats if running else None,
        health=world.health,
        monotonic=world.time.monotonic,
        wall=world.time.wall,
    )
    world.beats.update(dict.fromkeys(("intake", "timers", "outbox", "watchdog", "visits", "order_levels"), world.time.mono))
    await mon.check_once()
    running = False
    await store_event(world.maker, "h1-btn", "sos-1", "sos", world.time.clock.now())
    world.time.advance(60)
    await mon.check_once()
    assert await world.stalled_parts() == []
    running = True
    world.beats.clear()  # a new dispatcher that has not completed a round yet
    await mon.check_once()
    assert await world.stalled_parts() == []
    world.time.advance(16)  # what waited meanwhile counts from when it runs again
    await mon.check_once()
    code, body = await world.healthz()
    assert code == 503
    assert [(p["part"], p["age_s"]) for p in body["stalled"]] == [("intake", 16)]
    world.time.advance(15)
    await mon.check_once()
    assert set(await world.stalled_parts()) == {"intake", "loop:intake", "loop:timers", "loop:outbox"}


async def test_after_a_demo_catch_up_lags_count_from_when_time_runs_at_one_rate(world: World) -> None:
    """In a demo's history the clock's rate changes all the time: stored times say nothing
    of real lags, so only loops are watched; work left over when it catches up is counted
    from then (the live dispatcher is starting), not from simulated days ago."""
    from carecall.core.clock import CatchUpClock

    clock = CatchUpClock(start=T0 - timedelta(days=1), until=T0 + timedelta(days=1), fast=1.0, fine=1.0)
    mon = StallMonitor(
        world.maker,
        settings=world.settings,
        clock=lambda: clock,
        name="demo-1",
        notifier=None,
        health=world.health,
        monotonic=world.time.monotonic,
        wall=world.time.wall,
    )
    await store_event(world.maker, "h1-btn", "old", "sos", T0 - timedelta(days=1, hours=1))
    await mon.check_once()
    assert await world.stalled_parts() == []  # catching up: not measured
    clock.caught_up.set()
    await mon.check_once()
    assert await world.stalled_parts() == []  # a day old in simulated time, 0 s observed
    world.time.advance(16)
    await mon.check_once()
    [part] = (await world.healthz())[1]["stalled"]
    assert part["part"] == "intake" and part["age_s"] == pytest.approx(16)


async def test_a_hung_loop_of_a_running_dispatcher_is_named(maker: async_sessionmaker[AsyncSession]) -> None:
    """The real loops in real time: the engine records each loop's rounds; an outbox stuck
    in a send that never returns is named within the (here shortened) limit."""
    import asyncio

    from carecall.core.clock import SystemClock

    await add_small_registry(maker, {"h1-btn": "button"})
    settings = load_settings(database_url="sqlite:///unused.db", stall_loop_s=1.5, stall_check_s=0.2)
    d = Dispatcher(settings=settings, maker=maker, bus=MemoryBus(), clock=SystemClock(), mqtt=None, notifier=LogNotifier())
    hang = asyncio.Event()
    real_outbox = d.outbox_once

    async def outbox_once(limit: int = 100) -> int:
        if hang.is_set():
            await asyncio.Event().wait()  # a send that never returns
        return await real_outbox(limit)

    outbox_once.__name__ = "outbox_once"
    d.outbox_once = outbox_once  # type: ignore[method-assign]
    health = DispatchHealth()
    mon = StallMonitor(
        maker, settings=settings, clock=SystemClock, name=d.name, notifier=None, heartbeats=lambda: d.heartbeats, health=health
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(d.run(stop)), asyncio.create_task(mon.run(stop))]
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if set(d.heartbeats) == {"intake", "timers", "outbox", "watchdog", "visits", "order_levels"}:
                break
        assert set(d.heartbeats) == {"intake", "timers", "outbox", "watchdog", "visits", "order_levels"}
        await asyncio.sleep(1.0)
        assert health.stalled() == []
        hang.set()
        for _ in range(100):  # the outbox waits up to 1 s between rounds, then hangs
            await asyncio.sleep(0.1)
            if health.stalled():
                break
        assert [(p.part, p.reporter) for p in health.stalled()] == [("loop:outbox", d.name)]
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_database_that_does_not_answer_is_named_and_a_bug_is_not_called_one(world: World) -> None:
    import asyncio

    mon = world.monitor("serve-1")
    world.health.watched(15)

    async def no_answer() -> Any:
        await asyncio.Event().wait()

    mon._read = no_answer  # type: ignore[method-assign]
    mon.query_timeout_s = 0.2
    await mon.check_once()
    code, body = await world.healthz()
    assert code == 503 and [p["part"] for p in body["stalled"]] == ["database"]
    assert "no answer within 0.2 s" in body["stalled"][0]["reason"]
    hanging = mon._reading
    await mon.check_once()  # the same read is still awaited, not a second one started
    assert mon._reading is hanging and hanging is not None and not hanging.done()
    hanging.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await hanging

    async def bug() -> Any:
        raise ValueError("a programming error")

    mon._read = bug  # type: ignore[method-assign]
    with pytest.raises(ValueError):
        await mon.check_once()  # run() logs it; the state is not refreshed ...
    world.time.advance(16)
    assert "monitor" in await world.stalled_parts()  # ... so the silence itself is named
