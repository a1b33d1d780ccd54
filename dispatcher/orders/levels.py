"""Service-level breaches: which orders missed which level at a given moment. Pure.

The levels are the snapshot frozen onto each order (dispatcher.orders.catalogue
.ServiceLevels.snapshot). A breach is reported once per (order, level): the caller passes
the levels already recorded. Breaches page the provider's manager, never the emergency
ladder. Two steps per missed level: the provider's manager at once, then — when the
order is still not back within that level a configured delay after it fell due — the
station that holds it (:func:`station_steps`, :func:`breach_targets`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from dispatcher.notifications.area import StationPeople, managers_of, station_duty
from dispatcher.orders.lifecycle import OrderStatus

__all__ = ["Breach", "BreachStep", "OrderClock", "breach_targets", "breaches", "deadlines", "station_steps"]

S = OrderStatus
_ACCEPT_PENDING = frozenset({S.created, S.assigned})
_START_PENDING = frozenset({S.created, S.assigned, S.accepted})


@dataclass(frozen=True)
class OrderClock:
    """The moments of one order that its service levels are measured against."""

    id: int
    status: str
    created_at: datetime
    levels: Mapping[str, int]
    booked_for: datetime | None = None
    started_at: datetime | None = None
    recorded: frozenset[str] = field(default_factory=frozenset)  # levels already breached
    escalated: frozenset[str] = field(default_factory=frozenset)  # breached levels paged to the station


@dataclass(frozen=True)
class Breach:
    order_id: int
    level: str  # accept, start or done
    due_at: datetime


def deadlines(o: OrderClock) -> dict[str, datetime]:
    """When each level falls due for ``o`` in its current status (absent: not pending)."""
    status = OrderStatus(o.status)
    out: dict[str, datetime] = {}
    if status in _ACCEPT_PENDING:
        out["accept"] = o.created_at + timedelta(seconds=o.levels["accept_within_s"])
    if status in _START_PENDING:
        if o.booked_for is not None:
            out["start"] = o.booked_for + timedelta(seconds=o.levels.get("start_grace_s", 0))
        else:
            out["start"] = o.created_at + timedelta(seconds=o.levels["start_by_s"])
    if status is S.started and o.started_at is not None:
        out["done"] = o.started_at + timedelta(seconds=o.levels["done_within_s"])
    return out


def breaches(orders: Iterable[OrderClock], at: datetime) -> list[Breach]:
    """The levels past due at ``at`` and not yet recorded, in (due, order, level) order."""
    found = [
        Breach(o.id, level, due)
        for o in orders
        for level, due in deadlines(o).items()
        if due <= at and level not in o.recorded
    ]
    return sorted(found, key=lambda b: (b.due_at, b.order_id, b.level))


class BreachStep(StrEnum):
    manager = "manager"  # the provider's manager (a station's own order: its managers)
    station = "station"  # the station that holds the order


def station_steps(orders: Iterable[OrderClock], at: datetime, after_s: int) -> list[Breach]:
    """The breached levels whose second page is due at ``at``: still pending (the order
    is not back within the level: not accepted, started or done meanwhile, nor closed)
    ``after_s`` seconds after the level fell due, and not paged to the station before."""
    found = [
        Breach(o.id, level, due)
        for o in orders
        for level, due in deadlines(o).items()
        if level in o.recorded and level not in o.escalated and due + timedelta(seconds=after_s) <= at
    ]
    return sorted(found, key=lambda b: (b.due_at, b.order_id, b.level))


def breach_targets(step: BreachStep, *, manager_phone: str, holder: StationPeople) -> tuple[str, ...]:
    """Who one step pages. ``manager_phone``: the provider's manager ("" for a station's
    own order or a provider without one); ``holder``: the people of the station that
    holds the order. Never a call's ladder: only these people and that station."""
    if step is BreachStep.manager:
        return (f"phone:{manager_phone}",) if manager_phone else managers_of(holder)
    return station_duty(holder)
