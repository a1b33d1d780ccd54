"""The pure parts of the simulated operators' reading of a call (carecall/shell/sim_operators.py):
the escalation times in a call's frozen policy, and which free responder to send."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CallFacts", "facts_from_policy", "pick_responders"]


@dataclass(frozen=True)
class CallFacts:
    """What the operator knows when the call rings."""

    call_id: int
    event_class: str  # emergency, urgent, trouble, …
    event_type: str  # sos, fall, offline, …
    area: str  # urban or rural: the arrival limit
    travel_limit_s: float  # the call's service circle (15 min urban / 30 rural by default)
    county_after_s: float | None  # when the call's policy hands it to the county unanswered
    street_after_s: float | None


def facts_from_policy(
    call_id: int, event_class: str, event_type: str, area: str, policy: Mapping[str, Any]
) -> CallFacts:
    """Read the escalation times the call was opened with (its frozen policy snapshot)."""
    county = street = None
    for step in policy.get("steps") or ():
        if not isinstance(step, Mapping):
            continue
        after = step.get("after_s")
        if not isinstance(after, int | float):
            continue
        if step.get("action") == "escalate_county":
            county = float(after)
        elif step.get("action") == "escalate_street":
            street = float(after)
    limit = policy.get("travel_limit_s")
    return CallFacts(
        call_id=call_id,
        event_class=event_class,
        event_type=event_type,
        area=area if area in ("urban", "rural") else "urban",
        travel_limit_s=float(limit) if isinstance(limit, int | float) else 0.0,
        county_after_s=county,
        street_after_s=street,
    )


def pick_responders(
    candidates: Sequence[tuple[str, str]], prefer: Sequence[str], scope: frozenset[str] | None
) -> list[str]:
    """One free responder: (staff id, station id) pairs, preferring the stations in
    ``prefer`` order, limited to the acting operator's scope (None: the whole county)."""
    allowed = [c for c in candidates if scope is None or c[1] in scope]
    for station in prefer:
        for staff_id, st in allowed:
            if st == station:
                return [staff_id]
    return [allowed[0][0]] if allowed else []
