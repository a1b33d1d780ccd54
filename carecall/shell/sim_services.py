"""The demo's simulated providers, visitors and phone bookings: service orders and welfare
visits worked through the same service functions as the API and the phone
(``dispatcher.orders.service`` and ``dispatcher.visits.actions``), as the stations'
simulated operators (``sim-<station id>``, carecall/shell/sim_operators.py), so every
step is an audit row like anybody's.

The plans are pure (carecall/shell/sim_services_plan.py); this is the I/O at the edge. It
runs in a task beside the simulated operators' loop (``SimulatedOperators._run_services``),
so its writes never keep that loop from a new call, and it acts only when no call is
waiting: before each step it asks ``urgent`` (a call's step is due, or a call changed) and
stops at once if so — an order or a visit never delays an emergency.

Orders are seen by polling (every POLL_S simulated seconds) and shortly after a device
event was stored (``poke``: a service button's order is booked by the dispatcher's intake
a moment after the event), visits by polling (the dispatcher generates them).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock, as_utc
from carecall.core.geo import great_circle_km
from carecall.shell.sim_services_plan import (
    DEFAULT_SERVICE_BEHAVIOUR,
    Booking,
    OrderFacts,
    ServiceBehaviour,
    Step,
    VisitFacts,
    plan_bookings,
    plan_order,
    plan_visit,
)
from dispatcher.orders import service as orders
from dispatcher.orders.catalogue import Catalogue
from dispatcher.orders.lifecycle import OrderAction, OrderStatus
from dispatcher.orders.models import Order, Provider
from dispatcher.registry.models import Home, Resident, Staff
from dispatcher.visits import actions as visits
from dispatcher.visits.models import OPEN_STATUSES as VISIT_OPEN
from dispatcher.visits.models import Seen, Visit

log = structlog.get_logger("carecall.sim.services")

FINISHED = (OrderStatus.closed.value, OrderStatus.cancelled.value)
VISITOR_ROLES = ("responder", "nurse")


class Login(Protocol):
    @property
    def username(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def scope(self) -> frozenset[str] | None: ...


LoginFor = Callable[[str | None], Awaitable[Login | None]]


@dataclass
class ServiceStats:
    orders_planned: int = 0
    visits_planned: int = 0
    bookings: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0  # the step no longer applied (someone else moved it first)


@dataclass
class _Tracked:
    steps: tuple[Step, ...]
    next: int = 0


class SimulatedServices:
    POLL_S = 1800.0  # simulated seconds between looks at the open orders and visits
    POKE_DELAY_S = 0.05  # real seconds after a device event: its order is booked by then

    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        clock: Clock,
        catalogue: Catalogue,
        seed: int = 1,
        behaviour: ServiceBehaviour = DEFAULT_SERVICE_BEHAVIOUR,
        missed_after_h: float = 24.0,
        bookings: bool = True,
    ) -> None:
        self.maker = maker
        self.clock = clock
        self.catalogue = catalogue
        self.seed = seed
        self.behaviour = behaviour
        self.missed_after_h = missed_after_h
        self.bookings = bookings
        self.tz = ZoneInfo(catalogue.timezone)
        self.stats = ServiceStats()
        self._orders: dict[int, _Tracked] = {}
        self._visits: dict[int, _Tracked] = {}
        self._settled: set[int] = set()  # orders whose plan is over (e.g. never confirmed)
        self._residents: dict[str, str] = {}  # resident id → home station
        self._booked_days: set[date] = set()
        self._calls: list[Booking] = []
        self._since: datetime | None = None  # bookings before this moment are not made
        self._polled_at: datetime | None = None
        self._poked_at: float | None = None

    def poke(self) -> None:
        """A device event was stored: look at the orders soon (after POKE_DELAY_S)."""
        if self._poked_at is None:
            self._poked_at = time.monotonic()

    def real_wait(self) -> float | None:
        """Real seconds until a poked look is due (None: nothing poked)."""
        if self._poked_at is None:
            return None
        return max(0.0, self.POKE_DELAY_S - (time.monotonic() - self._poked_at))

    # ------------------------------------------------------------------ the loop's step

    async def step(self, login_for: LoginFor, urgent: Callable[[], bool]) -> float | None:
        """Do what is due unless ``urgent``; simulated seconds to the next thing to do."""
        now = self.clock.now()
        poked = self._poked_at is not None and self.real_wait() == 0.0
        if self._polled_at is None or poked or (now - self._polled_at).total_seconds() >= self.POLL_S:
            await self._refresh(now)
        self._plan_calls(now)
        due: list[tuple[datetime, int, int]] = []
        for kind, tracked in ((0, self._orders), (1, self._visits)):
            for key, tr in tracked.items():
                if tr.next < len(tr.steps):
                    due.append((tr.steps[tr.next].at, kind, key))
        for i, b in enumerate(self._calls):
            due.append((b.at, 2, i))
        due.sort()
        done_calls: set[int] = set()
        for at, kind, key in due:
            if at > now or urgent():
                break
            try:
                if kind == 0:
                    await self._order_step(key, login_for, now)
                elif kind == 1:
                    await self._visit_step(key, login_for, now)
                else:
                    await self._book(self._calls[key], login_for, now)
                    done_calls.add(key)
            except (OperationalError, DBAPIError) as exc:  # busy database: again soon
                log.warning("sim_services.db_busy", error=str(exc)[:200])
                break
            now = self.clock.now()
        if done_calls:
            self._calls = [b for i, b in enumerate(self._calls) if i not in done_calls]
        return self._next_in(self.clock.now())

    def _next_in(self, now: datetime) -> float:
        moments = [
            tr.steps[tr.next].at
            for d in (self._orders, self._visits)
            for tr in d.values()
            if tr.next < len(tr.steps)
        ]
        moments += [b.at for b in self._calls[:1]]
        poll = (self._polled_at or now) + timedelta(seconds=self.POLL_S)
        return max(0.0, (min([poll, *moments]) - now).total_seconds())

    # ------------------------------------------------------------------ reading

    async def _refresh(self, now: datetime) -> None:
        self._polled_at, self._poked_at = now, None
        async with self.maker() as s:
            if not self._residents:
                rows = await s.execute(
                    select(Resident.id, Home.station_id).join(Home, Home.id == Resident.home_id)
                )
                self._residents = {r.id: r.station_id for r in rows.all()}
            open_orders = (
                await s.execute(
                    select(
                        Order.id, Order.kind, Order.levels, Order.created_at, Order.booked_for,
                        Order.provider_id, Order.assignee_station_id,
                    ).where(Order.status.not_in(FINISHED))
                )
            ).all()  # fmt: skip
            open_visits = (
                await s.execute(
                    select(Visit.id, Visit.created_at, Visit.window_start, Visit.due_at, Home.lat, Home.lon)
                    .join(Resident, Resident.id == Visit.resident_id)
                    .join(Home, Home.id == Resident.home_id)
                    .where(Visit.status.in_(VISIT_OPEN))
                )
            ).all()
        alive = {r.id for r in open_orders}
        for gone in set(self._orders) - alive:
            self._orders.pop(gone)
        for r in open_orders:
            if r.id in self._orders or r.id in self._settled:
                continue
            facts = OrderFacts(
                r.id, r.kind, r.levels or {}, as_utc(r.created_at),
                as_utc(r.booked_for) if r.booked_for else None,
                bool(r.provider_id or r.assignee_station_id),
            )  # fmt: skip
            rng = random.Random(f"{self.seed}:order:{r.id}")
            self._orders[r.id] = _Tracked(plan_order(facts, rng, self.behaviour))
            self.stats.orders_planned += 1
        alive = {r.id for r in open_visits}
        for gone in set(self._visits) - alive:
            self._visits.pop(gone)
        for r in open_visits:
            if r.id in self._visits:
                continue
            vf = VisitFacts(
                r.id,
                as_utc(r.created_at),
                as_utc(r.window_start),
                as_utc(r.due_at),
                r.lat,
                r.lon,
                self.missed_after_h,
            )
            self._visits[r.id] = _Tracked(
                plan_visit(vf, random.Random(f"{self.seed}:visit:{r.id}"), self.behaviour)
            )
            self.stats.visits_planned += 1

    def _plan_calls(self, now: datetime) -> None:
        """The phone bookings of today and tomorrow (local), from when the run began."""
        if not self.bookings or not self._residents:
            return
        if self._since is None:
            self._since = now
        today = now.astimezone(self.tz).date()
        for day in (today, today + timedelta(days=1)):
            if day in self._booked_days:
                continue
            self._booked_days.add(day)
            planned = plan_bookings(day, sorted(self._residents), self.tz, self.seed, self.behaviour)
            self._calls += [b for b in planned if b.at >= self._since]
        self._calls.sort(key=lambda b: b.at)

    # ------------------------------------------------------------------ acting

    async def _order_step(self, order_id: int, login_for: LoginFor, now: datetime) -> None:
        """The order's next step; a busy database raises and the step is tried again."""
        tr = self._orders[order_id]
        await self._order_act(order_id, tr.steps[tr.next], login_for, now)
        tr.next += 1
        if tr.next >= len(tr.steps):
            self._orders.pop(order_id, None)
            self._settled.add(order_id)

    async def _order_act(self, order_id: int, st: Step, login_for: LoginFor, now: datetime) -> None:
        async with self.maker() as s:
            order = await s.get(Order, order_id)
            if order is None or order.status in FINISHED:
                return
            body: dict[str, Any] = dict(st.body)
            action = st.action
            if action == "assign_holder":
                if order.status != OrderStatus.created.value:
                    return  # routing (or someone) placed it meanwhile
                body = await self._holder(s, order)
            elif action == "assign_staff":
                if order.assignee_station_id is None or order.staff_id is not None:
                    return  # a provider holds it: its own people go
                if order.status not in (OrderStatus.created.value, OrderStatus.assigned.value):
                    return
                staff = await self._visitor(s, order.assignee_station_id, order_id)
                if staff is None:
                    return
                body = {"staff_id": staff}
            # the operator of the station holding it records what the provider or staff report
            station = order.assignee_station_id or order.station_id
        login = await login_for(station)
        if login is None:
            return
        verb = OrderAction.assign if action.startswith("assign") else OrderAction(action)
        try:
            async with self.maker() as s, s.begin():
                await orders.act(
                    s, order_id=order_id, action=verb, body=body, actor=f"user:{login.username}",
                    scope=login.scope, now=now,
                )  # fmt: skip
        except orders.OrderError as exc:
            self.stats.conflicts += 1
            log.debug("sim_services.order_conflict", order_id=order_id, action=action, error=str(exc))
            return
        self.stats.actions[f"order_{action}"] += 1

    async def _holder(self, s: AsyncSession, order: Order) -> dict[str, Any]:
        """Whom an operator gives an order routing could not place: the home's station when
        the catalogue lets stations offer the kind, else the nearest provider offering it."""
        entry = self.catalogue.kinds.get(order.kind)
        if entry is not None and entry.offered_by.station_offers(order.station_id):
            return {"station_id": order.station_id}
        home = await s.get(Home, order.home_id)
        rows = (
            await s.execute(select(Provider).where(Provider.active.is_(True)).order_by(Provider.id))
        ).scalars()
        offering = [p for p in rows if order.kind in p.kinds]
        if not offering or home is None:
            return {"station_id": order.station_id}
        best = min(offering, key=lambda p: (great_circle_km(home.lat, home.lon, p.lat, p.lon), p.id))
        return {"provider_id": best.id}

    async def _visitor(self, s: AsyncSession, station_id: str, salt: int) -> str | None:
        rows = list(
            await s.scalars(
                select(Staff.id)
                .where(Staff.station_id == station_id, Staff.role.in_(VISITOR_ROLES))
                .order_by(Staff.on_duty.desc(), Staff.id)
            )
        )
        return rows[salt % len(rows)] if rows else None

    async def _visit_step(self, visit_id: int, login_for: LoginFor, now: datetime) -> None:
        """The visit's next step; a busy database raises and the step is tried again."""
        tr = self._visits[visit_id]
        await self._visit_act(visit_id, tr.steps[tr.next], login_for, now)
        tr.next += 1

    async def _visit_act(self, visit_id: int, st: Step, login_for: LoginFor, now: datetime) -> None:
        async with self.maker() as s:
            station = await s.scalar(select(Visit.station_id).where(Visit.id == visit_id))
        login = await login_for(station)
        if login is None:
            return
        actor = f"{login.display_name} ({login.username})"  # as the visits API names its actor
        body = st.body
        try:
            async with self.maker() as s, s.begin():
                if st.action == "checkin":
                    await visits.check_in(
                        s, visit_id=visit_id, actor=actor, now=now, lat=body.get("lat"), lon=body.get("lon")
                    )
                elif st.action == "cancel":
                    await visits.cancel(
                        s, visit_id=visit_id, actor=actor, now=now, reason=str(body["reason"])
                    )
                else:
                    form = visits.VisitForm(**{**body, "seen": Seen(body["seen"])})
                    await visits.complete(
                        s,
                        visit_id=visit_id,
                        actor=actor,
                        now=now,
                        form=form,
                        catalogue=self.catalogue,
                        order_actor=actor,
                    )
        except visits.VisitError as exc:
            self.stats.conflicts += 1
            log.debug("sim_services.visit_conflict", visit_id=visit_id, action=st.action, error=str(exc))
            return
        self.stats.actions[f"visit_{st.action}"] += 1

    async def _book(self, b: Booking, login_for: LoginFor, now: datetime) -> None:
        """An operator takes a resident's (or their family's) phone call and books an order."""
        from dispatcher.orders.schemas import BookingIn

        login = await login_for(self._residents.get(b.resident_id))
        if login is None:
            return
        booking = BookingIn(
            resident_id=b.resident_id,
            kind=b.kind,
            booked_for=b.booked_for.astimezone(UTC) if b.booked_for else None,
            notes=b.notes,
        )
        try:
            async with self.maker() as s, s.begin():
                await orders.create_order(
                    s, catalogue=self.catalogue, booking=booking, source="operator",
                    actor=f"user:{login.username}", scope=login.scope, client_ref=None, now=now,
                )  # fmt: skip
        except orders.OrderError as exc:
            self.stats.conflicts += 1
            log.debug("sim_services.booking_refused", error=str(exc))
            return
        self.stats.bookings += 1
        self.stats.actions["order_booked"] += 1
        self._polled_at = None  # plan the new order at the next step
