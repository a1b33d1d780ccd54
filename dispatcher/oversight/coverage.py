"""Coverage: is a staffed station within the service circle of every bed?

For every home, the travel time to the nearest station (any tier) with at least one
responder on duty now, by the same straight-line road estimate routing falls back on
(``dispatcher.calls.routing.travel_minutes``), against the limit for the home's area. A
what-if adds responders at one station and shows which homes that would bring inside
the circle: the question a supervisor asks before moving staff.

Road times from OSRM are not used here on purpose: a coverage table over every home
would be thousands of requests, and an estimate the same for every home is a fair
comparison between streets. The map server only sharpens single calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from carecall.core.geo import great_circle_km
from dispatcher.calls.routing import RoutingConfig, travel_minutes

__all__ = [
    "CoverageHome",
    "CoverageStation",
    "HomeCoverage",
    "WhatIf",
    "by_street",
    "coverage",
    "coverage_rows",
    "what_if",
]


@dataclass(frozen=True, slots=True)
class CoverageHome:
    id: str
    station_id: str
    street_id: str | None
    street_name: str
    lat: float
    lon: float
    area: str
    address: str = ""


@dataclass(frozen=True, slots=True)
class CoverageStation:
    id: str
    name: str
    tier: str
    lat: float
    lon: float
    on_duty: int


@dataclass(frozen=True, slots=True)
class HomeCoverage:
    home: CoverageHome
    nearest_station_id: str | None
    minutes: float | None
    limit_min: float
    covered: bool


def coverage(
    homes: Sequence[CoverageHome],
    stations: Sequence[CoverageStation],
    routing: RoutingConfig,
    limits_min: Mapping[str, float],
) -> list[HomeCoverage]:
    """Each home's nearest staffed station and whether it lies inside the circle.

    ``limits_min`` maps area (urban, rural) to the limit in minutes. Ties go to the
    lower station id, so the same registry always gives the same table.
    """
    staffed = sorted((s for s in stations if s.on_duty > 0), key=lambda s: s.id)
    out: list[HomeCoverage] = []
    for h in homes:
        limit = limits_min.get(h.area, limits_min["urban"])
        best: tuple[float, str] | None = None
        for s in staffed:
            m = travel_minutes(routing, great_circle_km(h.lat, h.lon, s.lat, s.lon), h.area)
            if best is None or m < best[0]:
                best = (m, s.id)
        if best is None:
            out.append(HomeCoverage(h, None, None, limit, False))
        else:
            out.append(HomeCoverage(h, best[1], round(best[0], 2), limit, best[0] <= limit))
    return out


def coverage_rows(result: Sequence[HomeCoverage]) -> list[dict[str, Any]]:
    return [
        {
            "home_id": c.home.id,
            "station_id": c.home.station_id,
            "street_id": c.home.street_id,
            "area": c.home.area,
            "lat": c.home.lat,
            "lon": c.home.lon,
            "nearest_staffed_station_id": c.nearest_station_id,
            "minutes": c.minutes,
            "limit_min": c.limit_min,
            "covered": c.covered,
        }
        for c in result
    ]


def by_street(result: Sequence[HomeCoverage]) -> list[dict[str, Any]]:
    """Homes, covered and outside the circle per street, with the outside homes named."""
    groups: dict[tuple[str, str], list[HomeCoverage]] = defaultdict(list)
    for c in result:
        groups[(c.home.street_id or "(none)", c.home.street_name or "(none)")].append(c)
    rows: list[dict[str, Any]] = []
    for (sid, name), members in sorted(groups.items()):
        outside = sorted(c.home.id for c in members if not c.covered)
        rows.append(
            {
                "street_id": sid,
                "street_name": name,
                "homes": len(members),
                "covered": len(members) - len(outside),
                "outside": len(outside),
                "covered_pct": round(100.0 * (len(members) - len(outside)) / len(members), 2),
                "outside_homes": " ".join(outside),
            }
        )
    return rows


@dataclass(frozen=True, slots=True)
class WhatIf:
    station_id: str
    added: int
    newly_covered: tuple[str, ...]
    newly_uncovered: tuple[str, ...]
    nearest_changed: tuple[str, ...]
    covered_before: int
    covered_after: int


def what_if(
    homes: Sequence[CoverageHome],
    stations: Sequence[CoverageStation],
    routing: RoutingConfig,
    limits_min: Mapping[str, float],
    *,
    station_id: str,
    add: int,
) -> tuple[WhatIf, list[HomeCoverage]]:
    """Coverage with ``add`` more responders on duty at ``station_id`` (negative: fewer,
    to see what a station's staff alone holds up), compared with now."""
    if not any(s.id == station_id for s in stations):
        raise ValueError(f"unknown station {station_id!r}")
    before = coverage(homes, stations, routing, limits_min)
    changed = [replace(s, on_duty=max(0, s.on_duty + add)) if s.id == station_id else s for s in stations]
    after = coverage(homes, changed, routing, limits_min)
    pairs = list(zip(before, after, strict=True))
    return (
        WhatIf(
            station_id=station_id,
            added=add,
            newly_covered=tuple(sorted(a.home.id for b, a in pairs if a.covered and not b.covered)),
            newly_uncovered=tuple(sorted(a.home.id for b, a in pairs if b.covered and not a.covered)),
            nearest_changed=tuple(
                sorted(a.home.id for b, a in pairs if a.nearest_station_id != b.nearest_station_id)
            ),
            covered_before=sum(c.covered for c in before),
            covered_after=sum(c.covered for c in after),
        ),
        after,
    )
