"""A poison event or timer cannot stop the dispatcher: failures are classified (database
unavailable vs. a failure of the work), retried a bounded number of times counted in the
database, then set aside while everything else flows."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.models import DeviceEvent
from device_gateway.mqtt import MqttTarget
from dispatcher.audit.models import AuditRow
from dispatcher.calls import claims, intake, timers
from dispatcher.calls.context import Outcome
from dispatcher.calls.failures import Failure, classify, describe, retry_delay_s
from dispatcher.calls.models import Call, EventIntake, IntakeFailure, Timer
from dispatcher.engine import handling, metrics
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.models import Notification
from tests.dispatcher.engine.support import T0, kinds, run_until, store_event
from tests.dispatcher.engine.support import setup as engine_setup  # noqa: F401  (the `setup` fixture)


class Recorder:
    """Stands in for the engine's structlog logger (a logger cached by an earlier test's
    configuration would bypass structlog.testing.capture_logs)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **kw: Any) -> None:
            self.entries.append({"event": event, "log_level": level, **kw})

        return record


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    rec = Recorder()
    monkeypatch.setattr(handling, "log", rec)
    return rec.entries


# --------------------------------------------------------------------------- classify


class _Orig(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _dbapi(cls: type[sa_exc.DBAPIError], message: str, sqlstate: str | None = None, **kw: Any) -> Exception:
    return cls("SELECT 1", {}, _Orig(message, sqlstate), **kw)


def _caused_by(cause: BaseException) -> Exception:
    try:
        raise RuntimeError("wrapped") from cause
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(111, "Connection refused"), Failure.transient),
        (ConnectionResetError(104, "Connection reset by peer"), Failure.transient),
        (OSError("Network is unreachable"), Failure.transient),
        (TimeoutError(), Failure.transient),
        (sa_exc.TimeoutError("QueuePool limit reached"), Failure.transient),
        (_dbapi(sa_exc.DBAPIError, "connection was closed", connection_invalidated=True), Failure.transient),
        (_dbapi(sa_exc.OperationalError, "server closed the connection", "08006"), Failure.transient),
        (_dbapi(sa_exc.DBAPIError, "could not serialize access", "40001"), Failure.transient),
        (_dbapi(sa_exc.DBAPIError, "deadlock detected", "40P01"), Failure.transient),
        (_dbapi(sa_exc.DBAPIError, "the database system is shutting down", "57P01"), Failure.transient),
        (_dbapi(sa_exc.DBAPIError, "too many connections", "53300"), Failure.transient),
        (_dbapi(sa_exc.OperationalError, "database is locked"), Failure.transient),
        (_dbapi(sa_exc.OperationalError, "unable to open database file"), Failure.transient),
        (_caused_by(ConnectionResetError()), Failure.transient),
        # the failures of the work itself
        (
            _dbapi(sa_exc.ProgrammingError, "could not identify an equality operator for type json", "42883"),
            Failure.handling,
        ),
        (_dbapi(sa_exc.ProgrammingError, 'relation "nosuchtable" does not exist', "42P01"), Failure.handling),
        (
            _dbapi(sa_exc.DataError, "value too long for type character varying(64)", "22001"),
            Failure.handling,
        ),
        (_dbapi(sa_exc.DBAPIError, "division by zero", "22012"), Failure.handling),
        (_dbapi(sa_exc.IntegrityError, "violates foreign key constraint", "23503"), Failure.handling),
        (_dbapi(sa_exc.OperationalError, "no such table: calls"), Failure.handling),
        (
            _dbapi(sa_exc.DBAPIError, "canceling statement due to statement timeout", "57014"),
            Failure.handling,
        ),
        (ValueError("bad payload"), Failure.handling),
        (KeyError("station"), Failure.handling),
        (AttributeError("'NoneType' object has no attribute 'lat'"), Failure.handling),
        (_caused_by(ValueError("bad")), Failure.handling),
    ],
)
def test_classify(exc: BaseException, expected: Failure) -> None:
    assert classify(exc) is expected


def test_classify_a_real_sqlite_error() -> None:
    locked = sa_exc.OperationalError("x", {}, sqlite3.OperationalError("database is locked"))
    syntax = sa_exc.OperationalError("x", {}, sqlite3.OperationalError('near "SELEC": syntax error'))
    assert classify(locked) is Failure.transient
    assert classify(syntax) is Failure.handling


def test_describe_and_retry_delay() -> None:
    assert describe(ValueError("bad\nsecond line")) == "ValueError: bad"
    assert describe(KeyError()) == "KeyError"
    assert describe(ValueError('invalid input: "13900000001"')) == 'ValueError: invalid input: "#"'
    sql = sa_exc.DataError("INSERT INTO contacts", {"phone": "13900000001"}, _Orig("value too long"))
    assert "13900000001" not in describe(sql) and describe(sql).startswith("DataError: ")
    assert len(describe(ValueError("x" * 2000))) == 500
    assert [retry_delay_s(n, 2.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert retry_delay_s(50, 2.0) == 300.0


@pytest.mark.parametrize(
    ("exc", "event"),
    [
        (
            _dbapi(sa_exc.ProgrammingError, "could not identify an equality operator for type json"),
            "handling",
        ),
        (ValueError("bad"), "handling"),
        (ConnectionRefusedError(111, "refused"), "db_unavailable"),
        (_dbapi(sa_exc.DBAPIError, "closed", connection_invalidated=True), "db_unavailable"),
    ],
)
def test_programming_errors_are_never_logged_as_db_unavailable(
    exc: Exception, event: str, logs: list[dict[str, Any]]
) -> None:
    handling.log_loop_failure("intake_once", exc, 0.2)
    names = [e["event"] for e in logs]
    if event == "handling":
        assert names == ["dispatcher.handling_failed"]
        assert logs[0]["exc_info"] is exc and logs[0]["log_level"] == "error"
    else:
        assert names == ["dispatcher.db_unavailable"]


# --------------------------------------------------------------------------- events


def poison(monkeypatch: pytest.MonkeyPatch, bad_event_ids: set[str]) -> Counter[str]:
    """Make handling the events with these event ids raise; count every attempt per id."""
    real = intake.handle_event
    attempts: Counter[str] = Counter()

    async def handle_event(session: AsyncSession, ev: Any, *a: Any, **kw: Any) -> Outcome:
        attempts[ev.event_id] += 1
        if ev.event_id in bad_event_ids:
            raise ValueError(f"cannot handle {ev.event_id}")
        return await real(session, *a, ev=ev, **kw)

    monkeypatch.setattr(intake, "handle_event", handle_event)
    return attempts


async def failure_of(maker: async_sessionmaker[AsyncSession], kind: str) -> list[IntakeFailure]:
    async with maker() as s:
        return list((await s.scalars(select(IntakeFailure).where(IntakeFailure.kind == kind))).all())


async def decisions(maker: async_sessionmaker[AsyncSession]) -> dict[int, str]:
    async with maker() as s:
        return {
            pk: d for pk, d in (await s.execute(select(EventIntake.event_pk, EventIntake.decision))).all()
        }


async def test_a_poison_event_is_set_aside_after_bounded_retries_while_others_flow(
    engine_setup: Any,  # noqa: F811  (the fixture imported above)
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
    logs: list[dict[str, Any]],
) -> None:
    d, clock, _ = engine_setup
    attempts = poison(monkeypatch, {"bad"})
    set_aside_before = metrics.SET_ASIDE.labels("event")._value.get()
    await store_event(maker, "h1-hub", "e1", "fall", T0)
    await store_event(maker, "h1-btn", "bad", "sos", T0)
    await d.intake_once()
    # the batch failed; one by one the good event became a call, the bad one is counted
    async with maker() as s:
        assert await s.scalar(select(func.count()).select_from(Call)) == 1
    (f,) = await failure_of(maker, "event")
    assert f.attempts == 1 and f.set_aside_at is None and f.error == "ValueError: cannot handle bad"
    assert attempts["e1"] == 2, "the good event: once in the failed batch, once on its own"
    failed_logs = [e for e in logs if e["event"] == "dispatcher.handling_failed"]
    assert failed_logs and failed_logs[0]["event_pk"] == f.ref
    assert not [e for e in logs if e["event"] == "dispatcher.db_unavailable"]

    # later events flow in batches that never include the poison event again
    for i in range(2, 8):
        clock.advance(1)
        await store_event(maker, "h1-btn", f"e{i}", "sos", clock.now())
        await d.intake_once()
        assert attempts[f"e{i}"] == 1, "a new event is handled in its batch, at the first try"
        assert f"e{i}" in await handled_event_ids(maker)
    # once in the failed batch, then on its own 2 s and 4 s after its counted failures
    # (3 counted in all), then set aside
    assert attempts["bad"] == 4
    (f,) = await failure_of(maker, "event")
    assert f.attempts == 3 and f.set_aside_at is not None
    assert (await decisions(maker))[f.ref] == "failed"
    assert metrics.SET_ASIDE.labels("event")._value.get() == set_aside_before + 1
    async with maker() as s:
        notes = (await s.scalars(select(AuditRow).where(AuditRow.kind == "note"))).all()
    (note,) = [n for n in notes if n.detail.get("could_not_be_processed") == "event"]
    assert note.detail["event_pk"] == f.ref and note.detail["attempts"] == 3
    assert note.detail["error"] == "ValueError: cannot handle bad" and note.station_id == "cm1"
    # set aside: never tried again
    clock.advance(600)
    while await d.intake_once():
        pass
    assert attempts["bad"] == 4


async def handled_event_ids(maker: async_sessionmaker[AsyncSession]) -> set[str]:
    async with maker() as s:
        return set(
            await s.scalars(
                select(DeviceEvent.event_id).join(EventIntake, EventIntake.event_pk == DeviceEvent.id)
            )
        )


async def test_the_bound_holds_across_dispatcher_copies(
    engine_setup: Any,  # noqa: F811  (the fixture imported above)
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, clock, notifier = engine_setup
    attempts = poison(monkeypatch, {"bad"})
    d2 = Dispatcher(
        settings=d.settings, maker=maker, bus=d.bus, clock=clock, mqtt=None, notifier=notifier, ctx=d.ctx
    )
    d2.name = "dispatcher-second"
    await store_event(maker, "h1-btn", "bad", "sos", T0)
    copies = [d, d2, d, d2, d]
    for copy in copies:
        await copy.intake_once()
        clock.advance(10)
    assert attempts["bad"] == 4, "in the first batch, then three counted attempts, whichever copy made them"
    (f,) = await failure_of(maker, "event")
    assert f.attempts == 3 and f.set_aside_at is not None and f.failed_by == d.name


async def test_an_event_that_fails_once_then_succeeds_is_handled_and_forgotten(
    engine_setup: Any,  # noqa: F811  (the fixture imported above)
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, clock, _ = engine_setup
    bad = {"flaky"}
    attempts = poison(monkeypatch, bad)
    await store_event(maker, "h1-btn", "flaky", "sos", T0)
    await d.intake_once()
    assert attempts["flaky"] == 2, "in the batch, then on its own"
    assert (await failure_of(maker, "event"))[0].attempts == 1
    bad.clear()  # the cause is gone (say, a registry row fixed)
    clock.advance(1)
    await d.intake_once()
    assert attempts["flaky"] == 2, "not before its retry is due"
    clock.advance(1.5)
    await d.intake_once()
    assert attempts["flaky"] == 3
    assert list((await decisions(maker)).values()) == ["opened"]
    assert await failure_of(maker, "event") == []


async def test_an_unavailable_database_is_not_counted_against_the_event(
    engine_setup: Any,  # noqa: F811  (the fixture imported above)
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, _, _ = engine_setup
    real = intake.handle_event

    async def handle_event(*a: Any, **kw: Any) -> Outcome:
        raise sa_exc.DBAPIError("SELECT", {}, _Orig("connection was closed"), connection_invalidated=True)

    monkeypatch.setattr(intake, "handle_event", handle_event)
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    for _ in range(5):
        with pytest.raises(sa_exc.DBAPIError):
            await d.intake_once()
    assert await failure_of(maker, "event") == [], "retried for as long as it takes, never set aside"
    monkeypatch.setattr(intake, "handle_event", real)
    assert await d.intake_once() == 1
    assert list((await decisions(maker)).values()) == ["opened"]


async def test_a_row_that_cannot_even_be_loaded_is_set_aside(
    engine_setup: Any,  # noqa: F811  (the fixture imported above)
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading the event itself fails (say, a broken row): the batch and the single
    attempts fail before any handling, and the event is still counted and set aside."""
    d, clock, _ = engine_setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await store_event(maker, "h1-btn", "e2", "sos", T0)
    async with maker() as s:
        bad_pk = int((await s.scalar(select(func.min(DeviceEvent.id)))) or 0)
    real_claim_events, real_claim_event = claims.claim_events, claims.claim_event

    async def claim_events(session: AsyncSession, *, limit: int) -> list[Any]:
        evs = await real_claim_events(session, limit=limit)
        if any(e.id == bad_pk for e in evs):
            raise sa_exc.DataError("SELECT", {}, _Orig("invalid input syntax for type json", "22P02"))
        return evs

    async def claim_event(session: AsyncSession, *, event_pk: int) -> Any:
        if event_pk == bad_pk:
            raise sa_exc.DataError("SELECT", {}, _Orig("invalid input syntax for type json", "22P02"))
        return await real_claim_event(session, event_pk=event_pk)

    monkeypatch.setattr(claims, "claim_events", claim_events)
    monkeypatch.setattr(claims, "claim_event", claim_event)
    for _ in range(4):
        await d.intake_once()
        clock.advance(5)
    (f,) = await failure_of(maker, "event")
    assert f.ref == bad_pk and f.attempts == 3 and f.set_aside_at is not None
    assert "DataError" in f.error
    assert sorted((await decisions(maker)).values()) == ["failed", "opened"]


# --------------------------------------------------------------------------- timers


async def test_a_timer_that_keeps_failing_is_set_aside_and_escalation_goes_on(
    engine_setup: Any,  # noqa: F811  (the fixture imported above)
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
    logs: list[dict[str, Any]],
) -> None:
    d, clock, _ = engine_setup
    real = timers.fire_timer
    tries: Counter[tuple[str, int]] = Counter()

    async def fire_timer(session: AsyncSession, timer: Timer, **kw: Any) -> Outcome:
        tries[(timer.action, timer.repeat)] += 1
        if timer.action == "remind" and timer.repeat == 0:
            raise KeyError("reminder template")
        return await real(session, timer=timer, **kw)

    monkeypatch.setattr(timers, "fire_timer", fire_timer)
    set_aside_before = metrics.SET_ASIDE.labels("timer")._value.get()
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await run_until(d, clock, 20)
    assert tries[("remind", 0)] == 4, "in the batch, then three counted attempts, then set aside"
    (f,) = await failure_of(maker, "timer")
    assert f.set_aside_at is not None and f.error == "KeyError: 'reminder template'"
    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
        timer = await s.get(Timer, f.ref)
    assert timer is not None and timer.status == "failed" and timer.action == "remind"
    # one bad timer did not stop the escalation
    assert call.station_id == "county" and call.escalation_level == 2
    k = await kinds(maker, call.id)
    assert k.count("escalated") == 2
    assert metrics.SET_ASIDE.labels("timer")._value.get() == set_aside_before + 1
    assert any(e["event"] == "dispatcher.handling_failed" and e.get("timer_id") == f.ref for e in logs)
    # the watchdog does not re-plan a set-aside step behind operators' backs
    before = await kinds(maker, call.id)
    await d.watchdog_once()
    assert await kinds(maker, call.id) == before


async def test_timer_loop_does_not_spin_while_a_failed_timer_waits(
    engine_setup: Any,  # noqa: F811  (the fixture imported above)
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, clock, _ = engine_setup

    async def fire_timer(*a: Any, **kw: Any) -> Outcome:
        raise KeyError("always")

    monkeypatch.setattr(timers, "fire_timer", fire_timer)
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()  # the alert fired with the call; the first reminder is due at 2 s
    clock.advance(2)
    assert await d.timers_once() >= 1  # the reminder failed once
    assert await d.timers_once() == 0, "nothing due until its retry"
    wait = await d._until_next_timer(30.0)
    assert wait == pytest.approx(2.0, abs=0.01), "sleeps until the retry is due"
    await asyncio.sleep(0)


# --------------------------------------------------------------------------- outbox


class FakeMqtt:
    """Stands in for a connected aiomqtt client: records what is published."""

    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0, timeout: float | None = None) -> None:
        self.published.append(topic)


async def test_a_broken_device_ack_is_given_up_and_never_stops_the_others(
    engine_setup: Any,  # noqa: F811  (the fixture imported above)
    maker: async_sessionmaker[AsyncSession],
) -> None:
    d, clock, _ = engine_setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()
    async with maker() as s, s.begin():
        call_id = (await s.scalars(select(Call.id))).one()
        s.add(
            Notification(
                call_id=call_id,
                channel="mqtt",
                purpose="device_ack",
                target="device:not a device id!",
                body={"event_id": "x", "state": "assigned"},
                status="pending",
                attempts=0,
                next_attempt_at=T0,
                created_at=T0,
            )
        )
    fake = FakeMqtt()
    d.mqtt = MqttTarget.from_url("mqtt://127.0.0.1:1")
    d._client = fake  # type: ignore[assignment]
    for _ in range(handling.MAX_ATTEMPTS):
        clock.advance(3)
        await d.outbox_once()
    async with maker() as s:
        rows = (await s.scalars(select(Notification).where(Notification.channel == "mqtt"))).all()
    by_target = {n.target: n for n in rows}
    broken = by_target["device:not a device id!"]
    assert broken.status == "failed" and broken.attempts == handling.MAX_ATTEMPTS
    assert broken.last_error is not None and "ValueError" in broken.last_error
    assert by_target["device:h1-btn"].status == "sent"
    assert "carecall/v1/devices/h1-btn/ack" in fake.published


async def test_a_notifier_that_raises_fails_one_notification_not_the_batch(
    engine_setup: Any,  # noqa: F811  (the fixture imported above)
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, clock, notifier = engine_setup
    real = notifier.send

    async def send(msg: Any) -> str:
        if msg.target == "station:cm1":
            raise KeyError("template")
        return await real(msg)

    monkeypatch.setattr(notifier, "send", send)
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await run_until(d, clock, 20)  # alerts, reminders, escalations, contacts
    async with maker() as s:
        rows = (await s.scalars(select(Notification).where(Notification.channel == "log"))).all()
    station = [n for n in rows if n.target == "station:cm1"]
    others = [n for n in rows if n.target != "station:cm1"]
    assert station and all(n.status in ("pending", "failed") and n.last_error for n in station)
    assert any("template" in (n.last_error or "") for n in station)
    assert others and all(n.status == "sent" for n in others), "the rest went out"
