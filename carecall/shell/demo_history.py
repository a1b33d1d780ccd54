"""The demo's history catch-up (``carecall demo --history-days D``), kept out of the
production wiring (carecall/shell/runtime.py); carecall/shell/demo.py runs it.

``carecall demo --speed N --history-days D`` starts the clock D days ago and runs the
county at ×N until simulated time reaches the real now, then at ×1 (CatchUpClock).
Around every human-scale moment (a device event, an operator's step, an escalation
timer that will fire, an event the platform derives itself) the clock runs at
HISTORY_FINE_SPEED, so answer times are seconds, not minutes of smeared processing time.

One process carries about 150 device messages a second next to everything else; the
county's 514 devices at their registry heartbeats (60 s for hubs, radars, mattresses)
would send 5 a second, 25,000 at ×5,000. So while catching up:

- devices report twice a day (HISTORY_HEARTBEAT_S, set in the registry for the
  catch-up and put back after it, so the gateway's supervision agrees with what devices
  send; the originals wait in HISTORY_HEARTBEATS_FILE in case the process is killed);
- the no-movement rule waits HISTORY_INACTIVITY_HOURS: with a reading every 12 hours
  it cannot see movement, and at 4 hours it would call every radar and mattress daily
  (device-raised inactivity events still open calls);
- the gateway flushes device state and sweeps for silent devices in simulated minutes,
  not seconds (at ×10,000 two simulated seconds are 0.2 real milliseconds);
- the dispatcher polls its timers every 10 real ms instead of 250, and generates welfare
  visits every two real seconds instead of every minute (``history_visit_rules``), and
  the service orders' levels are checked every real second (``history_order_levels``).

Alarms are never thinned. After the catch-up the gateway and the dispatcher restart
with the normal settings, and the simulated homes with their registry heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core import heap
from carecall.core.clock import CatchUpClock
from carecall.shell.runtime import Core, Parts
from carecall.shell.secret_files import load_secrets, save_secrets
from config.settings import Settings

if TYPE_CHECKING:
    from device_gateway.service import Gateway
    from device_gateway.store import EventRow
    from dispatcher.engine.process import Dispatcher
    from dispatcher.visits.rules import VisitRules

log = structlog.get_logger("carecall.runtime")


HISTORY_FINE_SPEED = 50.0
HISTORY_HEARTBEAT_S = 12 * 3600
HISTORY_INACTIVITY_HOURS = 72.0
HISTORY_HEARTBEATS_FILE = "carecall-demo-heartbeats.json"
HISTORY_TUNING: dict[str, float] = {
    "state_flush_interval_s": 600.0,
    "supervision_interval_s": 1800.0,
    "timer_poll_s": 0.01,
}


def history_settings(settings: Settings, workdir: Path) -> Settings:
    """The gateway's and dispatcher's settings while catching up (see above)."""
    import yaml

    from device_gateway.rules import load_rules

    rules = load_rules(settings.rules_file).model_dump(mode="json")
    rules["inactivity"]["hours"] = max(float(rules["inactivity"]["hours"]), HISTORY_INACTIVITY_HOURS)
    path = workdir / "history-rules.yaml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    return settings.model_copy(update={**HISTORY_TUNING, "rules_file": path})


HISTORY_VISITS_EVERY_S = 2.0


def history_visit_rules() -> VisitRules:
    """The visits policy while catching up: rounds every HISTORY_VISITS_EVERY_S real
    seconds (about five simulated hours at ×10,000) instead of config/visits.yaml's
    minute, which would be a week of history between rounds (weekly visits skipped,
    follow-ups past their lookback)."""
    from dispatcher.visits.config_file import load_visit_rules

    return load_visit_rules().model_copy(update={"generate_every_s": HISTORY_VISITS_EVERY_S})


HISTORY_LEVELS_EVERY_S = 1.0


async def history_order_levels(once: Callable[[], Awaitable[int]], stop: asyncio.Event) -> None:
    """The service orders' level watch while catching up, every HISTORY_LEVELS_EVERY_S real
    seconds: the dispatcher's own round every 30 real seconds would be days of history,
    and an order late and then done in between would never be recorded as breached.
    ``once`` is the dispatcher's own round (``Dispatcher.order_levels_once``: each step
    recorded once, whichever copy sees it first; pages queued in the outbox)."""
    from sqlalchemy.exc import DBAPIError

    while not stop.is_set():
        try:
            await once()
        except DBAPIError as exc:  # a busy database (or a copy racing us): next round
            log.warning("demo.order_levels_failed", error=str(exc)[:200])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HISTORY_LEVELS_EVERY_S)


def history_heartbeat(registry_s: int) -> int:
    """A device's heartbeat while catching up: never shorter than it is registered."""
    return max(registry_s, HISTORY_HEARTBEAT_S)


async def history_heartbeats(core: Core, path: Path) -> None:
    """Registry heartbeats for the catch-up; the originals are saved first."""
    from sqlalchemy import select, update

    from device_gateway.models import Device

    async with core.maker() as s, s.begin():
        rows = (
            await s.execute(
                select(Device.id, Device.kind, Device.heartbeat_s).where(Device.privileged.is_(False))
            )
        ).all()
        changes = {r.id: (r.heartbeat_s, history_heartbeat(r.heartbeat_s)) for r in rows}
        changes = {d: v for d, v in changes.items() if v[1] != v[0]}
        if not changes:
            return
        saved = load_secrets(path)  # same {str: str} file format
        saved.update({d: str(old) for d, (old, _) in changes.items() if d not in saved})
        save_secrets(path, saved)
        by_new: dict[int, list[str]] = {}
        for d, (_, new) in changes.items():
            by_new.setdefault(new, []).append(d)
        for new, ids in by_new.items():
            await s.execute(update(Device).where(Device.id.in_(ids)).values(heartbeat_s=new))


async def restore_heartbeats(core: Core, path: Path) -> int:
    """Put back the heartbeats saved by ``history_heartbeats`` (also after a killed run)."""
    from sqlalchemy import update
    from sqlalchemy.exc import OperationalError

    from device_gateway.models import Device

    saved = load_secrets(path)
    by_value: dict[int, list[str]] = {}
    for device_id, value in saved.items():
        with contextlib.suppress(ValueError):
            by_value.setdefault(int(value), []).append(device_id)
    for attempt in range(5) if by_value else ():
        try:
            async with core.maker() as s, s.begin():
                for hb, ids in by_value.items():
                    await s.execute(update(Device).where(Device.id.in_(ids)).values(heartbeat_s=hb))
            break
        except OperationalError:
            # SQLite: a write of the phase just stopped may still be finishing; the
            # rhythm must be put back (the file is kept until it is), so wait and retry
            if attempt == 4:
                raise
            await asyncio.sleep(0.5)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # noqa: ASYNC240 (a small file, twice a run)
    return sum(len(v) for v in by_value.values())


async def last_recorded(core: Core) -> datetime | None:
    """The newest audit row's time: a second history run resumes there, never overlaps."""
    from sqlalchemy import func, select

    from dispatcher.audit.models import AuditRow

    async with core.maker() as s:
        at: datetime | None = await s.scalar(select(func.max(AuditRow.at)))
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def history_begin(core: Core, history_days: float) -> datetime | None:
    """Where the history starts: ``history_days`` ago, or where an earlier run's record
    ends; None when less than a minute is left to fill (or no history was asked for)."""
    if history_days <= 0:
        return None
    real_now = datetime.now(UTC)
    begin = real_now - timedelta(days=history_days)
    last = await last_recorded(core)
    if last is not None and last > begin:
        begin = min(last, real_now)  # resume where the record ends
    if (real_now - begin).total_seconds() < 60:
        return None
    return begin


async def count_calls(core: Core) -> int:
    from sqlalchemy import func, select

    from dispatcher.calls.models import Call

    async with core.maker() as s:
        return int(await s.scalar(select(func.count()).select_from(Call)) or 0)


async def history_progress(
    core: Core, clock: CatchUpClock, days: float, say: Callable[[str], None], every_s: float
) -> None:
    t0 = clock.now()
    while True:
        await asyncio.sleep(every_s)
        done = (clock.now() - t0).total_seconds() / 86400
        say(f"history: {min(done, days):.1f} of {days:.1f} days, {await count_calls(core)} calls")


DERIVED_HOLD_S = 15.0


def hold_after_derived(clock: CatchUpClock) -> Callable[[list[EventRow]], Awaitable[None]]:
    """Events the platform derives itself (rules, supervision) cannot be foreseen like a
    device's; fine time from the moment one is stored, so its call opens and is seen
    at human scale (what passed between its receipt and its commit is already gone)."""

    async def hold(rows: list[EventRow]) -> None:
        if any(r.source != "device" for r in rows):
            now = clock.now()
            clock.hold(now, now + timedelta(seconds=DERIVED_HOLD_S))

    return hold


BACK_PRESSURE_EVERY_S = 0.02
BACK_PRESSURE_HOLD_S = 3.0
BACK_PRESSURE_LAG_S = 0.05
# While the simulated staff have a call to read or a step of theirs is due and not done,
# the clock crawls: at the fine rate a 2 s wait for SQLite's write lock under load was
# 200 simulated seconds added to an answer (the answer-time median then missed its 180 s
# in CI); at ×1 it is 2 s. Renewed every BACK_PRESSURE_EVERY_S while they are busy, so the
# crawl outlasts their work by at most BUSY_CRAWL_REAL_S real seconds.
BUSY_CRAWL_RATE = 1.0
BUSY_CRAWL_REAL_S = 0.05
DEVICES_CONNECT_S = 120.0
STUCK_S = 2.0


async def back_pressure(
    clock: CatchUpClock, phase: Phase, stop: asyncio.Event, maker: async_sessionmaker[AsyncSession]
) -> None:
    """The history never runs ahead of the platform: while work is in flight (devices
    still connecting, a device waiting for its "received", a stored event not yet a call,
    a call the simulated staff have not seen yet or a step of theirs that is due and not
    done: then it crawls, BUSY_CRAWL_RATE) or the event loop lags, the clock runs at the fine rate. At ×10,000 a 50 ms stall would otherwise be eight
    simulated minutes in which devices resend, timers fire and nobody could answer."""
    started = time.monotonic()
    while clock.paused and not stop.is_set():
        # Simulated time starts once every device is connected (and the simulated
        # operators have their logins): hundreds of logins and retained configs at once
        # would otherwise smear the first simulated hours.
        ready = phase.devices_away == 0 and all(t.done() for t in phase.starting)
        if ready or time.monotonic() - started > DEVICES_CONNECT_S:
            # Everything alive now (the county, its devices and their sessions) stays
            # alive: out of the collector's sight. A full collection over it pauses the
            # loop for up to half a second, which is an hour of simulated time.
            heap.settle("demo-history")
            clock.resume()
            log.info("demo.history_started", after_s=round(time.monotonic() - started, 1))
            break
        await asyncio.sleep(BACK_PRESSURE_EVERY_S)
    from sqlalchemy import func, select

    from device_gateway.models import DeviceEvent

    async with maker() as s:
        since_pk = int(await s.scalar(select(func.max(DeviceEvent.id))) or 0)
    settled = time.monotonic()
    while not stop.is_set() and not clock.caught_up.is_set():
        if time.monotonic() - settled > 1.0:
            settled = time.monotonic()
            await phase.settle_intake(maker, since_pk)
        t = time.monotonic()
        await asyncio.sleep(BACK_PRESSURE_EVERY_S)
        lag = time.monotonic() - t - BACK_PRESSURE_EVERY_S
        if phase.staff_busy():
            clock.hold_for(BUSY_CRAWL_REAL_S, BUSY_CRAWL_RATE)
        if lag > BACK_PRESSURE_LAG_S or phase.backlog() > 0:
            now = clock.now()
            clock.hold(now, now + timedelta(seconds=BACK_PRESSURE_HOLD_S))


@dataclass
class Phase:
    """The gateway, dispatcher and simulated homes of one phase of the demo (history or
    live), and what holds the history's clock back while work is in flight."""

    parts: Parts
    devices_pending: int = 0  # simulated devices' events not yet acknowledged as received
    devices_away: int = 0  # simulated devices not (yet) connected, other than those gone silent on purpose
    starting: list[asyncio.Task[object]] = field(default_factory=list)  # to finish before the clock starts

    intake_offset: int = 0
    _pending_seen: tuple[int, float] = (0, 0.0)
    # the simulated staff have work due (a call they have not looked at, a step of theirs
    # past its moment): their holds around each step end at fixed simulated moments, and
    # a step still waiting for the database (or the CPU) then would see the clock race on
    staff_busy: Callable[[], bool] = lambda: False

    def backlog(self) -> int:
        """Work in flight: events the devices still wait to hear "received" for, and
        stored events the dispatcher has not turned into calls yet (by the counters; an
        event handled off the counted path is corrected by ``settle_intake``)."""
        intake = self.gateway.stats.events_stored - self.dispatcher.stats.events - self.intake_offset
        if intake < 0:
            # More handled than stored and not yet handled: an offset taken while a batch
            # was committed but not yet counted, or events stored off the counted path.
            # Left standing, that surplus would hide as many new events from the clock.
            self.intake_offset += intake
            intake = 0
        pending = self.devices_pending
        # a device gone silent keeps its events pending until it is back (simulated
        # minutes to hours): that is no work the platform can do, so a count that has
        # not moved for STUCK_S real seconds does not hold the clock
        now = time.monotonic()
        if pending != self._pending_seen[0]:
            self._pending_seen = (pending, now)
        elif now - self._pending_seen[1] > STUCK_S:
            pending = 0
        return pending + self.devices_away + max(0, intake)

    async def settle_intake(self, maker: async_sessionmaker[AsyncSession], since_pk: int) -> None:
        """When the counters say events wait but the database says none do (the
        dispatcher handled one singly, or a batch twice), believe the database."""
        from sqlalchemy import exists, func, select

        from device_gateway.models import DeviceEvent
        from dispatcher.calls.models import EventIntake

        intake = self.gateway.stats.events_stored - self.dispatcher.stats.events - self.intake_offset
        if intake <= 0:
            return
        async with maker() as s:
            waiting = await s.scalar(
                select(func.count())
                .select_from(DeviceEvent)
                .where(
                    DeviceEvent.id > since_pk,
                    ~exists().where(EventIntake.event_pk == DeviceEvent.id),
                )
            )
        if not waiting:
            self.intake_offset += intake

    @property
    def gateway(self) -> Gateway:
        assert self.parts.gateway is not None  # a demo phase runs both parts
        return self.parts.gateway

    @property
    def dispatcher(self) -> Dispatcher:
        assert self.parts.dispatcher is not None
        return self.parts.dispatcher

    @property
    def stop(self) -> asyncio.Event:
        return self.parts.stop

    @property
    def tasks(self) -> list[asyncio.Task[object]]:
        return self.parts.tasks

    async def close(self) -> None:
        for failure in await self.parts.close():
            log.error("demo.task_failed", error=repr(failure))
