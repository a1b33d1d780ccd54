"""Where the demo county's basemap puts its roads, blocks, river and names.

Laid out from the demo county's homes and stations (``plan_county``), drawn by
:mod:`dispatcher.console.basemap`. Pure: the same county and seed give the same plan.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dispatcher.registry.demo_county import DEMO_SEED, SEAT_LAT, SEAT_LON, DemoCounty
from dispatcher.registry.models import Area, StationKind

__all__ = ["Label", "LatLon", "MapPlan", "Patch", "Place", "Road", "pinyin", "plan_county"]

MARGIN_KM = 2.0  # around the outermost home or station

LatLon = tuple[float, float]

# --- pinyin -----------------------------------------------------------------------------

# Every character of the demo county's place and road names (and the extra road names
# below); a name with a character missing here keeps its Chinese form only.
_PINYIN = {
    "滨": "bin", "河": "he", "建": "jian", "设": "she", "新": "xin", "春": "chun", "友": "you",
    "兰": "lan", "红": "hong", "庙": "miao", "文": "wen", "峰": "feng", "人": "ren", "民": "min",
    "解": "jie", "放": "fang", "书": "shu", "院": "yuan", "北": "bei", "京": "jing", "兴": "xing",
    "唐": "tang", "工": "gong", "业": "ye", "泗": "si", "洲": "zhou", "州": "zhou", "西": "xi",
    "环": "huan", "东": "dong", "迎": "ying", "宾": "bin", "桐": "tong", "长": "chang",
    "中": "zhong", "心": "xin", "南": "nan", "华": "hua", "寨": "zhai", "铺": "pu", "郭": "guo",
    "滩": "tan", "前": "qian", "营": "ying", "后": "hou", "湾": "wan", "李": "li", "庄": "zhuang",
    "王": "wang", "岗": "gang", "张": "zhang", "刘": "liu", "楼": "lou", "大": "da", "杨": "yang",
    "马": "ma", "赵": "zhao", "陈": "chen", "黄": "huang", "小": "xiao", "高": "gao", "周": "zhou",
    "三": "san", "合": "he", "店": "dian", "孙": "sun", "平": "ping", "和": "he", "光": "guang",
    "明": "ming", "胜": "sheng", "利": "li", "车": "che", "站": "zhan", "育": "yu", "才": "cai",
    "花": "hua", "园": "yuan", "幸": "xing", "福": "fu", "金": "jin", "桥": "qiao", "县": "xian",
    "朝": "chao", "阳": "yang", "凤": "feng", "凰": "huang", "团": "tuan", "结": "jie",
    "锦": "jin", "永": "yong", "安": "an", "秀": "xiu", "水": "shui", "龙": "long", "山": "shan",
}  # fmt: skip
# generic endings, read as their own word: 人民路 → Renmin Lu
_SUFFIXES = (
    ("街道", "Jiedao"), ("大道", "Dadao"), ("大街", "Dajie"), ("公路", "Gonglu"), ("路", "Lu"),
    ("街", "Jie"), ("镇", "Zhen"), ("村", "Cun"), ("县", "Xian"), ("河", "He"),
)  # fmt: skip


def pinyin(name: str) -> str | None:
    """``人民路`` → ``Renmin Lu``; None when a character is not in the table."""
    for zh, py in _SUFFIXES:
        if name.endswith(zh) and len(name) > len(zh):
            stem = _syllables(name[: -len(zh)])
            return None if stem is None else f"{stem} {py}"
    return _syllables(name)


def _syllables(text: str) -> str | None:
    syllables = [_PINYIN.get(ch) for ch in text]
    if not syllables or any(s is None for s in syllables):
        return None
    return "".join(s for s in syllables if s).capitalize()


# --- the plan: what is where ------------------------------------------------------------


@dataclass(frozen=True)
class Road:
    kind: str  # highway, arterial, street, country, lane
    points: tuple[LatLon, ...]
    name: str | None = None


@dataclass(frozen=True)
class Label:
    """A road name at one spot, along the road (``angle`` in degrees, 0 = west→east on
    screen); ``step`` thins labels when zoomed out (only every step-th shows below z16)."""

    text: str
    at: LatLon
    angle: float
    kind: str
    index: int


@dataclass(frozen=True)
class Place:
    name: str
    at: LatLon
    rank: int  # 0 county seat, 1 market town, 2 village, 3 street of the seat


@dataclass(frozen=True)
class Patch:
    kind: str  # town, block, park, village, water
    ring: tuple[LatLon, ...]


@dataclass
class MapPlan:
    bbox: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat
    patches: list[Patch] = field(default_factory=list)
    roads: list[Road] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)
    river: tuple[LatLon, ...] = ()


def _km_to_deg(lat: float) -> tuple[float, float]:
    """Degrees of latitude and of longitude per km at ``lat``."""
    return 1 / 110.574, 1 / (111.320 * math.cos(math.radians(lat)))


_ROAD_IN_ADDRESS = re.compile(r"^唐河县(?P<place>.+?(?:街道|镇))(?P<road>[^\d]+?(?:大道|大街|路|街))\d")

# names for the seat's arterials beyond those the addresses use
_EXTRA_ROADS = (
    "中州路",
    "新华路",
    "胜利路",
    "光明路",
    "和平路",
    "车站路",
    "育才路",
    "花园路",
    "幸福路",
    "金桥路",
)


def _roads_by_place(county: DemoCounty) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for address in sorted({h.address for h in county.homes} | {s.address for s in county.stations}):
        m = _ROAD_IN_ADDRESS.match(address)
        if m and m["road"] not in out.setdefault(m["place"], []):
            out[m["place"]].append(m["road"])
    return out


def _place_name(station_name: str) -> str:
    for end in ("综合养老服务中心",):
        if station_name.endswith(end):
            return station_name[: -len(end)]
    return station_name


def _grid(
    rng: random.Random,
    plan: MapPlan,
    centre: LatLon,
    half_km: tuple[float, float, float, float],  # west, south, east, north
    main_km: float,
    minor: int,
    names: Sequence[str],
    extra: Sequence[str] = (),
) -> None:
    """A street grid around ``centre``: named arterials every ``main_km`` (``names`` in a
    drawn order first, then ``extra``), ``minor`` unnamed streets between them, blocks (a
    few parks) in between."""
    lat0, lon0 = centre
    dlat, dlon = _km_to_deg(lat0)
    west, south, east, north = half_km
    step = main_km / (minor + 1)
    xs = [i * step for i in range(-math.floor(west / step), math.floor(east / step) + 1)]
    ys = [i * step for i in range(-math.floor(south / step), math.floor(north / step) + 1)]
    x_lo, x_hi, y_lo, y_hi = xs[0], xs[-1], ys[0], ys[-1]
    plan.patches.append(
        Patch(
            "town",
            tuple(
                (lat0 + y * dlat, lon0 + x * dlon)
                for x, y in ((x_lo, y_lo), (x_hi, y_lo), (x_hi, y_hi), (x_lo, y_hi))
            ),
        )
    )
    for xa, xb in itertools.pairwise(xs):
        for ya, yb in itertools.pairwise(ys):
            kind = "park" if rng.random() < 0.05 else "block"
            pad = step * 0.12
            plan.patches.append(
                Patch(
                    kind,
                    tuple(
                        (lat0 + y * dlat, lon0 + x * dlon)
                        for x, y in (
                            (xa + pad, ya + pad),
                            (xb - pad, ya + pad),
                            (xb - pad, yb - pad),
                            (xa + pad, yb - pad),
                        )
                    ),
                )
            )
    pool = list(names)
    rng.shuffle(pool)
    pool += [n for n in extra if n not in pool]
    main_x = [x for x in xs if round(x / step) % (minor + 1) == 0]
    main_y = [y for y in ys if round(y / step) % (minor + 1) == 0]
    named = iter(pool)
    for y in ys:
        is_main = y in main_y
        name = next(named, None) if is_main else None
        pts = ((lat0 + y * dlat, lon0 + x_lo * dlon), (lat0 + y * dlat, lon0 + x_hi * dlon))
        plan.roads.append(Road("arterial" if is_main else "street", pts, name))
        if name:
            for i, (xa, xb) in enumerate(itertools.pairwise(main_x)):
                plan.labels.append(
                    Label(name, (lat0 + y * dlat, lon0 + (xa + xb) / 2 * dlon), 0.0, "arterial", i)
                )
    for x in xs:
        is_main = x in main_x
        name = next(named, None) if is_main else None
        pts = ((lat0 + y_lo * dlat, lon0 + x * dlon), (lat0 + y_hi * dlat, lon0 + x * dlon))
        plan.roads.append(Road("arterial" if is_main else "street", pts, name))
        if name:
            for i, (ya, yb) in enumerate(itertools.pairwise(main_y)):
                plan.labels.append(
                    Label(name, (lat0 + (ya + yb) / 2 * dlat, lon0 + x * dlon), 90.0, "arterial", i)
                )


def _extent_km(centre: LatLon, points: Iterable[LatLon], margin: float) -> tuple[float, float, float, float]:
    dlat, dlon = _km_to_deg(centre[0])
    pts = list(points) or [centre]
    west = max(0.0, max((centre[1] - lon) / dlon for _, lon in pts)) + margin
    east = max(0.0, max((lon - centre[1]) / dlon for _, lon in pts)) + margin
    south = max(0.0, max((centre[0] - lat) / dlat for lat, _ in pts)) + margin
    north = max(0.0, max((lat - centre[0]) / dlat for lat, _ in pts)) + margin
    return west, south, east, north


def _inside(ring: Sequence[LatLon], p: LatLon) -> bool:
    lats = [a for a, _ in ring]
    lons = [b for _, b in ring]
    return min(lats) <= p[0] <= max(lats) and min(lons) <= p[1] <= max(lons)


def _road_with_label(
    plan: MapPlan, kind: str, pts: Sequence[LatLon], name: str | None, every_km: float
) -> None:
    plan.roads.append(Road(kind, tuple(pts), name))
    if not name:
        return
    index = 0
    for a, b in itertools.pairwise(pts):
        dlat, dlon = _km_to_deg(a[0])
        km = math.hypot((b[0] - a[0]) / dlat, (b[1] - a[1]) / dlon)
        n = int(km // every_km)
        for k in range(n):
            f = (k + 0.5) / n
            at = (a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f)
            # screen angle: y grows southwards
            angle = math.degrees(math.atan2((b[0] - a[0]) / dlat, (b[1] - a[1]) / dlon))
            plan.labels.append(Label(name, at, angle, kind, index))
            index += 1


def _river(
    rng: random.Random, bbox: tuple[float, float, float, float], avoid: Sequence[LatLon]
) -> tuple[LatLon, ...]:
    """A river crossing the county north to south, bending away from homes and stations."""
    _, min_lat, _, max_lat = bbox
    dlat, dlon = _km_to_deg((min_lat + max_lat) / 2)
    lon = SEAT_LON + 1.2 * dlon
    pts: list[LatLon] = []
    lat = max_lat
    while lat >= min_lat - 0.5 * dlat:
        near = [p for p in avoid if abs(p[0] - lat) < 0.7 * dlat]
        choices = [lon + k * 0.1 * dlon for k in range(-4, 5)]

        def clearance(c: float, near: list[LatLon] = near) -> float:
            return min((abs(p[1] - c) / dlon for p in near), default=9.0)

        best = max(choices, key=lambda c: (min(clearance(c), 1.2), -abs(c - lon)))
        lon = best + rng.uniform(-0.03, 0.03) * dlon
        pts.append((lat, lon))
        lat -= 0.4 * dlat
    return tuple(pts)


def plan_county(county: DemoCounty, seed: int = DEMO_SEED) -> MapPlan:
    """Where the roads, blocks, river and names go, from the county's homes and stations."""
    rng = random.Random(seed)
    points = [(h.lat, h.lon) for h in county.homes] + [(s.lat, s.lon) for s in county.stations]
    dlat, dlon = _km_to_deg(SEAT_LAT)
    bbox = (
        min(p[1] for p in points) - MARGIN_KM * dlon,
        min(p[0] for p in points) - MARGIN_KM * dlat,
        max(p[1] for p in points) + MARGIN_KM * dlon,
        max(p[0] for p in points) + MARGIN_KM * dlat,
    )
    plan = MapPlan(bbox=bbox)
    plan.river = _river(rng, bbox, points)
    roads = _roads_by_place(county)
    by_id = {s.id: s for s in county.stations}
    station_of_home = {h.id: h.station_id for h in county.homes}
    # which street centre each station belongs to
    centre_of: dict[str, str] = {}
    for s in county.stations:
        if s.kind is StationKind.street_centre:
            centre_of[s.id] = s.id
        elif s.parent_id and s.parent_id in by_id and by_id[s.parent_id].kind is StationKind.street_centre:
            centre_of[s.id] = s.parent_id
    centres = [s for s in county.stations if s.kind is StationKind.street_centre]
    county_seat = next(s for s in county.stations if s.kind is StationKind.county_centre)

    # the county seat: one grid over the urban streets' homes and stations
    urban = [(h.lat, h.lon) for h in county.homes if h.area is Area.urban] + [
        (s.lat, s.lon) for s in county.stations if s.area is Area.urban
    ]
    urban_names = [r for c in centres if c.area is Area.urban for r in roads.get(_place_name(c.name), [])]
    seat = (county_seat.lat, county_seat.lon)
    _grid(rng, plan, seat, _extent_km(seat, urban, 0.35), 0.8, 3, urban_names, _EXTRA_ROADS)
    plan.places.append(Place("唐河县", seat, 0))

    # market towns: their own small grid; villages: a few lanes and a road to the town
    town_rings: list[tuple[LatLon, ...]] = [plan.patches[0].ring]
    for c in centres:
        plan.places.append(Place(_place_name(c.name), (c.lat, c.lon), 3 if c.area is Area.urban else 1))
        if c.area is Area.urban:
            continue
        members = [s for s in county.stations if centre_of.get(s.id) == c.id]
        core = [(s.lat, s.lon) for s in members if s.kind is not StationKind.village_point]
        core += [
            (h.lat, h.lon)
            for h in county.homes
            if centre_of.get(station_of_home[h.id]) == c.id
            and by_id[station_of_home[h.id]].kind is not StationKind.village_point
        ]
        centre = (c.lat, c.lon)
        first = len(plan.patches)
        _grid(rng, plan, centre, _extent_km(centre, core, 0.2), 0.5, 3, roads.get(_place_name(c.name), []))
        town_rings.append(plan.patches[first].ring)
        # the road to the county seat, bending a little
        mid = (
            (seat[0] + c.lat) / 2 + rng.uniform(-0.6, 0.6) * dlat,
            (seat[1] + c.lon) / 2 + rng.uniform(-0.6, 0.6) * dlon,
        )
        _road_with_label(plan, "highway", [seat, mid, centre], f"唐{_place_name(c.name)[0]}公路", 1.6)
        for v in members:
            if v.kind is not StationKind.village_point:
                continue
            village = v.name.removeprefix(_place_name(c.name)).split("村")[0] + "村"
            vp = (v.lat, v.lon)
            plan.places.append(Place(village, vp, 2))
            half = 0.22
            ring = tuple(
                (v.lat + a * half * dlat, v.lon + b * half * dlon)
                for a, b in ((-1, -1), (-1, 1), (1, 1), (1, -1))
            )
            plan.patches.append(Patch("village", ring))
            plan.roads.append(Road("lane", ((v.lat, v.lon - half * dlon), (v.lat, v.lon + half * dlon))))
            plan.roads.append(Road("lane", ((v.lat - half * dlat, v.lon), (v.lat + half * dlat, v.lon))))
            bend = (
                v.lat + rng.uniform(-0.3, 0.3) * dlat,
                (v.lon + c.lon) / 2 + rng.uniform(-0.3, 0.3) * dlon,
            )
            plan.roads.append(Road("country", (vp, (vp[0], bend[1]), bend, centre)))
            town_rings.append(ring)
    # homes outside every grid and village: a track to the road network (their station)
    for h in county.homes:
        p = (h.lat, h.lon)
        if any(_inside(ring, p) for ring in town_rings):
            continue
        s = by_id[h.station_id]
        plan.roads.append(Road("lane", (p, (p[0], s.lon), (s.lat, s.lon))))
    return plan
