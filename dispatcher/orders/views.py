"""Service orders and providers over HTTP.

- ``/api/v1/orders``: bookings (operators, admins, other systems with such a login),
  lists and one order (scoped like calls: outside the caller's stations is a 404), and
  the steps ``POST /api/v1/orders/{id}/{action}``. Supervisors read only.
- ``/api/v1/m/orders``: the responder's phone: the orders assigned to their own staff
  row, and accept / start (check-in) / done (check-out).
- ``/api/v1/providers``: the providers' records; admins write.
- ``/api/v1/services``: the catalogue (kinds, prices, levels).
- ``/api/v1/orders/residents?q=``: who an operator on the phone may book for (name and
  address only, in scope), so the console's form never loads whole resident records.
- ``/api/v1/orders/{id}/timeline``: every ``order_*`` audit row of one order (scoped like
  the order; the read is logged as a read of the resident's record).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock, SystemClock
from dispatcher.auth.models import Role
from dispatcher.auth.principals import Principal, current_principal
from dispatcher.auth.privacy import record_reads
from dispatcher.auth.tokens import TokenSigner
from dispatcher.orders import service
from dispatcher.orders.catalogue import Catalogue
from dispatcher.orders.catalogue_file import load_catalogue
from dispatcher.orders.console_queries import OrderListed, ResidentHit, find_residents, resident_names
from dispatcher.orders.lifecycle import OrderAction
from dispatcher.orders.models import Provider
from dispatcher.orders.schemas import (
    ActionIn,
    BookingIn,
    OrderOut,
    ProviderCreate,
    ProviderIn,
    ProviderOut,
    TimelineEntry,
)
from dispatcher.orders.timeline import shown_detail
from dispatcher.registry.models import Home, Resident

__all__ = ["PhoneOrderOut", "orders_router"]

WRITERS = frozenset({Role.operator, Role.admin})
PHONE_ACTIONS = frozenset({OrderAction.accept, OrderAction.start, OrderAction.done})
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=100)]


class PhoneOrderOut(OrderOut):
    """An order on the responder's phone: where to go and whom to see, beside the order."""

    resident_name: str
    address: str
    lat: float
    lon: float


async def _for_phone(session: AsyncSession, orders: list[OrderOut]) -> list[PhoneOrderOut]:
    homes = {o.home_id for o in orders}
    residents = {o.resident_id for o in orders}
    places = {h.id: h for h in (await session.scalars(select(Home).where(Home.id.in_(sorted(homes))))).all()}
    found = await session.execute(
        select(Resident.id, Resident.name).where(Resident.id.in_(sorted(residents)))
    )
    names = {rid: name for rid, name in found.all()}
    return [
        PhoneOrderOut(
            **o.model_dump(),
            resident_name=names.get(o.resident_id, ""),
            address=places[o.home_id].address if o.home_id in places else "",
            lat=places[o.home_id].lat if o.home_id in places else 0.0,
            lon=places[o.home_id].lon if o.home_id in places else 0.0,
        )
        for o in orders
    ]


def _http(exc: service.OrderError) -> HTTPException:
    return HTTPException(exc.status, {"message": str(exc), "code": exc.code} if exc.code else str(exc))


def _action_of(action: str, allowed: frozenset[OrderAction] | None = None) -> OrderAction:
    try:
        act = OrderAction(action)
    except ValueError:
        act = None
    if act is None or (allowed is not None and act not in allowed):
        names = ", ".join(sorted(allowed if allowed is not None else OrderAction))
        raise HTTPException(404, f"unknown action {action!r}; one of {names}")
    return act


def _writer(who: Principal) -> None:
    if who.role not in WRITERS:
        raise HTTPException(403, "only operators and admins book and move orders")


async def _step(
    maker: async_sessionmaker[AsyncSession],
    clock: Clock,
    who: Principal,
    order_id: int,
    act: OrderAction,
    body: ActionIn | None,
    own: str | None,
) -> OrderOut:
    try:
        async with maker() as s, s.begin():
            order = await service.act(
                s,
                order_id=order_id,
                action=act,
                body=body.model_dump(exclude_none=True) if body else {},
                actor=f"user:{who.username}",
                scope=who.scope,
                now=clock.now(),
                own_staff_id=own,
            )
            return OrderOut.model_validate(order)
    except service.OrderError as exc:
        raise _http(exc) from None


def orders_router(
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    *,
    clock: Clock | None = None,
    catalogue: Catalogue | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["orders"])
    who_dep = Depends(current_principal(maker, signer))
    the_clock = clock or SystemClock()
    cat = catalogue or load_catalogue()

    @router.get("/services", response_model=Catalogue)
    async def services(who: Principal = who_dep) -> Catalogue:
        return cat

    @router.post("/orders", response_model=OrderOut, status_code=201)
    async def book(
        booking: BookingIn, response: Response, key: IdempotencyKey = None, who: Principal = who_dep
    ) -> OrderOut:
        _writer(who)
        client_ref = key or booking.client_ref
        source = "api" if key or booking.client_ref else "operator"
        try:
            async with maker() as s, s.begin():
                order, new = await service.create_order(
                    s,
                    catalogue=cat,
                    booking=booking,
                    source=source,
                    actor=f"user:{who.username}",
                    scope=who.scope,
                    client_ref=client_ref,
                    now=the_clock.now(),
                )
                out = OrderOut.model_validate(order)
        except service.OrderError as exc:
            raise _http(exc) from None
        except IntegrityError:
            # the same key booked at the same moment by a second request: answer its order
            async with maker() as s:
                try:
                    out = OrderOut.model_validate(
                        await service.replay(s, client_ref or "", booking, who.scope)
                    )
                except service.OrderError as exc:
                    raise _http(exc) from None
            new = False
        if not new:
            response.status_code = 200
        return out

    @router.get("/orders", response_model=list[OrderListed])
    async def list_orders(
        status: Literal["open", "closed", "all"] = "open",
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
        who: Principal = who_dep,
    ) -> list[OrderListed]:
        async with maker() as s, s.begin():
            rows = await service.list_orders(s, scope=who.scope, listing=status, limit=limit, offset=offset)
            names = await resident_names(s, {o.resident_id for o in rows})
            # the list names residents and their addresses: each read is logged
            await record_reads(
                s, who=who, resident_ids=list(names), route="GET /api/v1/orders", now=the_clock.now()
            )
            out = []
            for o in rows:
                name, address = names.get(o.resident_id, ("", ""))
                out.append(
                    OrderListed(
                        **OrderOut.model_validate(o).model_dump(), resident_name=name, address=address
                    )
                )
            return out

    @router.get("/orders/residents", response_model=list[ResidentHit])
    async def search_residents(
        q: Annotated[str, Query(min_length=1, max_length=100)],
        limit: Annotated[int, Query(ge=1, le=50)] = 20,
        who: Principal = who_dep,
    ) -> list[ResidentHit]:
        _writer(who)
        async with maker() as s, s.begin():
            hits = await find_residents(s, q, who.scope, limit)
            await record_reads(
                s,
                who=who,
                resident_ids=[h.id for h in hits],
                route="GET /api/v1/orders/residents",
                now=the_clock.now(),
            )
            return hits

    @router.get("/orders/{order_id}", response_model=OrderOut)
    async def one(order_id: int, who: Principal = who_dep) -> OrderOut:
        async with maker() as s:
            try:
                return OrderOut.model_validate(
                    await service.load_order(s, order_id=order_id, scope=who.scope)
                )
            except service.OrderError as exc:
                raise _http(exc) from None

    @router.get("/orders/{order_id}/timeline", response_model=list[TimelineEntry])
    async def timeline(order_id: int, who: Principal = who_dep) -> list[TimelineEntry]:
        async with maker() as s, s.begin():
            try:
                order = await service.load_order(s, order_id=order_id, scope=who.scope)
            except service.OrderError as exc:
                raise _http(exc) from None
            rows = await service.order_audit(s, order)
            # the steps name the resident's order, its notes and who came: a record read
            await record_reads(
                s,
                who=who,
                resident_ids=[order.resident_id],
                route="GET /api/v1/orders/{order_id}/timeline",
                now=the_clock.now(),
            )
            return [
                TimelineEntry(seq=r.seq, kind=r.kind, at=r.at, actor=r.actor, detail=shown_detail(r.detail))
                for r in rows
            ]

    @router.post("/orders/{order_id}/{action}", response_model=OrderOut)
    async def order_action(
        order_id: int, action: str, body: Annotated[ActionIn | None, Body()] = None, who: Principal = who_dep
    ) -> OrderOut:
        _writer(who)
        return await _step(maker, the_clock, who, order_id, _action_of(action), body, None)

    _phone(router, maker, who_dep, the_clock)
    _providers(router, maker, who_dep, the_clock)
    return router


def _phone(router: APIRouter, maker: async_sessionmaker[AsyncSession], dep: Any, clock: Clock) -> None:
    """The responder's phone: their own orders and the three steps they take."""

    @router.get("/m/orders", response_model=list[PhoneOrderOut])
    async def my_orders(
        status: Literal["open", "closed", "all"] = "open", who: Principal = dep
    ) -> list[PhoneOrderOut]:
        if who.role is not Role.responder or who.staff_id is None:
            raise HTTPException(403, "the phone's orders are a responder's own")
        async with maker() as s, s.begin():
            rows = await service.list_orders(
                s, scope=None, listing=status, limit=200, offset=0, staff_id=who.staff_id
            )
            out = await _for_phone(s, [OrderOut.model_validate(o) for o in rows])
            # the list names residents and their addresses: each read is logged
            await record_reads(
                s,
                who=who,
                resident_ids=[o.resident_id for o in out],
                route="GET /api/v1/m/orders",
                now=clock.now(),
            )
            return out

    @router.post("/m/orders/{order_id}/{action}", response_model=OrderOut)
    async def my_order_action(
        order_id: int, action: str, body: Annotated[ActionIn | None, Body()] = None, who: Principal = dep
    ) -> OrderOut:
        if who.role is not Role.responder or who.staff_id is None:
            raise HTTPException(403, "the phone's orders are a responder's own")
        return await _step(maker, clock, who, order_id, _action_of(action, PHONE_ACTIONS), body, who.staff_id)


def _admin(who: Principal) -> None:
    if who.role is not Role.admin:
        raise HTTPException(403, "only admins change providers")


def _providers(router: APIRouter, maker: async_sessionmaker[AsyncSession], dep: Any, clock: Clock) -> None:

    @router.get("/providers", response_model=list[ProviderOut])
    async def list_providers(who: Principal = dep) -> list[ProviderOut]:
        async with maker() as s:
            rows = (await s.scalars(select(Provider).order_by(Provider.id))).all()
            return [ProviderOut.model_validate(p) for p in rows]

    @router.get("/providers/{provider_id}", response_model=ProviderOut)
    async def get_provider(provider_id: str, who: Principal = dep) -> ProviderOut:
        async with maker() as s:
            found = await s.get(Provider, provider_id)
            if found is None:
                raise HTTPException(404, "no such provider")
            return ProviderOut.model_validate(found)

    async def save(provider_id: str, data: ProviderIn, who: Principal, *, create: bool) -> ProviderOut:
        _admin(who)
        try:
            async with maker() as s, s.begin():
                p = await service.save_provider(
                    s, provider_id=provider_id, data=data, now=clock.now(), create=create
                )
                await s.flush()
                return ProviderOut.model_validate(p)
        except service.OrderError as exc:
            raise _http(exc) from None

    @router.post("/providers", response_model=ProviderOut, status_code=201)
    async def create_provider(data: ProviderCreate, who: Principal = dep) -> ProviderOut:
        return await save(data.id, ProviderIn(**data.model_dump(exclude={"id"})), who, create=True)

    @router.put("/providers/{provider_id}", response_model=ProviderOut)
    async def replace_provider(provider_id: str, data: ProviderIn, who: Principal = dep) -> ProviderOut:
        return await save(provider_id, data, who, create=False)

    @router.delete("/providers/{provider_id}", status_code=204)
    async def delete_provider(provider_id: str, who: Principal = dep) -> Response:
        _admin(who)
        try:
            async with maker() as s, s.begin():
                await service.delete_provider(s, provider_id=provider_id)
        except service.OrderError as exc:
            raise _http(exc) from None
        return Response(status_code=204)
