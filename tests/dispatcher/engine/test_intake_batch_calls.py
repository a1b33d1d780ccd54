"""The intake's new calls go in together (issue 15, the alarm lane): on PostgreSQL a batch
draws the ids of the calls it may open from the sequence in one statement, and its new
calls then go in as one INSERT instead of one INSERT … RETURNING each
(dispatcher/calls/intake.py ``_draw_call_ids``, dispatcher/calls/bulk.py ``add_object``).
A storm's batch of 25 alarms took 42 statements, 25 of them those inserts; it took 16
with the batch reads merged (homes with residents, stations with their counts), and 12
with the rest of its rows in two statements at commit (carecall/core/row_batch.py).

Whatever the batch does next still sees a new call: a later event of its home joins it, a
cancel cancels it, and every row that refers to it goes in after it. The same tests run
on SQLite, where each call is inserted on its own as before."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.shell.fleet_registry import Fleet, provision_fleet
from device_gateway.store import insert_events
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.calls.models import Call, CallEvent, EventIntake, Timer
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from tests.dispatcher.engine.support import T0, ManualClock
from tests.dispatcher.engine.test_alarm_path import engine_of
from tests.dispatcher.engine.test_timer_batch import statements
from tests.support.events import event_row

HOMES = 25  # the intake's batch


async def _fleet(maker: async_sessionmaker[AsyncSession], n: int = HOMES) -> Fleet:
    return await provision_fleet(maker, n, prefix="ib", now=T0)


async def test_a_batch_of_new_calls_takes_no_statement_per_call_on_postgresql(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
    db_backend: str,
) -> None:
    d, _clock, _ = setup
    fleet = await _fleet(maker)
    async with maker() as s, s.begin():
        await insert_events(
            s, [event_row(dev, home, T0) for home, dev in zip(fleet.homes, fleet.devices, strict=True)]
        )
    with statements(engine_of(maker)) as seen:
        assert await d.intake_once() == HOMES
    counts = Counter(seen)
    print(f"\n{db_backend}: {HOMES} new calls in {len(seen)} statements")
    if db_backend == "postgresql":
        assert counts["INSERT INTO calls (id,"] == 1, counts
        # the call rows, then one statement for the batch's other rows (intake decisions,
        # call events, timers, notifications) before the chain head's lock, one for its
        # audit rows and the new head after it (carecall/core/row_batch.py): 16 with an
        # INSERT per table, 42 with an INSERT … RETURNING per call
        assert counts["WITH rb0 AS (INSERT"] == 2, counts
        assert not [
            t for t in seen if t.startswith("INSERT INTO") and not t.startswith("INSERT INTO calls")
        ], seen
        assert len(seen) <= 12, counts
    async with maker() as s:
        calls = (await s.scalars(select(Call).order_by(Call.id))).all()
        intake = (await s.scalars(select(EventIntake))).all()
        alerts = (await s.scalars(select(Notification).where(Notification.purpose == "alert_station"))).all()
        fired = (await s.scalars(select(Timer).where(Timer.status == "fired"))).all()
    assert sorted(c.home_id for c in calls) == sorted(fleet.homes)
    assert {i.decision for i in intake} == {"opened"} and len(intake) == HOMES
    assert {i.call_id for i in intake} == {c.id for c in calls}
    assert sorted(a.body["call_id"] for a in alerts) == [c.id for c in calls], "each call alerted once"
    assert sorted(t.call_id for t in fired) == [c.id for c in calls]
    assert (await verify_log(maker)).ok


async def test_later_events_of_the_batch_join_and_cancel_its_new_calls(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
) -> None:
    """In one batch: SOS from three homes, then a second alarm of the first home (it joins
    the call the batch just opened) and a cancel of the second (the call it just opened
    is cancelled, its timers with it)."""
    d, _clock, _ = setup
    fleet = await _fleet(maker, 3)
    (h0, h1, h2), (d0, d1, d2) = fleet.homes, fleet.devices
    at = T0 + timedelta(seconds=1)
    rows = [
        event_row(d0, h0, T0, event_id="s0"),
        event_row(d1, h1, T0, event_id="s1"),
        event_row(d2, h2, T0, event_id="s2"),
        event_row(d0, h0, at, event_id="s0b", type_="fall"),
        event_row(d1, h1, at, event_id="c1", type_="cancel", cls="cancel", data={"ref": "s1"}),
    ]
    async with maker() as s, s.begin():
        await insert_events(s, rows)
    assert await d.intake_once() == len(rows)
    async with maker() as s:
        calls = {c.home_id: c for c in (await s.scalars(select(Call))).all()}
        decisions = dict((await s.execute(select(CallEvent.event_pk, CallEvent.call_id))).all())
        intake = {e.event_pk: (e.decision, e.call_id) for e in (await s.scalars(select(EventIntake))).all()}
        timers = (await s.scalars(select(Timer).where(Timer.call_id == calls[h1].id))).all()
        joined = await s.scalar(select(AuditRow.id).where(AuditRow.kind == "event_joined"))
    assert sorted(calls) == sorted([h0, h1, h2]), "three calls, the second alarm joined"
    assert sorted(d for d, _ in intake.values()) == ["cancelled", "joined", "opened", "opened", "opened"]
    assert calls[h0].version == 2 and calls[h0].last_event_at == at, "the join updated the new call"
    assert calls[h1].status == "cancelled" and calls[h1].outcome == "cancelled_by_resident"
    assert calls[h2].status != "cancelled"
    assert {t.status for t in timers} == {"fired", "cancelled"}, "the opening step fired, the rest cancelled"
    assert joined is not None
    assert set(decisions.values()) == {c.id for c in calls.values()}
    assert (await verify_log(maker)).ok


async def test_rounds_grow_while_they_are_full_on_postgresql(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
    db_backend: str,
) -> None:
    """A backlog (a storm, a shared core) is taken in rounds twice as big each time one is
    full, up to INTAKE_BATCH_MAX; a round that is not full resets the size. SQLite keeps
    the small round (its one writer is the gateway's too)."""
    d, _clock, _ = setup
    fleet = await _fleet(maker, 120)
    async with maker() as s, s.begin():
        await insert_events(
            s, [event_row(dev, home, T0) for home, dev in zip(fleet.homes, fleet.devices, strict=True)]
        )
    rounds = []
    while n := await d.intake_once():
        rounds.append(n)
    if db_backend == "postgresql":
        assert rounds == [25, 50, 45], rounds
    else:
        assert rounds == [25, 25, 25, 25, 20], rounds
    assert d._intake_batch == 25
    async with maker() as s:
        calls = (await s.scalars(select(Call.home_id))).all()
    assert sorted(calls) == sorted(fleet.homes)


async def test_the_failures_table_is_looked_at_once_a_second_not_every_round(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
) -> None:
    """A failed event waits HANDLING_RETRY_S (2 s) before its retry, so a look for the due
    ones every second is enough; every round spent a transaction of its own on it."""
    d, clock, _ = setup

    async def looks() -> int:
        with statements(engine_of(maker)) as seen:
            await d.intake_once()
            await d.timers_once()
        return sum(1 for s in seen if s == "SELECT intake_failures.ref FROM intake_failures")

    assert await looks() == 2, "events and timers: looked at on the first round"
    assert await looks() == 0
    clock.advance(0.5)
    assert await looks() == 0
    clock.advance(0.5)
    assert await looks() == 2, "a second later"


async def test_calls_opened_in_the_last_day_are_counted_per_home(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
) -> None:
    """The frequent-caller count (priority's ``recent_calls_24h``): calls a home opened in
    the last 24 h, cancelled ones too, none of another home's, none older."""
    from dispatcher.calls.queries import count_recent_calls
    from tests.dispatcher.engine.support import store_event

    d, clock, _ = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    assert await d.intake_once() == 1
    await store_event(maker, "h1-btn", "e2", "cancel", T0, cls="cancel", data={"ref": "e1"})
    assert await d.intake_once() == 1
    clock.advance(3600)
    await store_event(maker, "h1-btn", "e3", "sos", T0 + timedelta(hours=1))
    assert await d.intake_once() == 1
    async with maker() as s:
        assert len((await s.scalars(select(Call))).all()) == 2
        at = T0 + timedelta(hours=2)
        assert await count_recent_calls(s, home_ids=["h1", "nobody"], now=at) == {"h1": 2, "nobody": 0}
        later = T0 + timedelta(hours=24, minutes=30)
        assert await count_recent_calls(s, home_ids=["h1"], now=later) == {"h1": 1}
        assert await count_recent_calls(s, home_ids=["h1"], now=T0 + timedelta(hours=26)) == {"h1": 0}


async def test_the_queue_reads_a_batch_of_calls_in_a_fixed_number_of_statements(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
) -> None:
    """A console frame (``load_calls``) reads its calls with the names the queue shows —
    the home's address, the resident's and the station's names — in one statement, not
    one per table: on a busy machine each round trip is a wait for a core."""
    from dispatcher.calls.queries import load_calls
    from dispatcher.registry.models import Home, Resident, Station

    d, _clock, _ = setup
    fleet = await _fleet(maker)
    async with maker() as s, s.begin():
        await insert_events(
            s, [event_row(dev, home, T0) for home, dev in zip(fleet.homes, fleet.devices, strict=True)]
        )
    assert await d.intake_once() == HOMES
    async with maker() as s:
        ids = list(await s.scalars(select(Call.id).order_by(Call.id.desc())))
        with statements(engine_of(maker)) as seen:
            calls = await load_calls(s, [*ids, 10**9])  # one unknown id: left out
        calls_rows = {c.id: c for c in (await s.scalars(select(Call))).all()}
        homes = dict((await s.execute(select(Home.id, Home.address))).all())
        residents = dict((await s.execute(select(Resident.id, Resident.name))).all())
        stations = dict((await s.execute(select(Station.id, Station.name))).all())
    assert len(seen) <= 4, Counter(seen)
    assert [c.id for c in calls] == ids, "in the order asked, the unknown id left out"
    for c in calls:
        row = calls_rows[c.id]
        assert c.address == homes[row.home_id] and c.station_name == stations[row.station_id]
        assert c.resident_name == (residents[row.resident_id] if row.resident_id else None)
        assert c.events and c.opened_at is not None
    async with maker() as s:  # a stream's frame: only what its scope sees, same reads
        station = calls_rows[ids[0]].station_id
        assert station is not None
        with statements(engine_of(maker)) as seen:
            own = await load_calls(s, ids, scope=frozenset({station}))
        assert [c.id for c in own] == [i for i in ids if calls_rows[i].station_id == station]
        assert len(seen) <= 4, Counter(seen)
        assert await load_calls(s, ids, scope=frozenset({"no-such-station"})) == []
        assert [c.id for c in await load_calls(s, ids, scope=None)] == ids, "None: the whole county"
