"""When many devices go offline together, one incident for the area, not a call per home.

A graceful broker restart publishes every connected device's will at once; a power cut
or a cell outage silences a street. Each of those ``offline`` events alone would open a
trouble call for its home, and an operator would face hundreds of cards for one cause.
These pure functions decide, for one offline event, whether it belongs to a mass
offline, for which area, and whether an incident already open covers it. The shell
(dispatcher.incidents.service) loads the recent offline events, the station tree, the broker
outages the gateways observed and the open incidents, and applies the decision.

The area is a station subtree of the county → street → community tree: the smallest
one that holds the cluster. A broker outage the platform itself observed explains every
will in its window, whichever home it came from: it covers the whole tree (the county
above the device), as one incident labelled "broker restart".

Nothing here reads a clock or a database.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from dispatcher.calls.dispatch_config import MassOfflineConfig

__all__ = [
    "CAUSES",
    "Cause",
    "Decision",
    "Join",
    "MassOfflineConfig",
    "Open",
    "OpenIncident",
    "Outage",
    "Sighting",
    "StationRef",
    "ancestors",
    "attributed_outage",
    "classify",
    "cluster_area",
    "in_subtree",
    "window_count",
]

Cause = Literal["broker_restart", "mass_offline"]
CAUSES: dict[str, str] = {
    "broker_restart": "broker restart",
    "mass_offline": "mass offline (power cut, network or cell outage, cause unknown)",
}


@dataclass(frozen=True, slots=True)
class StationRef:
    """A station's place in the tree."""

    id: str
    parent_id: str | None
    tier: str


@dataclass(frozen=True, slots=True)
class Sighting:
    """One offline event: which device, whose home, under which station, when received."""

    device_id: str
    home_id: str
    station_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Outage:
    """A gateway's broker connection lost at ``lost_at`` and back at ``back_at`` (None:
    not back yet)."""

    id: int
    gateway: str
    lost_at: datetime
    back_at: datetime | None


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """An incident call still open: its area, cause and latest offline event."""

    call_id: int
    area_station_id: str
    cause: str
    outage_id: int | None
    last_offline_at: datetime


@dataclass(frozen=True, slots=True)
class Join:
    """The event belongs to this open incident."""

    call_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Open:
    """Open an incident for this area; fold the per-home offline calls (and incidents of
    smaller areas) whose offline events were received from ``fold_from`` to ``fold_to``."""

    area_station_id: str
    cause: Cause
    outage_id: int | None
    devices: int
    fold_from: datetime
    fold_to: datetime


Decision = Join | Open | None


def ancestors(stations: Mapping[str, StationRef], station_id: str) -> list[str]:
    """The station and the stations above it, nearest first; a cycle or an unknown parent
    ends the walk (a broken registry must not hang intake)."""
    out: list[str] = []
    node = stations.get(station_id)
    while node is not None and node.id not in out:
        out.append(node.id)
        node = stations.get(node.parent_id) if node.parent_id is not None else None
    return out


def in_subtree(stations: Mapping[str, StationRef], station_id: str, area_id: str) -> bool:
    return area_id in ancestors(stations, station_id)


def window_count(times: Sequence[datetime], at: datetime, window_s: float) -> int:
    """The most sightings in any window of ``window_s`` seconds that contains ``at``.

    ``times`` must be sorted; one entry per device (the caller keeps the one nearest the
    event). A window [s, s + w] holding ``at`` starts between at - w and at; the best
    one starts at a sighting, at at - w or at ``at``, so only those starts are tried,
    with one pointer sweeping the window ends (linear: a storm is thousands of
    sightings)."""
    w = timedelta(seconds=window_s)
    lo = bisect_left(times, at - w)
    hi = bisect_right(times, at)
    far = bisect_right(times, at + w)
    if lo == far:
        return 0
    if times[far - 1] - times[lo] <= w:
        return far - lo  # everything near fits in one window (a burst): no sweep needed
    best = max(hi - lo, far - bisect_left(times, at))  # [at - w, at] and [at, at + w]
    j = hi  # first index past the current window's end
    for i in range(lo, hi):
        end = times[i] + w
        while j < len(times) and times[j] <= end:
            j += 1
        best = max(best, j - i)
    return best


def _per_device(sightings: Iterable[Sighting], at: datetime) -> list[Sighting]:
    """One sighting per device, the one nearest ``at`` (a device that dropped twice in
    the window is one device gone, not two)."""
    best: dict[str, Sighting] = {}
    for s in sightings:
        cur = best.get(s.device_id)
        if cur is None or abs((s.at - at).total_seconds()) < abs((cur.at - at).total_seconds()):
            best[s.device_id] = s
    return list(best.values())


def cluster_area(
    event: Sighting,
    recent: Sequence[Sighting],
    stations: Mapping[str, StationRef],
    cfg: MassOfflineConfig,
) -> tuple[str, int] | None:
    """The smallest station subtree around the event's station that holds a cluster of
    at least ``min_devices`` offline devices within the window, and its count; None when
    there is no such cluster.

    From the event's own station up: the first subtree with enough devices qualifies;
    then the area climbs while it holds less than ``area_share`` of the cluster of the
    whole tree above it (a community's 25 of a street's 200 is the street's outage;
    two streets dark at once are the county's). The event itself counts even if ``recent`` does not hold it."""
    chain = ancestors(stations, event.station_id)
    if not chain:
        return None
    devices = _per_device([*recent, event], event.at)
    # each station's chain once: a storm is thousands of sightings under a few stations
    chains: dict[str, frozenset[str]] = {}
    per_area: dict[str, list[datetime]] = {a: [] for a in chain}
    for x in devices:
        up = chains.get(x.station_id)
        if up is None:
            up = chains[x.station_id] = frozenset(ancestors(stations, x.station_id))
        for area in chain:
            if area in up:
                per_area[area].append(x.at)
    counts = [window_count(sorted(per_area[a]), event.at, cfg.window_s) for a in chain]
    first = next((i for i, n in enumerate(counts) if n >= cfg.min_devices), None)
    if first is None:
        return None
    i = first
    while i + 1 < len(chain) and counts[i] < cfg.area_share * counts[-1]:
        i += 1
    return chain[i], counts[i]


def attributed_outage(
    at: datetime, outages: Iterable[Outage], margin_s: float, open_max_s: float = 3600.0
) -> Outage | None:
    """The observed broker outage whose window (lost - margin … back + margin; while not
    back, up to ``open_max_s`` after it began) holds ``at``: the one lost most recently
    before it, else the first."""
    m = timedelta(seconds=margin_s)
    cap = timedelta(seconds=open_max_s)
    hits = [
        o
        for o in outages
        if o.lost_at - m <= at and at <= (o.back_at + m if o.back_at is not None else o.lost_at + cap)
    ]
    if not hits:
        return None
    return min(hits, key=lambda o: (o.lost_at > at, abs((at - o.lost_at).total_seconds()), o.id))


def classify(
    event: Sighting,
    recent: Sequence[Sighting],
    stations: Mapping[str, StationRef],
    outages: Sequence[Outage],
    open_incidents: Sequence[OpenIncident],
    cfg: MassOfflineConfig,
) -> Decision:
    """Join an open incident, open one, or None (an ordinary per-home trouble call).

    - An open incident whose area holds the event's station takes it while its cluster
      is still going (the event within ``window_s`` of the incident's latest offline
      event), when the event's own outage is the incident's, or when the event is part
      of a mass offline anyway — unless that mass offline now covers a larger area, in
      which case the larger incident opens and absorbs the smaller one.
    - An event a broker outage explains opens (or joins) the "broker restart" incident
      of the whole tree above it, once ``outage_min_devices`` events are explained.
    - Otherwise a cluster of ``min_devices`` opens a "mass offline" incident for the
      smallest area holding it.
    """
    if not cfg.enabled:
        return None
    chain = ancestors(stations, event.station_id)
    if not chain:
        return None
    covering = sorted(
        (inc for inc in open_incidents if inc.area_station_id in chain),
        key=lambda inc: (chain.index(inc.area_station_id), inc.call_id),
        reverse=True,  # the largest area first
    )
    w = timedelta(seconds=cfg.window_s)
    if (
        covering
        and covering[0].area_station_id == chain[-1]
        and abs(event.at - covering[0].last_offline_at) <= w
    ):
        # the whole tree's incident, its cluster still going: nothing larger can open
        return Join(covering[0].call_id, "cluster")
    outage = attributed_outage(event.at, outages, cfg.outage_margin_s, cfg.outage_open_max_s)
    if outage is not None:
        root = chain[-1]
        same = [inc for inc in covering if inc.area_station_id == root]
        if same:
            return Join(same[0].call_id, "broker_outage")
        explained = [
            s
            for s in _per_device([*recent, event], event.at)
            if in_subtree(stations, s.station_id, root)
            and attributed_outage(s.at, [outage], cfg.outage_margin_s, cfg.outage_open_max_s) is not None
        ]
        if len(explained) >= cfg.outage_min_devices:
            m = timedelta(seconds=cfg.outage_margin_s)
            end = (
                outage.back_at + m
                if outage.back_at is not None
                else max(event.at, *(s.at for s in explained))
            )
            return Open(root, "broker_restart", outage.id, len(explained), outage.lost_at - m, end)
    found = cluster_area(event, recent, stations, cfg)
    if covering:
        inc = covering[0]
        above = chain[chain.index(inc.area_station_id) + 1 :]
        if found is not None and found[0] in above:
            return Open(found[0], "mass_offline", None, found[1], event.at - w, event.at + w)
        going = abs(event.at - inc.last_offline_at) <= w
        if going or found is not None or (outage is not None and outage.id == inc.outage_id):
            return Join(inc.call_id, "cluster" if found is not None or going else "broker_outage")
    if found is not None:
        return Open(found[0], "mass_offline", None, found[1], event.at - w, event.at + w)
    return None
