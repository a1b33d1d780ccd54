"""Which station answers a call, and why.

The network is the county → street → community tree of the seeds ("one centre per
street, one station per community", "centre leads stations"), so the choice walks up
that tree: the home's own community station, a staffed neighbour under the same street
centre, the street centre, the county centre. A station only counts as help nearby when
it has a responder on duty and lies inside the service circle (15 minutes in town,
30 in the countryside).

Like Resgrid's dispatch recommendation, every pick carries reason codes, and "why
nobody could be found" is a reason code too: a supervisor reading a call months later
must see why it went where it went, and the 15-minute circle becomes something the
record can measure.

:func:`choose_station` is pure: the shell asks a travel engine (dispatcher/calls/travel.py)
for the minutes from the call's origin to the candidate stations first, then hands them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "REASONS",
    "AreaKind",
    "RouteDecision",
    "RoutingConfig",
    "StationNode",
    "TierName",
    "choose_station",
    "county_of",
    "escalation_target",
    "parse_area",
    "parse_tier",
    "station_node",
    "street_of",
    "travel_minutes",
]

AreaKind = Literal["urban", "rural"]
TierName = Literal["county", "street", "community"]

REASONS: dict[str, str] = {
    "OWN_STATION_STAFFED_IN_RANGE": "Own station: a responder on duty, within the limit.",
    "OWN_STATION_UNSTAFFED": "The home's own station has no responder on duty.",
    "OWN_STATION_OUT_OF_RANGE": "The home's own station is further than the limit from the home.",
    "OWN_STATION_EXCLUDED": "The home's own station was skipped (it already had the call).",
    "OWN_STATION_UNKNOWN": "The home's station is not in the registry; the county decides.",
    "TRAVEL_TIME_UNKNOWN": "No travel time was found for the station; treated as out of range.",
    "LOCATION_FROM_DEVICE": "The resident is where a worn device reported, not at home.",
    "NEAREST_STAFFED_IN_STREET": (
        "Nearest station under the same street centre with a responder on duty within the limit."
    ),
    "NEAREST_STAFFED_TO_DEVICE": (
        "Nearest station with a responder on duty within the limit of where the device reported."
    ),
    "NO_STAFFED_STATION_IN_RANGE": ("No community station with a responder on duty lies within the limit."),
    "STREET_CENTRE_FALLBACK": "The street centre takes the call (it backs up its stations).",
    "STREET_CENTRE_UNSTAFFED": ("The street centre has no responder on duty; the county takes the call."),
    "STREET_CENTRE_EXCLUDED": "The street centre was skipped (it already had the call).",
    "STREET_CENTRE_UNKNOWN": "No street centre above the station was found in the registry.",
    "COUNTY_FALLBACK": "The county centre takes the call, as the last resort that oversees all.",
    "COUNTY_NO_RESPONDERS_ON_DUTY": (
        "The county centre has no responder on duty; its operators hand off (120/110/119)."
    ),
    "BEYOND_LIMIT": "The chosen station is further than the limit: the service circle is not met.",
    "NO_STATION_AVAILABLE": ("No station could take the call: every candidate was excluded or missing."),
}


class RoutingConfig(BaseModel):
    """Station-choice settings (config/dispatch.yaml, key ``routing``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The 15-minute service circle of the seeds; the countryside gets twice as long.
    urban_limit_min: float = Field(default=15.0, gt=0)
    rural_limit_min: float = Field(default=30.0, gt=0)
    # Roads are not straight: a common detour factor between crow-flies and road km.
    road_factor: float = Field(default=1.3, ge=1.0)
    # Door-to-door speeds including parking and stairs, not top speeds.
    urban_speed_kmh: float = Field(default=20.0, gt=0)
    rural_speed_kmh: float = Field(default=40.0, gt=0)
    engine: Literal["haversine", "osrm"] = "haversine"
    osrm_url: str | None = None
    osrm_timeout_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _osrm_needs_url(self) -> RoutingConfig:
        if self.engine == "osrm" and not self.osrm_url:
            raise ValueError("engine 'osrm' needs osrm_url")
        return self

    def limit_min(self, area: str) -> float:
        return self.rural_limit_min if area == "rural" else self.urban_limit_min


@dataclass(frozen=True, slots=True)
class StationNode:
    """A station as routing sees it: place in the tree, position, and who is on duty."""

    id: str
    name: str
    tier: TierName
    parent_id: str | None
    lat: float
    lon: float
    area: AreaKind
    on_duty_responders: int


def parse_area(value: str) -> AreaKind:
    """Narrow a stored area string; anything else is a registry error, not a guess."""
    if value == "urban":
        return "urban"
    if value == "rural":
        return "rural"
    raise ValueError(f"unknown area {value!r} (urban or rural)")


def parse_tier(value: str) -> TierName:
    if value == "county":
        return "county"
    if value == "street":
        return "street"
    if value == "community":
        return "community"
    raise ValueError(f"unknown tier {value!r} (county, street or community)")


def station_node(
    *,
    id: str,
    name: str,
    tier: str,
    parent_id: str | None,
    lat: float,
    lon: float,
    area: str,
    on_duty_responders: int,
) -> StationNode:
    """A StationNode from the plain strings the database holds (the shell's usual source)."""
    return StationNode(id, name, parse_tier(tier), parent_id, lat, lon, parse_area(area), on_duty_responders)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where the call goes (None: nowhere) and the reasons, in the order they were found."""

    station_id: str | None
    tier: str | None
    travel_min: float | None
    reasons: tuple[str, ...]


def travel_minutes(cfg: RoutingConfig, km: float, area: str) -> float:
    """Road estimate from a straight line, for when no road engine is configured or up."""
    speed = cfg.rural_speed_kmh if area == "rural" else cfg.urban_speed_kmh
    return km * cfg.road_factor / speed * 60.0


# --------------------------------------------------------------------------- tree walks


def _ancestor_of_tier(stations: Mapping[str, StationNode], station_id: str, tier: str) -> StationNode | None:
    """The station itself or its nearest ancestor of ``tier``; cycles end the walk."""
    seen: set[str] = set()
    node = stations.get(station_id)
    while node is not None and node.id not in seen:
        if node.tier == tier:
            return node
        seen.add(node.id)
        node = stations.get(node.parent_id) if node.parent_id is not None else None
    return None


def street_of(stations: Mapping[str, StationNode], station_id: str) -> StationNode | None:
    return _ancestor_of_tier(stations, station_id, "street")


def county_of(stations: Mapping[str, StationNode], station_id: str) -> StationNode | None:
    return _ancestor_of_tier(stations, station_id, "county")


def escalation_target(
    stations: Mapping[str, StationNode],
    current_station_id: str,
    level: Literal["street", "county"],
) -> str | None:
    """The street centre or county centre above a station (the station itself when it
    already is one), or None when the tree has no such level above it.

    Returning the station itself lets the shell see "already there" and record the
    escalation as reached instead of inventing a higher target.
    """
    node = _ancestor_of_tier(stations, current_station_id, level)
    return node.id if node is not None else None


# --------------------------------------------------------------------------- the choice


def _staffed(node: StationNode) -> bool:
    return node.on_duty_responders > 0


def _nearest(
    candidates: Sequence[StationNode], travel_min: Mapping[str, float], limit: float
) -> StationNode | None:
    """Nearest staffed candidate within the limit; station id breaks ties for replays."""
    in_range = [n for n in candidates if _staffed(n) and n.id in travel_min and travel_min[n.id] <= limit]
    if not in_range:
        return None
    return min(in_range, key=lambda n: (travel_min[n.id], n.id))


def _decision(
    node: StationNode,
    travel_min: Mapping[str, float],
    limit: float,
    reasons: list[str],
) -> RouteDecision:
    minutes = travel_min.get(node.id)
    if minutes is None or minutes > limit:
        reasons.append("BEYOND_LIMIT")
    return RouteDecision(node.id, node.tier, minutes, tuple(reasons))


def choose_station(
    *,
    home_station_id: str,
    origin: tuple[float, float],
    origin_from_device: bool,
    area: AreaKind,
    stations: Mapping[str, StationNode],
    travel_min: Mapping[str, float],
    cfg: RoutingConfig,
    exclude: frozenset[str] = frozenset(),
) -> RouteDecision:
    """Pick the station for a call.

    From the home: own community station if staffed and in range → nearest staffed
    community station under the same street centre in range → the street centre (if it
    has a responder on duty) → the county centre. From a device's reported location
    (a watch outside the home), the home's station means nothing; the nearest staffed
    community station in range anywhere is asked first, then its street centre, then the
    county.

    ``travel_min`` holds minutes from ``origin`` per station id; a station missing from
    it counts as out of range, never as near. Fallback centres are chosen even when far
    (a far answer beats none) and then carry BEYOND_LIMIT, so the record shows the circle
    was not met. ``exclude`` holds stations that already had the call (escalation).
    ``origin`` is kept in the signature so a replay of the decision has every input.
    """
    del origin  # distances arrive precomputed in travel_min
    limit = cfg.limit_min(area)
    reasons: list[str] = []
    own = stations.get(home_station_id)
    communities = sorted(
        (n for n in stations.values() if n.tier == "community" and n.id not in exclude),
        key=lambda n: n.id,
    )

    if origin_from_device:
        reasons.append("LOCATION_FROM_DEVICE")
        pick = _nearest(communities, travel_min, limit)
        if pick is not None:
            reasons.append("NEAREST_STAFFED_TO_DEVICE")
            return _decision(pick, travel_min, limit, reasons)
        reasons.append("NO_STAFFED_STATION_IN_RANGE")
        # The street that covers the place the resident is, not the one they live in.
        known = [n for n in stations.values() if n.tier == "community" and n.id in travel_min]
        anchor = min(known, key=lambda n: (travel_min[n.id], n.id)) if known else own
        return _fallback(anchor, stations, travel_min, limit, exclude, reasons)

    if own is None:
        reasons.append("OWN_STATION_UNKNOWN")
        return _fallback(None, stations, travel_min, limit, exclude, reasons)

    if own.id in exclude:
        reasons.append("OWN_STATION_EXCLUDED")
    elif not _staffed(own):
        reasons.append("OWN_STATION_UNSTAFFED")
    elif own.id not in travel_min:
        reasons.extend(("OWN_STATION_OUT_OF_RANGE", "TRAVEL_TIME_UNKNOWN"))
    elif travel_min[own.id] > limit:
        reasons.append("OWN_STATION_OUT_OF_RANGE")
    else:
        reasons.append("OWN_STATION_STAFFED_IN_RANGE")
        return _decision(own, travel_min, limit, reasons)

    street = street_of(stations, own.id)
    if street is not None:
        siblings = [
            n
            for n in communities
            if n.id != own.id and (s := street_of(stations, n.id)) is not None and s.id == street.id
        ]
        pick = _nearest(siblings, travel_min, limit)
        if pick is not None:
            reasons.append("NEAREST_STAFFED_IN_STREET")
            return _decision(pick, travel_min, limit, reasons)
    reasons.append("NO_STAFFED_STATION_IN_RANGE")
    return _fallback(own, stations, travel_min, limit, exclude, reasons)


def _fallback(
    anchor: StationNode | None,
    stations: Mapping[str, StationNode],
    travel_min: Mapping[str, float],
    limit: float,
    exclude: frozenset[str],
    reasons: list[str],
) -> RouteDecision:
    """Street centre above ``anchor``, then the county centre, then nobody."""
    street = street_of(stations, anchor.id) if anchor is not None else None
    if street is None:
        reasons.append("STREET_CENTRE_UNKNOWN")
    elif street.id in exclude:
        reasons.append("STREET_CENTRE_EXCLUDED")
    elif not _staffed(street):
        reasons.append("STREET_CENTRE_UNSTAFFED")
    else:
        reasons.append("STREET_CENTRE_FALLBACK")
        return _decision(street, travel_min, limit, reasons)

    county = county_of(stations, anchor.id) if anchor is not None else None
    if county is None:
        # The anchor is outside the tree; any root will do, the lowest id for replays.
        roots = sorted((n for n in stations.values() if n.tier == "county"), key=lambda n: n.id)
        county = roots[0] if roots else None
    if county is not None and county.id not in exclude:
        # The county is the last resort: it takes the call even with nobody to send,
        # because its operators can still phone 120 / 110 / 119 and the family.
        reasons.append("COUNTY_FALLBACK")
        if not _staffed(county):
            reasons.append("COUNTY_NO_RESPONDERS_ON_DUTY")
        return _decision(county, travel_min, limit, reasons)
    reasons.append("NO_STATION_AVAILABLE")
    return RouteDecision(None, None, None, tuple(reasons))
