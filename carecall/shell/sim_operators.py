"""Simulated operators and responders for the demo county: they answer the open calls.

Without them a demo has calls that nobody acknowledges, dispatches or closes, and the
supervisor dashboard has no answer, dispatch, arrival or close times to show. They act
through the same code path as the API (``dispatcher.calls.actions.act`` in a transaction, the same
bus announcements after commit), as real users of the ``users`` table — one operator login
per station, ``sim-<station id>`` — so their actions are audit rows like anybody's.

Two parts:

- ``plan_call`` is pure: given a call's facts and a random stream it returns when the
  operator answers, whether a responder is sent, when they set off and arrive, and how
  the call ends. The stream is seeded by the call id, so every copy of the simulator
  plans the same call the same way (and races on the same actions: the calls service's
  state checks let one win; the others get a CallError, which is counted, not fatal).
- ``SimulatedOperators`` is the I/O at the edge: it watches the open calls, performs each
  planned step when simulated time reaches it, and asks the clock for fine resolution
  around its steps (``Clock.hold``) so a compressed history keeps human-scale times.
  With ``services`` (carecall/shell/sim_services.py) a task beside that loop works the
  service orders, welfare visits and phone bookings — only while no call waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus, RedisBus
from carecall.core.clock import Clock
from carecall.shell.sim_call_facts import facts_from_policy, pick_responders
from carecall.shell.sim_call_plan import DEFAULT_BEHAVIOUR, Behaviour, Plan, Step, plan_call
from device_gateway.models import DeviceEvent
from dispatcher.audit.chain import AuditKind
from dispatcher.audit.models import AuditRow
from dispatcher.auth.models import User
from dispatcher.calls.actions import act
from dispatcher.calls.context import Actor, CallError, DispatchContext
from dispatcher.calls.models import OPEN_STATUSES, Assignment, Call, CallEvent, Timer
from dispatcher.calls.outbox import queue_device_notices
from dispatcher.registry.models import Home, Staff, Station

if TYPE_CHECKING:
    from carecall.shell.sim_services import SimulatedServices

log = structlog.get_logger("carecall.sim.operators")

DISPATCHABLE_ROLES = ("responder", "nurse", "doctor")
# Escalation timer actions and the operator step that makes them pointless (the ``until``
# of config/escalation.yaml): a timer due before that step will fire.
STOPPED_BY: dict[str, str] = {
    "remind": "acknowledge",
    "escalate_street": "acknowledge",
    "escalate_county": "acknowledge",
    "notify_contacts": "acknowledge",
    "alert_supervisor": "arrive",
}
USER_PREFIX = "sim-"


# --------------------------------------------------------------------------- the shell


@dataclass
class OperatorStats:
    planned: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0  # another copy (or a human) was first: a 409 from the calls service
    skipped: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)


@dataclass
class _Tracked:
    start: datetime
    plan: Plan
    next: int = 0
    held_until: datetime | None = None


@dataclass(frozen=True)
class _Login:
    user_id: int
    username: str
    display_name: str
    scope: frozenset[str] | None


class SimulatedOperators:
    """Watches the open calls and acts on them when their planned moments come."""

    HOLD_BEFORE_S = 1.0
    URGENT_RETRY_S = 0.05  # real seconds the services wait while a call needs the operators
    HOLD_AFTER_S = 3.0
    # Continuous fine time until an answer due within this (an emergency's reminders come
    # every 20 s); a device-trouble call left for hours is held around its timers only.
    ANSWER_HOLD_MAX_S = 900.0

    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        clock: Clock,
        ctx: DispatchContext,
        bus: MemoryBus | RedisBus | None = None,
        seed: int = 1,
        behaviour: Behaviour = DEFAULT_BEHAVIOUR,
        idle_s: float = 1.0,
        min_pause_s: float = 0.01,
        services: SimulatedServices | None = None,
    ) -> None:
        self.maker = maker
        self.clock = clock
        self.ctx = ctx
        self.bus = bus
        self.seed = seed
        self.behaviour = behaviour
        self.idle_s = idle_s  # real seconds between looks when nothing is planned and nothing wakes us
        self.min_pause_s = min_pause_s  # real seconds between two looks
        self.stats = OperatorStats()
        self._tracked: dict[int, _Tracked] = {}
        self._held_timers: set[int] = set()
        self._logins: dict[str, _Login] = {}
        self._wake = asyncio.Event()
        self._reading = False  # a look woken by a change on the bus is under way
        # service orders and welfare visits, worked in the same loop once no call waits
        self.services = services
        self._svc_wake = asyncio.Event()

    async def prepare(self) -> int:
        """Create the simulated operator of every station now, before simulated time runs:
        hashing a password takes half a second of CPU, which at ×10,000 would be more than
        an hour of simulated time lost in the middle of a station's first call. Returns
        how many logins exist."""
        async with self.maker() as s:
            stations = list(await s.scalars(select(Station.id).order_by(Station.id)))
        gate = asyncio.Semaphore(4)  # the hashes run in threads; a few at a time

        async def one(station_id: str) -> None:
            async with gate:
                await self._login(station_id)

        await asyncio.gather(*(one(st) for st in stations))
        return len(self._logins)

    # ------------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen()) if self.bus is not None else None
        events = (
            asyncio.create_task(self._listen_events())
            if self.bus is not None and self.services is not None
            else None
        )
        # the services in a task of their own: a slow write of theirs never keeps the
        # loop below from seeing a new call (at ×10,000 a 50 ms wait is eight minutes)
        services = asyncio.create_task(self._run_services(stop)) if self.services is not None else None
        try:
            while not stop.is_set():
                # a call changed (the bus woke us): busy() until this look has read it, or a
                # new call's answer would not be held yet while its first read waits
                self._reading = self._wake.is_set()
                self._wake.clear()  # before looking: a call opened meanwhile wakes the next wait
                try:
                    delay = await self.step(stop)
                    # Every action, reminder and escalation publishes "calls" and wakes
                    # us; a short real pause makes a burst of them one look at the queue.
                    await asyncio.sleep(self.min_pause_s)
                except Exception:
                    log.exception("sim_operators.step_failed")
                    delay = None
                finally:
                    self._reading = False
                await self._wait(stop, delay)
        finally:
            for task in (listener, events, services):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _listen(self) -> None:
        assert self.bus is not None
        async for _ in self.bus.subscribe("calls"):
            self._wake.set()

    async def _listen_events(self) -> None:
        """Stored device events: a service button's order is booked a moment later."""
        assert self.bus is not None and self.services is not None
        async for _ in self.bus.subscribe("events"):
            self.services.poke()
            self._svc_wake.set()

    async def _wait(self, stop: asyncio.Event, simulated_s: float | None) -> None:
        """Until the next planned step (simulated time), a new call (the bus), or — with
        nothing planned — a look every ``idle_s`` real seconds, which the bus makes rare."""
        waiters = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(
                self.clock.sleep(simulated_s) if simulated_s is not None else asyncio.sleep(self.idle_s)
            ),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def step(self, stop: asyncio.Event | None = None) -> float | None:
        """Look at the open calls, do what is due; returns simulated seconds to the next
        step (None: nothing planned). Stops between calls once ``stop`` is set, and after
        the first busy-database write (the rest wait for the next look, 1 s on)."""
        await self._refresh()
        now = self.clock.now()
        next_in: float | None = None
        for call_id in sorted(self._tracked):
            if stop is not None and stop.is_set():
                return None
            tr = self._tracked[call_id]
            while tr.next < len(tr.plan.steps):
                st = tr.plan.steps[tr.next]
                due = tr.start + timedelta(seconds=st.at_s)
                if due > now:
                    wait = (due - now).total_seconds()
                    next_in = wait if next_in is None else min(next_in, wait)
                    self._hold(tr, due)
                    break
                try:
                    await self._do(call_id, st)
                except (OperationalError, DBAPIError) as exc:  # busy database: again soon
                    log.warning(
                        "sim_operators.db_busy", call_id=call_id, action=st.action, error=str(exc)[:200]
                    )
                    return 1.0 if next_in is None else min(next_in, 1.0)
                tr.next += 1
                now = self.clock.now()
            if tr.next >= len(tr.plan.steps):
                self._tracked.pop(call_id, None)
        return None if next_in is None else max(next_in, 0.0)

    async def _run_services(self, stop: asyncio.Event) -> None:
        """Orders, visits and bookings (carecall/shell/sim_services.py): each step only
        while no call needs the operators (``_urgent``); waits for its next moment, a
        device event (``poke``) or a call handled."""
        assert self.services is not None
        svc = self.services
        while not stop.is_set():
            if self._urgent():
                # The calls first: not even a look at the services until none waits. (Looking
                # anyway, with a step of theirs due that it may not do, made this loop spin:
                # hundreds of looks a real second, the CPU the operators' writes needed.)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.URGENT_RETRY_S)
                continue
            try:
                later: float | None = await svc.step(self._login, self._urgent)
            except Exception:
                log.exception("sim_services.step_failed")
                later = None
            real = svc.real_wait()
            self._svc_wake.clear()
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._svc_wake.wait()),
                asyncio.ensure_future(
                    self.clock.sleep(later) if later is not None else asyncio.sleep(self.idle_s)
                ),
            ]
            if real is not None:
                waiters.append(asyncio.ensure_future(asyncio.sleep(max(real, self.min_pause_s))))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
            # a step due now but not done (the database was busy) is due again at once:
            # never two looks closer than this
            await asyncio.sleep(self.min_pause_s)

    def busy(self) -> bool:
        """A call needs the operators now (the demo history's clock keeps fine time until
        they are done: carecall/shell/demo_history.py, ``back_pressure``)."""
        return self._urgent()

    def _urgent(self) -> bool:
        """A call needs the operators now: one changed (the bus) and they have not read it
        yet, or a planned step is due."""
        now = self.clock.now()
        return (
            self._wake.is_set()
            or self._reading
            or any(
                tr.next < len(tr.plan.steps)
                and tr.start + timedelta(seconds=tr.plan.steps[tr.next].at_s) <= now
                for tr in self._tracked.values()
            )
        )

    def _hold(self, tr: _Tracked, due: datetime) -> None:
        """Fine time from the start until the answer, then around each next step (the
        timers that fire after the answer are held apart)."""
        if tr.held_until is not None and tr.held_until >= due:
            return
        # Until the answer the call's reminders repeat every few simulated seconds; at
        # ×10,000 they would be a write transaction every few real milliseconds, and the
        # answer itself would wait behind them for SQLite's lock: fine time all along.
        continuous = tr.next == 0 and (due - tr.start).total_seconds() <= self.ANSWER_HOLD_MAX_S
        begin = tr.start if continuous else due - timedelta(seconds=self.HOLD_BEFORE_S)
        end = due + timedelta(seconds=self.HOLD_AFTER_S)
        self.clock.hold(begin, end)
        tr.held_until = end

    # ------------------------------------------------------------------ reading

    async def _refresh(self) -> None:
        async with self.maker() as s:
            rows = (
                await s.execute(
                    select(Call.id, Call.event_class, Call.policy, Home.area)
                    .join(Home, Home.id == Call.home_id)
                    .where(Call.status.in_([x.value for x in OPEN_STATUSES]))
                )
            ).all()
            open_ids = {r.id for r in rows}
            for gone in set(self._tracked) - open_ids:
                self._tracked.pop(gone, None)
            timers = (
                await s.execute(
                    select(Timer.id, Timer.call_id, Timer.action, Timer.due_at).where(
                        Timer.status == "pending", Timer.call_id.in_(open_ids)
                    )
                )
            ).all()
            new = [r for r in rows if r.id not in self._tracked]
            ids = [r.id for r in new]
            starts: dict[int, datetime] = {}
            first_type: dict[int, str] = {}
            if ids:
                for cid, at in (
                    await s.execute(
                        select(AuditRow.call_id, func.min(AuditRow.at))
                        .where(AuditRow.call_id.in_(ids), AuditRow.kind == AuditKind.event_received.value)
                        .group_by(AuditRow.call_id)
                    )
                ).all():
                    if cid is not None and at is not None:
                        starts[cid] = at
                for cid, typ in (
                    await s.execute(
                        select(CallEvent.call_id, DeviceEvent.type)
                        .join(DeviceEvent, DeviceEvent.id == CallEvent.event_pk)
                        .where(CallEvent.call_id.in_(ids))
                        .order_by(DeviceEvent.id)
                    )
                ).all():
                    first_type.setdefault(cid, typ)
        for r in new:
            start = starts.get(r.id)
            if start is None:
                continue  # no event_received row yet: look again next time
            start = start if start.tzinfo else start.replace(tzinfo=UTC)
            facts = facts_from_policy(r.id, r.event_class, first_type.get(r.id, "?"), r.area, r.policy or {})
            plan = plan_call(facts, random.Random(f"{self.seed}:call:{r.id}"), self.behaviour)
            self._tracked[r.id] = _Tracked(start=start, plan=plan)
            self.stats.planned += 1
            self.stats.answers[plan.answer] += 1
        # The platform's own timers (reminders, escalations, the supervisor alert) are
        # human-scale moments too: fine time around each one that will fire.
        self._held_timers &= {t.id for t in timers}
        for t in timers:
            if t.id in self._held_timers:
                continue
            self._held_timers.add(t.id)
            due = t.due_at if t.due_at.tzinfo else t.due_at.replace(tzinfo=UTC)
            if self._will_fire(t.call_id, t.action, due):
                self.clock.hold(
                    due - timedelta(seconds=self.HOLD_BEFORE_S), due + timedelta(seconds=self.HOLD_AFTER_S)
                )

    def _will_fire(self, call_id: int, action: str, due: datetime) -> bool:
        """Whether a timer is due before the planned step that makes it pointless (the
        answer stops reminders and escalations, the arrival the supervisor alert)."""
        tr = self._tracked.get(call_id)
        stopper = STOPPED_BY.get(action)
        if tr is None or stopper is None:
            return True
        for st in tr.plan.steps:
            if st.action == stopper or (stopper == "arrive" and st.action in ("resolve", "cancel")):
                return due <= tr.start + timedelta(seconds=st.at_s)
        return True

    # ------------------------------------------------------------------ acting

    async def _login(self, station_id: str | None) -> _Login | None:
        """The simulated operator of a station: a real user, created on first need."""
        if station_id is None:
            return None
        known = self._logins.get(station_id)
        if known is not None:
            return known
        from dispatcher.auth.principals import station_subtree
        from dispatcher.auth.users import DuplicateUsername, create_user

        username = f"{USER_PREFIX}{station_id}"[:64]
        for attempt in range(5):
            try:
                async with self.maker() as s, s.begin():
                    station = await s.get(Station, station_id)
                    if station is None:
                        return None
                    user = await s.scalar(select(User).where(User.username == username))
                    if user is None:
                        user = await create_user(
                            s,
                            username=username,
                            password=secrets.token_urlsafe(24),  # never shown: nobody signs in as it
                            role="operator",
                            station_id=station_id,
                            display_name=f"模拟值班员 {station.name}"[:100],
                            now=self.clock.now(),
                        )
                    scope = (
                        None if station.tier == "county" else await station_subtree(s, station_id=station_id)
                    )
                    login = _Login(user.id, user.username, user.display_name, scope)
            except (DuplicateUsername, IntegrityError, OperationalError):
                # another copy created it meanwhile, or SQLite's writer was busy: again
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            self._logins[station_id] = login
            return login
        return None

    async def _responders(self, session: AsyncSession, call: Call, login: _Login) -> list[str]:
        busy = select(Assignment.staff_id).where(Assignment.active.is_(True))
        free = (
            await session.execute(
                select(Staff.id, Staff.station_id)
                .where(
                    Staff.on_duty.is_(True),
                    Staff.role.in_(DISPATCHABLE_ROLES),
                    Staff.id.not_in(busy),
                )
                .order_by(Staff.id)
            )
        ).all()
        home = await session.get(Home, call.home_id)
        prefer = [x for x in (home.station_id if home else None, call.station_id) if x]
        if home is not None:
            parent = await session.scalar(select(Station.parent_id).where(Station.id == home.station_id))
            if parent:
                prefer.append(parent)
        return pick_responders([(a, b) for a, b in free], prefer, login.scope)

    async def _do(self, call_id: int, st: Step) -> None:
        # What the operator sees first (a read), then the action in its own transaction,
        # which the calls service opens with the audit chain's lock, as the API does.
        async with self.maker() as s:
            call = await s.get(Call, call_id)
            if call is None:
                return
            station_id = call.station_id
        login = await self._login(station_id)
        if login is None:
            self.stats.skipped["no_station"] += 1
            return
        body: dict[str, Any] = {}
        if st.action == "dispatch":
            async with self.maker() as s:
                call = await s.get(Call, call_id)
                staff = await self._responders(s, call, login) if call is not None else []
            if not staff:
                self.stats.skipped["no_free_responder"] += 1
                log.info("sim_operators.no_free_responder", call_id=call_id)
                return
            body["staff_ids"] = staff
        if st.action == "resolve":
            body["outcome"] = st.outcome or "other"
        if st.action == "cancel":
            body["outcome"] = st.outcome or "cancelled"
            body["false_alarm"] = True
        if st.action == "resolve" and st.outcome == "no_access":
            body["note"] = "nobody opened the door"
        now = self.clock.now()
        try:
            async with self.maker() as s, s.begin():
                out = await act(
                    s,
                    call_id=call_id,
                    action=st.action,
                    actor=Actor(name=f"user:{login.username}", user_id=login.user_id),
                    body=body,
                    now=now,
                    ctx=self.ctx,
                )
                await queue_device_notices(s, notices=out.device_notices, now=now)
        except CallError as exc:
            # Another copy, a human or the resident (a cancel) was first, or the step no
            # longer applies (nobody was dispatched, so nobody arrives): counted, moved on.
            self.stats.conflicts += 1
            log.debug("sim_operators.conflict", call_id=call_id, action=st.action, error=str(exc))
            return
        self.stats.actions[st.action] += 1
        if self.bus is not None:
            await self.bus.publish("calls", {"ids": sorted(out.calls), "by": "sim-operators"})
            if out.device_notices or out.notifications:
                await self.bus.publish("outbox", {"count": len(out.device_notices)})
