"""Who to send: the people who could go to a call, nearest first, each with why.

The operator's send dialog lists every responder of the stations near the call, ordered
so the right person is on top: free before busy before off duty; within a state, by the
estimated travel time from the home, counted in whole minutes (a few hundred metres do
not tell two people apart on a 3 a.m. phone call), the home's own station first among
equals, then the exact estimate.

The estimate is the routing's own straight-line one (dispatcher/calls/routing.py
``travel_minutes``: great-circle distance × road factor ÷ the area's speed), from the
responder's station to the home: staff have no position of their own. Pure: the shell
(dispatcher/console/views.py) reads the people and hands them in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from carecall.core.geo import great_circle_km
from dispatcher.calls.routing import RoutingConfig, travel_minutes

__all__ = ["REASONS", "Candidate", "HomePoint", "PersonState", "Ranked", "rank_candidates"]


class PersonState(StrEnum):
    free = "free"
    busy = "busy"
    off_duty = "off_duty"


# Reason codes, in the order the dialog shows them; the console translates each
# (``rank.reason.<code>``).
REASONS: dict[str, str] = {
    "ON_THIS_CALL": "Already sent to this call.",
    "ON_ANOTHER_CALL": "Out on another call.",
    "MARKED_BUSY": "On duty but marked busy (not to be paged).",
    "OFF_DUTY": "Not on duty: listed last, cannot be sent.",
    "FREE": "On duty and free.",
    "OWN_STATION": "Works at the home's own station: first among equals.",
    "NEAREST": "The nearest free person.",
    "WITHIN_LIMIT": "Can be there within the area's time limit.",
    "BEYOND_LIMIT": "Further than the area's time limit.",
}

_STATE_ORDER = {PersonState.free: 0, PersonState.busy: 1, PersonState.off_duty: 2}


@dataclass(frozen=True, slots=True)
class HomePoint:
    """Where help must go, the kind of area it is in, and the home's own station."""

    lat: float
    lon: float
    area: str
    station_id: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A person who could go, where they start from (their station) and what they are doing."""

    staff_id: str
    name: str
    role: str
    phone: str
    station_id: str
    station_name: str
    lat: float
    lon: float
    on_duty: bool
    marked_busy: bool
    # the call of their active assignment, None when they have none
    call_id: int | None


@dataclass(frozen=True, slots=True)
class Ranked:
    staff_id: str
    name: str
    role: str
    phone: str
    station_id: str
    station_name: str
    distance_m: int
    eta_s: int
    state: PersonState
    reasons: tuple[str, ...]
    call_id: int | None


def _state(c: Candidate) -> tuple[PersonState, str]:
    if c.call_id is not None:
        return PersonState.busy, "ON_ANOTHER_CALL"
    if not c.on_duty:
        return PersonState.off_duty, "OFF_DUTY"
    if c.marked_busy:
        return PersonState.busy, "MARKED_BUSY"
    return PersonState.free, "FREE"


def rank_candidates(
    home: HomePoint, people: Sequence[Candidate], cfg: RoutingConfig, *, call_id: int
) -> list[Ranked]:
    """Everyone in ``people``, in the order the send dialog lists them (module docstring).

    Raises ValueError for a point off the globe or an unknown area (bad registry data
    must not rank silently wrong)."""
    if home.area not in ("urban", "rural"):
        raise ValueError(f"unknown area {home.area!r}: urban or rural")
    for lat, lon in ((home.lat, home.lon), *((p.lat, p.lon) for p in people)):
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError(f"not a position: {lat}, {lon}")
    limit_s = cfg.limit_min(home.area) * 60.0
    rows: list[tuple[tuple[int, int, bool, float, str, str], Ranked]] = []
    for p in people:
        km = great_circle_km(p.lat, p.lon, home.lat, home.lon)
        eta = travel_minutes(cfg, km, home.area) * 60.0
        state, why = _state(p)
        reasons = ["ON_THIS_CALL" if p.call_id == call_id else why]
        if p.station_id == home.station_id:
            reasons.append("OWN_STATION")
        if state is not PersonState.off_duty:
            reasons.append("WITHIN_LIMIT" if eta <= limit_s else "BEYOND_LIMIT")
        own = p.station_id == home.station_id
        key = (_STATE_ORDER[state], math.ceil(eta / 60.0 - 1e-9), not own, eta, p.station_id, p.staff_id)
        ranked = Ranked(
            staff_id=p.staff_id,
            name=p.name,
            role=p.role,
            phone=p.phone,
            station_id=p.station_id,
            station_name=p.station_name,
            distance_m=round(km * 1000),
            eta_s=round(eta),
            state=state,
            reasons=tuple(reasons),
            call_id=p.call_id,
        )
        rows.append((key, ranked))
    rows.sort(key=lambda r: r[0])
    out = [r for _, r in rows]
    if out and out[0].state is PersonState.free:
        top = out[0]
        out[0] = replace(top, reasons=(*top.reasons, "NEAREST"))
    return out
