"""The service order's state table: which action moves an order from which status, what
each step must carry, and the audit kind it writes. Pure: the service layer applies it.

created → assigned → accepted → started (check-in) → done (check-out, duration, notes)
→ confirmed (satisfaction 1–5, or "not done") → closed; cancel from any open status, with
a reason. Anything else is refused with a code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "OPEN_STATUSES",
    "OrderAction",
    "OrderStatus",
    "Step",
    "TransitionError",
    "audit_kind",
    "transition",
]


class OrderStatus(StrEnum):
    created = "created"
    assigned = "assigned"
    accepted = "accepted"
    started = "started"
    done = "done"
    confirmed = "confirmed"
    closed = "closed"
    cancelled = "cancelled"


class OrderAction(StrEnum):
    assign = "assign"
    accept = "accept"
    start = "start"
    done = "done"
    confirm = "confirm"
    close = "close"
    cancel = "cancel"


S = OrderStatus
A = OrderAction

# action → (statuses it may start from, status it leads to)
_TABLE: dict[OrderAction, tuple[frozenset[OrderStatus], OrderStatus]] = {
    # (re)assigning is allowed until someone accepted: a provider that does not answer
    # is replaced by hand
    A.assign: (frozenset({S.created, S.assigned}), S.assigned),
    A.accept: (frozenset({S.assigned}), S.accepted),
    A.start: (frozenset({S.accepted}), S.started),
    A.done: (frozenset({S.started}), S.done),
    A.confirm: (frozenset({S.done}), S.confirmed),
    A.close: (frozenset({S.confirmed}), S.closed),
    A.cancel: (frozenset({S.created, S.assigned, S.accepted, S.started, S.done, S.confirmed}), S.cancelled),
}
OPEN_STATUSES = frozenset({S.created, S.assigned, S.accepted, S.started})
# the statuses that hold a provider's or station's capacity
BUSY_STATUSES = frozenset({S.assigned, S.accepted, S.started})
MAX_TEXT = 2000


def audit_kind(action: OrderAction | str) -> str:
    """The audit log kind of a step: ``order_<action>`` (``order_created`` for a new order)."""
    return f"order_{action}"


class TransitionError(ValueError):
    """A refused step; ``code`` says why (the API answers 409 or 422 with it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Step:
    """What applying an action does: the new status, the column values to write and the
    audit row's detail."""

    status: OrderStatus
    values: dict[str, Any]
    detail: dict[str, Any]


def _text(body: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = body.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise TransitionError("MISSING_" + key.upper(), f"{key} is required for this step")
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise TransitionError("BAD_" + key.upper(), f"{key} must be text of at most {MAX_TEXT} characters")
    return value.strip()


def _confirm(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    satisfaction = body.get("satisfaction")
    not_done = body.get("not_done") is True
    if not_done and satisfaction is not None:
        raise TransitionError("BAD_CONFIRMATION", "give a satisfaction or not_done, not both")
    if not not_done:
        if isinstance(satisfaction, bool) or not isinstance(satisfaction, int) or not 1 <= satisfaction <= 5:
            raise TransitionError("BAD_SATISFACTION", "satisfaction must be a whole number from 1 to 5")
    note = _text(body, "note", required=False)
    values = {"satisfaction": None if not_done else satisfaction, "not_done": not_done, "confirm_note": note}
    return values, {"satisfaction": values["satisfaction"], "not_done": not_done, "note": note}


def _assign(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A provider or a station takes the order (replacing the one before), and/or a named
    staff member does it; what is not named stays as it was."""
    provider, station, staff = body.get("provider_id"), body.get("station_id"), body.get("staff_id")
    if not (provider or station or staff):
        raise TransitionError("MISSING_ASSIGNEE", "assign needs a provider_id, station_id or staff_id")
    if provider and station:
        raise TransitionError("TWO_ASSIGNEES", "assign to a provider or to a station, not both")
    values: dict[str, Any] = {}
    if provider or station:
        values = {"provider_id": provider or None, "assignee_station_id": station or None}
    if staff:
        values["staff_id"] = staff
    return values, {k: v for k, v in values.items() if v}


def _inputs(
    action: OrderAction, body: Mapping[str, Any], started_at: datetime | None, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The columns an action writes and its audit detail, from the validated body."""
    if action is A.assign:
        return _assign(body)
    if action is A.done:
        if started_at is None:
            raise TransitionError("NOT_STARTED", "no check-in time")
        duration = max(0, int((now - started_at).total_seconds()))
        notes = _text(body, "notes", required=False)
        return {"done_at": now, "duration_s": duration, "done_notes": notes}, {
            "duration_s": duration,
            "notes": notes,
        }
    if action is A.confirm:
        values, detail = _confirm(body)
        return {**values, "confirmed_at": now}, detail
    if action is A.cancel:
        reason = _text(body, "reason", required=True)
        return {"cancelled_at": now, "cancel_reason": reason}, {"reason": reason}
    column = {A.accept: "accepted_at", A.start: "started_at", A.close: "closed_at"}[action]
    return {column: now}, {}


def transition(
    status: OrderStatus | str,
    action: OrderAction | str,
    body: Mapping[str, Any],
    *,
    started_at: datetime | None,
    now: datetime,
) -> Step:
    """Apply ``action`` to an order in ``status``, or raise TransitionError."""
    try:
        act = OrderAction(action)
    except ValueError:
        raise TransitionError("UNKNOWN_ACTION", f"unknown action {action!r}") from None
    current = OrderStatus(status)
    sources, target = _TABLE[act]
    if current not in sources:
        raise TransitionError("INVALID_TRANSITION", f"cannot {act.value} an order that is {current.value}")
    values, detail = _inputs(act, body, started_at, now)
    values["status"] = target.value
    if act is A.assign:
        values["assigned_at"] = now
    return Step(target, values, {"from": current.value, "to": target.value, **detail})
