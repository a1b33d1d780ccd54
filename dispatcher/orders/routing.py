"""Which provider (服务商) or station takes a service order: the nearest one that offers
the kind, serves the home's area, is open at the time and has capacity.

Pure: the service layer reads the providers, stations and open-order counts, this module
decides, and every candidate passed over gets a reason code, so an operator can see why
the order went where it went (or nowhere).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from carecall.core.geo import great_circle_km
from dispatcher.orders.hours import OpeningHours

__all__ = ["REASONS", "Candidate", "RouteDecision", "RouteRequest", "rejection", "route"]

REASONS: dict[str, str] = {
    "NEAREST_AVAILABLE": "The nearest provider or station that offers the kind, serves the home, is open and has room.",
    "NONE_AVAILABLE": "Nobody who offers the kind can take it now; an operator assigns it by hand.",
    "KIND_NOT_OFFERED": "Does not offer this kind of service.",
    "OUT_OF_AREA": "The home is outside the area it serves.",
    "CLOSED": "Closed at the time the service is needed.",
    "AT_CAPACITY": "Already has as many open orders as it can take.",
    "INACTIVE": "Switched off in the registry.",
}


@dataclass(frozen=True)
class Candidate:
    """A provider or a station, as routing sees it."""

    id: str
    type: str  # "provider" or "station"
    lat: float
    lon: float
    kinds: frozenset[str]
    hours: OpeningHours
    capacity: int
    open_orders: int
    radius_km: float | None = None  # serves homes within this distance …
    stations: frozenset[str] = field(default_factory=frozenset)  # … or of these stations
    active: bool = True


@dataclass(frozen=True)
class RouteRequest:
    kind: str
    lat: float
    lon: float
    station_id: str  # the home's own station
    at: datetime  # when the service is needed (aware)
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True)
class RouteDecision:
    chosen: Candidate | None
    distance_km: float | None
    reasons: tuple[str, ...]
    passed_over: tuple[tuple[str, str, str], ...]  # (type, id, reason code)


def _serves(c: Candidate, req: RouteRequest, distance_km: float) -> bool:
    if req.station_id in c.stations:
        return True
    return c.radius_km is not None and distance_km <= c.radius_km


def rejection(c: Candidate, req: RouteRequest, distance_km: float) -> str | None:
    """Why ``c`` cannot take ``req`` (a REASONS code), or None when it can."""
    if not c.active:
        return "INACTIVE"
    if req.kind not in c.kinds:
        return "KIND_NOT_OFFERED"
    if not _serves(c, req, distance_km):
        return "OUT_OF_AREA"
    if not c.hours.open_at(req.at.astimezone(ZoneInfo(req.timezone))):
        return "CLOSED"
    if c.open_orders >= c.capacity:
        return "AT_CAPACITY"
    return None


def route(req: RouteRequest, candidates: Iterable[Candidate]) -> RouteDecision:
    """The nearest candidate able to take ``req``; ties go to the lower (type, id), so the
    answer never depends on the order the candidates came in."""
    if req.at.tzinfo is None:
        raise ValueError("routing needs an aware time")
    best: tuple[float, str, str, Candidate] | None = None
    passed: list[tuple[str, str, str]] = []
    for c in candidates:
        d = great_circle_km(req.lat, req.lon, c.lat, c.lon)
        why = rejection(c, req, d)
        if why is not None:
            passed.append((c.type, c.id, why))
            continue
        key = (d, c.type, c.id, c)
        if best is None or key[:3] < best[:3]:
            best = key
    passed.sort()
    if best is None:
        return RouteDecision(None, None, ("NONE_AVAILABLE",), tuple(passed))
    return RouteDecision(best[3], best[0], ("NEAREST_AVAILABLE",), tuple(passed))
