"""Service orders in the database: booking (routed), steps, reads, and the providers'
records. Keyword-only functions with an explicit session and ``now``; the decisions are
the pure modules (routing, lifecycle, levels); every step is an audit row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.logs import mask_phone
from dispatcher.audit import service as audit
from dispatcher.audit.models import AuditRow
from dispatcher.orders.catalogue import Catalogue
from dispatcher.orders.hours import ALWAYS, OpeningHours, parse_hours
from dispatcher.orders.levels import Breach, BreachStep, OrderClock, breach_targets, breaches, station_steps
from dispatcher.orders.lifecycle import (
    BUSY_STATUSES,
    OPEN_STATUSES,
    OrderAction,
    OrderStatus,
    TransitionError,
    audit_kind,
    transition,
)
from dispatcher.orders.models import Order, Provider
from dispatcher.orders.routing import Candidate, RouteRequest, route
from dispatcher.orders.schemas import BookingIn, ProviderIn
from dispatcher.registry.models import Home, Resident, Staff, Station, Tier
from dispatcher.registry.people import station_people

__all__ = [
    "BreachPage",
    "OrderError",
    "act",
    "create_order",
    "delete_provider",
    "list_orders",
    "load_order",
    "order_audit",
    "record_breaches",
    "replay",
    "save_provider",
    "visible_orders",
]

Listing = Literal["open", "closed", "all"]
ROUTER = "system:routing"


class OrderError(Exception):
    """A refused request: ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def visible_orders(scope: frozenset[str] | None) -> ColumnElement[bool]:
    """The orders ``scope`` sees: of homes in it, or handed to a station in it."""
    if scope is None:
        return true()
    stations = sorted(scope)
    return or_(Order.station_id.in_(stations), Order.assignee_station_id.in_(stations))


async def _busy(session: AsyncSession, column: Any) -> dict[str, int]:
    rows = await session.execute(
        select(column, func.count())
        .where(Order.status.in_([s.value for s in BUSY_STATUSES]), column.is_not(None))
        .group_by(column)
    )
    return {str(k): int(n) for k, n in rows.all()}


def _hours(text: str) -> OpeningHours:
    """A provider's hours; a row written around the API with unreadable hours counts as
    closed (passed over as CLOSED) rather than failing every booking."""
    try:
        return parse_hours(text)
    except ValueError:
        return OpeningHours(())


async def candidates(session: AsyncSession, *, catalogue: Catalogue) -> list[Candidate]:
    """Every provider and station as routing sees them, with their open orders counted."""
    by_provider = await _busy(session, Order.provider_id)
    by_station = await _busy(session, Order.assignee_station_id)
    out: list[Candidate] = []
    for p in (await session.scalars(select(Provider))).all():
        kinds = frozenset(
            k for k in p.kinds if k in catalogue.kinds and catalogue.kinds[k].offered_by.provider_offers(p.id)
        )
        out.append(
            Candidate(
                id=p.id,
                type="provider",
                lat=p.lat,
                lon=p.lon,
                kinds=kinds,
                hours=_hours(p.hours),
                capacity=p.capacity,
                open_orders=by_provider.get(p.id, 0),
                radius_km=p.radius_km,
                stations=frozenset(p.stations),
                active=p.active,
            )
        )
    for st in (await session.scalars(select(Station))).all():
        kinds = frozenset(
            k
            for k, e in catalogue.kinds.items()
            if st.id in e.offered_by.stations
            or ("*" in e.offered_by.stations and st.tier == Tier.community.value)
        )
        if kinds:
            out.append(
                Candidate(
                    id=st.id,
                    type="station",
                    lat=st.lat,
                    lon=st.lon,
                    kinds=kinds,
                    hours=ALWAYS,
                    capacity=catalogue.station_capacity,
                    open_orders=by_station.get(st.id, 0),
                    radius_km=catalogue.station_radius_km,
                    stations=frozenset({st.id}),
                )
            )
    return out


async def _append(
    session: AsyncSession, order: Order, kind: str, actor: str, now: datetime, **detail: Any
) -> None:
    await audit.append(
        session,
        kind=kind,
        at=now,
        actor=actor,
        station_id=order.station_id,
        detail={"order_id": order.id, "service_kind": order.kind, **detail},
    )


async def replay(
    session: AsyncSession, client_ref: str, booking: BookingIn, scope: frozenset[str] | None
) -> Order:
    """The order an earlier request with the same key made; a different booking under a
    reused key is refused rather than silently answered with the wrong order."""
    found = await session.scalar(select(Order).where(Order.client_ref == client_ref))
    if found is None:
        raise OrderError(409, "idempotency key in use by a request still running; retry")
    visible = scope is None or found.station_id in scope or found.assignee_station_id in scope
    # another caller's key says nothing about their order
    if not visible or (found.resident_id, found.kind) != (booking.resident_id, booking.kind):
        raise OrderError(409, "this idempotency key was used for another booking", "KEY_REUSED")
    return found


async def create_order(
    session: AsyncSession,
    *,
    catalogue: Catalogue,
    booking: BookingIn,
    source: str,
    actor: str,
    scope: frozenset[str] | None,
    client_ref: str | None,
    now: datetime,
    device: tuple[str, str] | None = None,
    visit_id: int | None = None,
) -> tuple[Order, bool]:
    """Book, route and (when someone can take it) assign an order; returns it and whether
    it is new (False: the same idempotency key booked it before). ``visit_id``: the
    welfare visit whose form opened it (``source`` "visit")."""
    if client_ref is not None and await session.scalar(
        select(Order.id).where(Order.client_ref == client_ref)
    ):
        return await replay(session, client_ref, booking, scope), False
    row = (
        await session.execute(
            select(Resident, Home)
            .join(Home, Resident.home_id == Home.id)
            .where(Resident.id == booking.resident_id)
        )
    ).first()
    if row is None or (scope is not None and row[1].station_id not in scope):
        raise OrderError(404, f"no such resident {booking.resident_id!r}")
    resident, home = row
    entry = catalogue.entry(booking.kind)
    order = Order(
        kind=booking.kind,
        status=OrderStatus.created.value,
        resident_id=resident.id,
        home_id=home.id,
        station_id=home.station_id,
        source=source,
        client_ref=client_ref,
        device_id=device[0] if device else None,
        event_id=device[1] if device else None,
        visit_id=visit_id,
        booked_for=booking.booked_for,
        request_notes=booking.notes,
        levels=entry.levels.snapshot(),
        price_cny=entry.price_cny,
        subsidised=entry.subsidised,
        created_at=now,
        created_by=actor,
    )
    session.add(order)
    await session.flush()
    origin = {"visit_id": visit_id} if visit_id is not None else {}
    await _append(session, order, audit_kind("created"), actor, now, source=source, **origin)
    req = RouteRequest(
        kind=booking.kind,
        lat=home.lat,
        lon=home.lon,
        station_id=home.station_id,
        at=booking.booked_for or now,
        timezone=catalogue.timezone,
    )
    decision = route(req, await candidates(session, catalogue=catalogue))
    order.route_reasons = [*decision.reasons, *(list(p) for p in decision.passed_over)]
    if decision.chosen is not None:
        key = "provider_id" if decision.chosen.type == "provider" else "station_id"
        await _apply(
            session,
            order,
            OrderAction.assign,
            {key: decision.chosen.id},
            actor=ROUTER,
            now=now,
            extra={"reasons": list(decision.reasons), "distance_km": round(decision.distance_km or 0.0, 3)},
        )
    return order, True


async def _check_assignee(
    session: AsyncSession, order: Order, body: Mapping[str, Any], scope: frozenset[str] | None
) -> None:
    """An assignee named by hand must exist and be able to take the order (a typo must not
    park an order nowhere); staff outside the caller's stations are unknown to them."""
    if body.get("provider_id"):
        provider = await session.get(Provider, body["provider_id"])
        if provider is None:
            raise OrderError(422, f"unknown provider {body['provider_id']!r}")
        if not provider.active or order.kind not in provider.kinds:
            raise OrderError(422, f"provider {provider.id!r} does not offer {order.kind}", "KIND_NOT_OFFERED")
    if body.get("station_id") and await session.get(Station, body["station_id"]) is None:
        raise OrderError(422, f"unknown station {body['station_id']!r}")
    if body.get("staff_id"):
        staff = await session.get(Staff, body["staff_id"])
        if staff is None or (scope is not None and staff.station_id not in scope):
            raise OrderError(422, f"unknown staff {body['staff_id']!r}")


async def _apply(
    session: AsyncSession,
    order: Order,
    action: OrderAction,
    body: Mapping[str, Any],
    *,
    actor: str,
    now: datetime,
    extra: Mapping[str, Any] | None = None,
) -> None:
    try:
        step = transition(order.status, action, body, started_at=order.started_at, now=now)
    except TransitionError as exc:
        status = 409 if exc.code == "INVALID_TRANSITION" else 422
        raise OrderError(status, str(exc), exc.code) from None
    for column, value in step.values.items():
        setattr(order, column, value)
    order.version += 1
    await _append(session, order, audit_kind(action), actor, now, **step.detail, **(extra or {}))


async def load_order(
    session: AsyncSession, *, order_id: int, scope: frozenset[str] | None, lock: bool = False
) -> Order:
    query = select(Order).where(Order.id == order_id, visible_orders(scope))
    if lock:
        query = query.with_for_update()
    order = await session.scalar(query)
    if order is None:
        raise OrderError(404, "no such order")
    return order


async def act(
    session: AsyncSession,
    *,
    order_id: int,
    action: OrderAction,
    body: Mapping[str, Any],
    actor: str,
    scope: frozenset[str] | None,
    now: datetime,
    own_staff_id: str | None = None,
) -> Order:
    """One step of an order. ``own_staff_id`` (a responder's phone) limits the step to
    orders assigned to that staff row."""
    order = await load_order(session, order_id=order_id, scope=None if own_staff_id else scope, lock=True)
    if own_staff_id is not None and order.staff_id != own_staff_id:
        raise OrderError(404, "no such order")
    if action is OrderAction.assign:
        await _check_assignee(session, order, body, scope)
    await _apply(session, order, action, body, actor=actor, now=now)
    return order


async def list_orders(
    session: AsyncSession,
    *,
    scope: frozenset[str] | None,
    listing: Listing,
    limit: int,
    offset: int,
    staff_id: str | None = None,
) -> list[Order]:
    query = select(Order).where(visible_orders(scope) if staff_id is None else Order.staff_id == staff_id)
    open_values = [s.value for s in OPEN_STATUSES]
    if listing == "open":
        query = query.where(Order.status.in_(open_values))
    elif listing == "closed":
        query = query.where(Order.status.not_in(open_values))
    query = query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit).offset(offset)
    return list((await session.scalars(query)).all())


async def order_audit(session: AsyncSession, order: Order) -> list[AuditRow]:
    """Every ``order_*`` audit row of ``order``, oldest first (the chain's order)."""
    query = (
        select(AuditRow)
        .where(
            AuditRow.kind.startswith("order_", autoescape=True),
            AuditRow.at >= order.created_at,
            AuditRow.detail["order_id"].as_integer() == order.id,
        )
        .order_by(AuditRow.seq)
    )
    return list((await session.scalars(query)).all())


@dataclass(frozen=True)
class BreachPage:
    """One step of one missed level: whom it pages (outbox targets) about which order."""

    order: Order
    level: str
    step: BreachStep
    targets: tuple[str, ...]


async def _targets(session: AsyncSession, order: Order, step: BreachStep) -> tuple[str, ...]:
    holder = order.assignee_station_id or order.station_id
    provider = await session.get(Provider, order.provider_id) if order.provider_id else None
    people = (await station_people(session, [holder]))[holder]
    phone = provider.manager_phone if provider is not None else ""
    return breach_targets(step, manager_phone=phone, holder=people)


def _due_steps(
    rows: Iterable[Order], *, now: datetime, station_after_s: int
) -> list[tuple[Breach, BreachStep]]:
    """The breach steps due at ``now`` for these open orders: second pages first."""
    clocks = [
        OrderClock(
            o.id,
            o.status,
            o.created_at,
            o.levels,
            o.booked_for,
            o.started_at,
            frozenset(o.breached),
            frozenset(o.breach_escalated or ()),
        )
        for o in rows
    ]
    steps = [(b, BreachStep.station) for b in station_steps(clocks, now, station_after_s)]
    return steps + [(b, BreachStep.manager) for b in breaches(clocks, now)]


async def breaches_due(session: AsyncSession, *, now: datetime, station_after_s: int) -> bool:
    """Whether :func:`record_breaches` would record a step at ``now``: a plain read, no
    lock, so a round with nothing due costs no writer its turn (SQLite's one writer)."""
    rows = (
        await session.scalars(select(Order).where(Order.status.in_([s.value for s in OPEN_STATUSES])))
    ).all()
    return bool(_due_steps(rows, now=now, station_after_s=station_after_s))


async def record_breaches(session: AsyncSession, *, now: datetime, station_after_s: int) -> list[BreachPage]:
    """Record each service level newly missed at ``now`` (step ``manager``) and each
    missed level still not met ``station_after_s`` after it fell due (step ``station``):
    an ``order_breached`` audit row per step naming the step and whom it pages (numbers
    masked), the level added to ``breached`` / ``breach_escalated`` on the locked order
    row, so another dispatcher copy finds it recorded. Returns the pages to queue. Never
    touches calls or their escalation."""
    rows = (
        await session.scalars(
            select(Order)
            .where(Order.status.in_([s.value for s in OPEN_STATUSES]))
            .order_by(Order.id)
            .with_for_update()
        )
    ).all()
    by_id = {o.id: o for o in rows}
    out: list[BreachPage] = []
    for b, step in _due_steps(rows, now=now, station_after_s=station_after_s):
        order = by_id[b.order_id]
        if step is BreachStep.manager:
            order.breached = [*order.breached, b.level]
        else:
            order.breach_escalated = [*(order.breach_escalated or ()), b.level]
        targets = await _targets(session, order, step)
        await _append(
            session,
            order,
            "order_breached",
            "system:levels",
            now,
            level=b.level,
            due_at=b.due_at.isoformat(),
            provider_id=order.provider_id,
            step=step.value,
            to=[mask_phone(t) for t in targets],
        )
        out.append(BreachPage(order, b.level, step, targets))
    return out


# ------------------------------------------------------------------ providers (admins)


async def save_provider(
    session: AsyncSession, *, provider_id: str, data: ProviderIn, now: datetime, create: bool
) -> Provider:
    """Create (``create``) or replace a provider's record."""
    found = await session.get(Provider, provider_id)
    if create and found is not None:
        raise OrderError(409, f"provider {provider_id!r} exists")
    if not create and found is None:
        raise OrderError(404, "no such provider")
    unknown = [s for s in data.stations if await session.get(Station, s) is None]
    if unknown:
        raise OrderError(422, f"unknown stations: {', '.join(unknown)}")
    if found is None:
        found = Provider(id=provider_id, created_at=now)
        session.add(found)
    for key, value in data.model_dump().items():
        setattr(found, key, value)
    return found


async def delete_provider(session: AsyncSession, *, provider_id: str) -> None:
    """Remove a provider no order names; one with orders is switched off instead
    (``active: false``), so their history keeps its provider."""
    found = await session.get(Provider, provider_id)
    if found is None:
        raise OrderError(404, "no such provider")
    if await session.scalar(select(Order.id).where(Order.provider_id == provider_id).limit(1)) is not None:
        raise OrderError(409, "orders name this provider; set active to false instead", "PROVIDER_IN_USE")
    await session.delete(found)
