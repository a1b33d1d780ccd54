"""Who a supervisor alert about a call is addressed to. Pure: the station chain and the
supervisors of each station are read by the caller (dispatcher/calls/outbox.py).

A county platform has three layers of oversight: the county centre, its street centres,
and the stations under them. The people who must act on a call that is going wrong are
the nearest ones: the supervisors of the call's **station** and of its **street** (a
street supervisor oversees every station of the street). The **county** supervisors are
told when the street has nobody of its own — they stand in for it — and always when the
call has no station or its station hangs directly under the county. Telling the county
about every call of a well-staffed street would train it to ignore the alerts.

When nobody qualifies (no supervisor anywhere up the chain), the alert is not dropped:
it goes to the county centre's duty group (``station:<county id>``, the robot group of
that name) and the caller records the gap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Layer(StrEnum):
    station = "station"
    street = "street"
    county = "county"


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One station of the call's chain, the call's own first, the county centre last."""

    station_id: str
    tier: str  # county | street | community


@dataclass(frozen=True, slots=True)
class SupervisorPlan:
    """``usernames``: the supervisors to alert (each a ``user:<login>`` target), with the
    layers they were taken from. ``fallback_station``: when nobody qualifies, the station
    whose duty group gets the alert instead (the county centre), else None."""

    usernames: tuple[str, ...]
    layers: tuple[Layer, ...]
    fallback_station: str | None

    @property
    def unassigned(self) -> bool:
        return not self.usernames

    @property
    def targets(self) -> tuple[str, ...]:
        if self.usernames:
            return tuple(f"user:{u}" for u in self.usernames)
        return (f"station:{self.fallback_station}",) if self.fallback_station else ()


def _layer(link: ChainLink, index: int) -> Layer:
    if link.tier == "county":
        return Layer.county
    if link.tier == "street":
        return Layer.street
    return Layer.station if index == 0 else Layer.street


def plan_supervisors(
    chain: Sequence[ChainLink], supervisors: Mapping[str, Sequence[str]], county_ids: Sequence[str] = ()
) -> SupervisorPlan:
    """The supervisors of the station and its street; the county's when the street has
    none. ``chain``: the call's station up to its root (empty: no station); ``supervisors``:
    active supervisor logins per station id; ``county_ids``: the county centres, used when
    the chain reaches none."""
    by_layer: dict[Layer, list[str]] = {Layer.station: [], Layer.street: [], Layer.county: []}
    county = next((c.station_id for c in chain if c.tier == "county"), None)
    for i, link in enumerate(chain):
        by_layer[_layer(link, i)].extend(supervisors.get(link.station_id, ()))
    if county is None and county_ids:
        county = sorted(county_ids)[0]
        by_layer[Layer.county].extend(supervisors.get(county, ()))
    chosen = [Layer.station, Layer.street]
    if not by_layer[Layer.street]:
        chosen.append(Layer.county)
    names: list[str] = []
    layers: list[Layer] = []
    for layer in chosen:
        fresh = [u for u in dict.fromkeys(sorted(by_layer[layer])) if u not in names]
        if fresh:
            names.extend(fresh)
            layers.append(layer)
    if names:
        return SupervisorPlan(tuple(names), tuple(layers), None)
    root = chain[-1].station_id if chain else None
    return SupervisorPlan((), (), county or root)


# ----------------------------------------------------------- a station's own people
# Service orders' missed levels and missed welfare visits are not calls: they go to the
# people who run a station (never to the county emergency ladder). The caller reads them
# from the registry (dispatcher/registry/people.py).


@dataclass(frozen=True, slots=True)
class StationPeople:
    """Who runs one station: ``managers`` (``user:<login>`` of its active supervisors,
    ``staff:<id>`` of its staff with the manager role) and ``on_duty`` (``staff:<id>``)."""

    station_id: str
    managers: tuple[str, ...] = ()
    on_duty: tuple[str, ...] = ()


def managers_of(people: StationPeople) -> tuple[str, ...]:
    """The station's managers; nobody: its on-duty staff; nobody either: its duty group
    (``station:<id>``), so the page is never dropped."""
    return people.managers or people.on_duty or (f"station:{people.station_id}",)


def station_duty(people: StationPeople) -> tuple[str, ...]:
    """The station as a whole: its duty group and everyone on duty there."""
    return (f"station:{people.station_id}", *people.on_duty)
