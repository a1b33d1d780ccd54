"""Service-order figures recomputed from the audit log (pure: no I/O).

Every step of an order is one audit row (``order_created``, ``order_assign``, …
``order_cancel``; ``detail.order_id``), so what a regulator is told about service orders
can be recomputed by hand from those rows, the same way as the call figures
(dispatcher/oversight/figures.py). Definitions (docs/oversight.md says the same):

* An order belongs to the local month (Asia/Shanghai) of its ``order_created`` row; its
  **kind** is that row's ``detail.service_kind`` and its **station** the row's station
  (the home's station, whose scope sees the order).
* Its **provider** is whoever held it when it was accepted (else the last assignee): the
  ``provider_id`` of the last ``order_assign`` row naming a provider or a station before
  the first ``order_accept``; a station taking it is ``station:<id>``; never assigned is
  ``(none)``.
* **accept** = created → first ``order_accept``, graded against the order's
  ``accept_within_s``; **completion** = first ``order_start`` (check-in) → first
  ``order_done``, graded against ``done_within_s`` (the same levels as
  dispatcher/orders/levels.py). Met when within the level; missed when over it, or when
  the order waited past it without the step (until it was cancelled, or until now); not
  applicable otherwise (cancelled or still running inside the level). Share within
  level = met ÷ (met + missed). Percentiles are nearest-rank.
* **satisfaction** is the ``order_confirm`` row's ``satisfaction`` (1–5) or ``not_done``;
  the mean is over the orders that gave a score.
* **cancelled** orders have an ``order_cancel`` row; its ``reason`` (trimmed) is counted.

The service levels are the snapshot frozen onto each order when it was booked (the
``orders.levels`` column, never edited afterwards): the caller passes them by order id.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from dispatcher.oversight.figures import nearest_rank, target_state

__all__ = [
    "ORDER_GROUPINGS",
    "OrderAuditRow",
    "OrderFigures",
    "OrderGrouping",
    "cancellations",
    "group_orders",
    "order_figures",
    "orders_from_rows",
    "orders_summary",
]

OrderGrouping = Literal["kind", "provider", "station"]
ORDER_GROUPINGS: tuple[OrderGrouping, ...] = ("kind", "provider", "station")
NONE_KEY = "(none)"
SCORES = (1, 2, 3, 4, 5)


@dataclass(frozen=True, slots=True)
class OrderAuditRow:
    """The part of an ``order_*`` audit row the figures read."""

    at: datetime
    kind: str
    station_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def order_id(self) -> int | None:
        value = self.detail.get("order_id")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class OrderFigures:
    """One order's figures (seconds; None: the step never happened)."""

    order_id: int
    kind: str
    station_id: str
    provider: str
    month: str
    accept_s: float | None
    accept_met: bool | None
    completion_s: float | None
    completion_met: bool | None
    done: bool
    cancelled: bool
    cancel_reason: str | None
    satisfaction: int | None
    not_done: bool


def _first(rows: Sequence[OrderAuditRow], kind: str) -> OrderAuditRow | None:
    return next((r for r in rows if r.kind == kind), None)


def _secs(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds()


def _provider(rows: Sequence[OrderAuditRow], accepted_at: datetime | None) -> str:
    holder = NONE_KEY
    for r in rows:
        if r.kind != "order_assign" or (accepted_at is not None and r.at > accepted_at):
            continue
        if r.detail.get("provider_id"):
            holder = str(r.detail["provider_id"])
        elif r.detail.get("assignee_station_id"):
            holder = f"station:{r.detail['assignee_station_id']}"
    return holder


def _level(levels: Mapping[str, Any], key: str) -> float:
    value = levels.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"service level {key!r} missing or not a positive number: {value!r}")
    return float(value)


def order_figures(
    order_id: int,
    rows: Iterable[OrderAuditRow],
    levels: Mapping[str, Any],
    *,
    now: datetime,
    tz: ZoneInfo,
) -> OrderFigures | None:
    """One order's figures from its audit rows (any order); None without ``order_created``."""
    ordered = sorted(rows, key=lambda r: r.at)
    created = _first(ordered, "order_created")
    if created is None:
        return None
    accept, start, done = (_first(ordered, f"order_{k}") for k in ("accept", "start", "done"))
    cancel = _first(ordered, "order_cancel")
    confirm = _first(ordered, "order_confirm")
    stop = cancel.at if cancel is not None else now
    accept_s = _secs(created.at, accept.at if accept else None)
    completion_s = _secs(start.at if start else None, done.at if done else None)
    accept_wait = None if accept is not None else _secs(created.at, stop)
    done_wait = None if done is not None or start is None else _secs(start.at, stop)
    score = confirm.detail.get("satisfaction") if confirm is not None else None
    local = created.at.astimezone(tz)
    return OrderFigures(
        order_id=order_id,
        kind=str(created.detail.get("service_kind") or NONE_KEY),
        station_id=created.station_id or NONE_KEY,
        provider=_provider(ordered, accept.at if accept else None),
        month=f"{local.year:04d}-{local.month:02d}",
        accept_s=accept_s,
        accept_met=target_state(accept_s, _level(levels, "accept_within_s"), accept_wait),
        completion_s=completion_s,
        completion_met=target_state(completion_s, _level(levels, "done_within_s"), done_wait),
        done=done is not None,
        cancelled=cancel is not None,
        cancel_reason=None
        if cancel is None
        else (str(cancel.detail.get("reason") or "").strip() or NONE_KEY),
        satisfaction=score if isinstance(score, int) and not isinstance(score, bool) else None,
        not_done=confirm is not None and confirm.detail.get("not_done") is True,
    )


def orders_from_rows(
    rows: Iterable[OrderAuditRow],
    levels: Mapping[int, Mapping[str, Any]],
    *,
    month: str | None,
    now: datetime,
    tz: ZoneInfo,
) -> list[OrderFigures]:
    """Every order among ``rows`` (any ``order_*`` rows, any order) whose levels are known,
    booked in ``month`` (``YYYY-MM``; None: every month), by order id."""
    by_order: dict[int, list[OrderAuditRow]] = defaultdict(list)
    for r in rows:
        oid = r.order_id
        if oid is not None and r.kind.startswith("order_"):
            by_order[oid].append(r)
    out: list[OrderFigures] = []
    for oid in sorted(by_order):
        if oid not in levels:
            continue
        fig = order_figures(oid, by_order[oid], levels[oid], now=now, tz=tz)
        if fig is not None and (month is None or fig.month == month):
            out.append(fig)
    return out


def _share(states: Iterable[bool | None]) -> tuple[int, int]:
    graded = [s for s in states if s is not None]
    return sum(graded), len(graded)


def _pct(met: int, eligible: int) -> float | None:
    return round(100.0 * met / eligible, 2) if eligible else None


def _timing(prefix: str, values: list[float], states: list[bool | None]) -> dict[str, Any]:
    ordered = sorted(values)
    met, eligible = _share(states)
    return {
        f"{prefix}_n": len(ordered),
        f"{prefix}_median_s": nearest_rank(ordered, 50),
        f"{prefix}_p90_s": nearest_rank(ordered, 90),
        f"{prefix}_within_level_met": met,
        f"{prefix}_within_level_eligible": eligible,
        f"{prefix}_within_level_pct": _pct(met, eligible),
    }


def orders_summary(figs: Sequence[OrderFigures]) -> dict[str, Any]:
    """The figures of a set of orders as one flat row."""
    scores = [f.satisfaction for f in figs if f.satisfaction is not None]
    counts = Counter(scores)
    return {
        "orders": len(figs),
        "done": sum(f.done for f in figs),
        "cancelled": sum(f.cancelled for f in figs),
        "open": sum(not f.done and not f.cancelled for f in figs),
        **_timing(
            "accept", [f.accept_s for f in figs if f.accept_s is not None], [f.accept_met for f in figs]
        ),
        **_timing(
            "completion",
            [f.completion_s for f in figs if f.completion_s is not None],
            [f.completion_met for f in figs],
        ),
        "satisfaction_n": len(scores),
        "satisfaction_mean": round(sum(scores) / len(scores), 2) if scores else None,
        **{f"satisfaction_{s}": counts.get(s, 0) for s in SCORES},
        "not_done": sum(f.not_done for f in figs),
    }


def group_orders(figs: Sequence[OrderFigures], by: OrderGrouping) -> list[dict[str, Any]]:
    """One row per kind, provider or station (sorted by key), each ``orders_summary``."""
    if by not in ORDER_GROUPINGS:
        raise ValueError(f"group orders by one of {', '.join(ORDER_GROUPINGS)}, not {by!r}")
    groups: dict[str, list[OrderFigures]] = defaultdict(list)
    for f in figs:
        key = f.kind if by == "kind" else f.provider if by == "provider" else f.station_id
        groups[key].append(f)
    return [{"group": by, "key": k, **orders_summary(groups[k])} for k in sorted(groups)]


def cancellations(figs: Sequence[OrderFigures]) -> list[dict[str, Any]]:
    """Cancelled orders by reason, most frequent first (then by reason)."""
    counts = Counter(f.cancel_reason for f in figs if f.cancelled and f.cancel_reason is not None)
    return [{"reason": r, "orders": n} for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
