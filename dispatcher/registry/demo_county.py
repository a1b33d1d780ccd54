"""A demo county modelled on Tanghe County (唐河县, Nanyang, Henan).

The numbers follow Tanghe's 2021–2023 plan (seed 000): 1 county centre, 6 street/town
centres, 28 community day-care centres, 50 home-care points and 210 family care beds.
Everything is drawn from one ``random.Random(seed)`` so the demo, the tests and anyone
reproducing a bug see the same county. A few beds lie far from their station on purpose,
so out-of-range routing and the 15-minute service circle have something to find.

Ages are fixed relative to ``REFERENCE_DATE`` (not today) so a generation never changes.
This module only generates (in memory, no database); ``dispatcher.registry.demo_load``
writes the county into a registry.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from device_gateway.kinds import DEFAULT_HEARTBEAT_S, DeviceKind
from dispatcher.registry.demo_handoff import with_handoff
from dispatcher.registry.demo_names import (
    CHILD_RELATIONS,
    CONDITIONS,
    ELDER_FEMALE,
    ELDER_MALE,
    FLAT_NOTES,
    GENERAL_NOTES,
    HOUSE_NOTES,
    KIN_RELATIONS,
    MOBILE_PREFIXES,
    SURNAMES,
    TOWN_COMMUNITIES,
    URBAN_COMMUNITIES,
    VILLAGES,
    YOUNG_FEMALE,
    YOUNG_MALE,
)
from dispatcher.registry.models import TIER_OF_KIND, Area, StationKind
from dispatcher.registry.schemas import (
    ContactRow,
    DeviceRow,
    HomeRow,
    RegistryRow,
    ResidentRow,
    StaffRole,
    StaffRow,
    StationRow,
)

DEMO_SEED = 2022
SEAT_LAT, SEAT_LON = 32.681, 112.838
REFERENCE_DATE = date(2025, 1, 1)
COUNTY_ID = "tanghe"
TIMEZONE = "Asia/Shanghai"

HOME_RADIUS_KM = 1.5
FAR_HOMES = 6  # beds deliberately outside the station's walking range

# (id, name, area, bearing from the seat in degrees, distance in km, roads or town streets)
_STREETS: tuple[tuple[str, str, Area, float, float, tuple[str, ...]], ...] = (
    (
        "binhe",
        "滨河街道",
        Area.urban,
        200,
        1.6,
        ("滨河路", "建设路", "新春路", "友兰大道", "红庙路"),
    ),
    (
        "wenfeng",
        "文峰街道",
        Area.urban,
        20,
        1.8,
        ("文峰路", "人民路", "解放路", "书院路", "北京大道"),
    ),
    (
        "xingtang",
        "兴唐街道",
        Area.urban,
        290,
        2.2,
        ("兴唐路", "工业路", "泗洲路", "唐州路", "西环路"),
    ),
    (
        "dongxing",
        "东兴街道",
        Area.urban,
        100,
        2.5,
        ("东兴路", "迎宾大道", "桐河路", "长春路", "东环路"),
    ),
    ("tongzhaipu", "桐寨铺镇", Area.rural, 5, 12.5, ("中心街", "东大街", "西大街", "南大街")),
    ("guotan", "郭滩镇", Area.rural, 225, 13.5, ("中心街", "新华街", "解放街", "河街")),
)
_URBAN_DC, _URBAN_HP = 5, 8
_TOWN_DC, _TOWN_HP, _TOWN_VP = 4, 3, 6


_CAPACITY_WEIGHTS = (18, 25, 25, 18, 14)  # GB/T 42195-2022 levels 0..4
_DEVICE_MODELS: dict[DeviceKind, str] = {
    DeviceKind.hub: "CC-HUB-2",
    DeviceKind.button: "CC-SOS-1",
    DeviceKind.watch: "CC-WATCH-4G",
    DeviceKind.radar: "CC-RADAR-60G",
    DeviceKind.mattress: "CC-MAT-2",
    DeviceKind.smoke: "CC-SMOKE-1",
    DeviceKind.gas: "CC-GAS-1",
    DeviceKind.water: "CC-WATER-1",
    DeviceKind.door: "CC-DOOR-1",
}


@dataclass(frozen=True)
class DemoCounty:
    stations: list[StationRow]
    staff: list[StaffRow]
    homes: list[HomeRow]
    residents: list[ResidentRow]
    devices: list[DeviceRow]

    def rows(self, kind: str) -> Sequence[RegistryRow]:
        rows: dict[str, Sequence[RegistryRow]] = {
            "stations": self.stations,
            "staff": self.staff,
            "homes": self.homes,
            "residents": self.residents,
            "devices": self.devices,
        }
        return rows[kind]


def _offset(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    b = math.radians(bearing_deg)
    dlat = km * math.cos(b) / 111.32
    dlon = km * math.sin(b) / (111.32 * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lon + dlon, 6)


class _Gen:
    """All draws go through one Random in a fixed order; reordering calls changes the county."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def near(self, lat: float, lon: float, max_km: float, min_km: float = 0.0) -> tuple[float, float]:
        # sqrt spreads points evenly over the disc instead of bunching them at the centre.
        u = self.rng.random()
        km = math.sqrt(min_km**2 + u * (max_km**2 - min_km**2))
        return _offset(lat, lon, self.rng.uniform(0, 360), km)

    def mobile(self) -> str:
        return self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randrange(10**8):08d}"

    def landline(self) -> str:
        return f"0377-6{self.rng.randrange(10**7):07d}"

    def surname(self) -> str:
        return self.rng.choice(SURNAMES)

    def young_name(self, sex: str, surname: str | None = None) -> str:
        given = YOUNG_MALE if sex == "M" else YOUNG_FEMALE
        return (surname or self.surname()) + self.rng.choice(given)

    def elder_name(self, sex: str, surname: str | None = None) -> str:
        given = ELDER_MALE if sex == "M" else ELDER_FEMALE
        return (surname or self.surname()) + self.rng.choice(given)


@dataclass
class _StationPlan:
    row: StationRow
    place: str  # street or town name used in addresses
    roads: tuple[str, ...]
    village: str | None
    weight: int  # share of beds


# (id, name, kind, (nearest, farthest km from the street centre), village or None)
_Spec = tuple[str, str, StationKind, tuple[float, float], str | None]


def _community_specs(
    slug: str, street: str, names: Sequence[str], day_care: int, ring: tuple[float, float]
) -> list[_Spec]:
    """The first ``day_care`` names become day-care centres, the rest home-care points."""
    specs: list[_Spec] = []
    for i, community in enumerate(names[:day_care]):
        title = f"{street}{community}社区日间照料中心"
        specs.append((f"{slug}-dc{i + 1}", title, StationKind.day_care_centre, ring, None))
    for i, community in enumerate(names[day_care:]):
        title = f"{street}{community}社区居家养老服务点"
        specs.append((f"{slug}-hp{i + 1}", title, StationKind.home_care_point, ring, None))
    return specs


def _stations(g: _Gen) -> list[_StationPlan]:
    county = StationRow(
        id=COUNTY_ID,
        name="唐河县县级养老服务中心",
        tier=TIER_OF_KIND[StationKind.county_centre],
        kind=StationKind.county_centre,
        lat=SEAT_LAT,
        lon=SEAT_LON,
        address="唐河县文峰街道人民路88号",
        phone="0377-12349",
        area=Area.urban,
        timezone=TIMEZONE,
    )
    plans = [_StationPlan(county, "文峰街道", (), None, 0)]
    urban_names = list(URBAN_COMMUNITIES)
    g.rng.shuffle(urban_names)
    villages = list(VILLAGES)
    g.rng.shuffle(villages)
    for slug, name, area, bearing, km, roads in _STREETS:
        lat, lon = _offset(SEAT_LAT, SEAT_LON, bearing + g.rng.uniform(-8, 8), km + g.rng.uniform(-0.4, 0.4))
        street = StationRow(
            id=slug,
            name=f"{name}综合养老服务中心",
            tier=TIER_OF_KIND[StationKind.street_centre],
            kind=StationKind.street_centre,
            parent_id=COUNTY_ID,
            lat=lat,
            lon=lon,
            address=f"唐河县{name}{roads[0]}{g.rng.randint(1, 199)}号",
            phone=g.landline(),
            area=area,
            timezone=TIMEZONE,
        )
        plans.append(_StationPlan(street, name, roads, None, 0))

        specs: list[_Spec]
        if area is Area.urban:
            names = [urban_names.pop() for _ in range(_URBAN_DC + _URBAN_HP)]
            specs = _community_specs(slug, name, names, _URBAN_DC, (0.3, 2.5))
        else:
            names = g.rng.sample(TOWN_COMMUNITIES, _TOWN_DC + _TOWN_HP)
            specs = _community_specs(slug, name, names, _TOWN_DC, (0.2, 1.5))
            for i in range(_TOWN_VP):
                village_name = villages.pop()
                title = f"{name}{village_name}村互助养老点"
                specs.append(
                    (f"{slug}-vp{i + 1}", title, StationKind.village_point, (1.5, 2.9), village_name)
                )
        for sid, title, kind, (near_km, far_km), village in specs:
            clat, clon = g.near(lat, lon, far_km, near_km)
            road = g.rng.choice(roads)
            row = StationRow(
                id=sid,
                name=title,
                tier=TIER_OF_KIND[kind],
                kind=kind,
                parent_id=slug,
                lat=clat,
                lon=clon,
                address=(
                    f"唐河县{name}{village}村委会"
                    if village
                    else f"唐河县{name}{road}{g.rng.randint(1, 299)}号"
                ),
                phone=g.landline() if kind is StationKind.day_care_centre else g.mobile(),
                area=area,
                timezone=TIMEZONE,
            )
            weight = 4 if kind is StationKind.day_care_centre else 2
            plans.append(_StationPlan(row, name, roads, village, weight))
    return plans


_STAFF_PLAN: dict[StationKind, tuple[tuple[StaffRole, int, int], ...]] = {
    # role, min, max per station. Operators follow the plan's 6:3:3 county:street:community ratio.
    StationKind.county_centre: (
        (StaffRole.operator, 8, 8),
        (StaffRole.responder, 4, 4),
        (StaffRole.supervisor, 2, 2),
        (StaffRole.manager, 1, 1),
        (StaffRole.doctor, 1, 1),
        (StaffRole.nurse, 1, 1),
    ),
    StationKind.street_centre: (
        (StaffRole.operator, 3, 4),
        (StaffRole.responder, 3, 4),
        (StaffRole.manager, 1, 1),
        (StaffRole.nurse, 1, 1),
    ),
    StationKind.day_care_centre: (
        (StaffRole.operator, 3, 3),
        (StaffRole.responder, 2, 3),
        (StaffRole.nurse, 0, 1),
    ),
    StationKind.home_care_point: ((StaffRole.operator, 3, 3), (StaffRole.responder, 1, 2)),
    StationKind.village_point: ((StaffRole.operator, 3, 3), (StaffRole.responder, 1, 2)),
}
_ROLE_CODE = {
    StaffRole.operator: "op",
    StaffRole.responder: "rs",
    StaffRole.supervisor: "sv",
    StaffRole.manager: "mg",
    StaffRole.doctor: "dr",
    StaffRole.nurse: "nu",
}


def _staff(g: _Gen, station: StationRow) -> list[StaffRow]:
    rows: list[StaffRow] = []
    for role, low, high in _STAFF_PLAN[station.kind]:
        for n in range(1, g.rng.randint(low, high) + 1):
            sex = g.rng.choice("MF")
            on_duty = g.rng.random() < 0.6
            # County and street desks are never left without an operator on shift; community
            # stations may be, so escalation up the tree has something to do.
            if (
                role is StaffRole.operator
                and n == 1
                and station.kind
                in (
                    StationKind.county_centre,
                    StationKind.street_centre,
                )
            ):
                on_duty = True
            rows.append(
                StaffRow(
                    id=f"{station.id}-{_ROLE_CODE[role]}{n}",
                    station_id=station.id,
                    name=g.young_name(sex),
                    role=role,
                    phone=g.mobile(),
                    on_duty=on_duty,
                    shifts=_roster(station.kind, n),
                )
            )
    return rows


def _roster(kind: StationKind, n: int) -> str:
    """The demo roster (no random draw, so the rest of the county stays as it was):
    the county and street centres work around the clock, staff alternating day and
    night; community stations and village points are staffed by day only, so at night
    the county's coverage rests on the centres, which is what a supervisor should see."""
    if kind in (StationKind.county_centre, StationKind.street_centre):
        return "day" if n % 2 else "night"
    return "day"


def _home_address(g: _Gen, plan: _StationPlan) -> str:
    if plan.village is not None:
        return f"唐河县{plan.place}{plan.village}村{g.rng.randint(1, 8)}组{g.rng.randint(1, 60)}号"
    road = g.rng.choice(plan.roads)
    number = g.rng.randint(1, 299)
    if plan.row.area is Area.urban and g.rng.random() < 0.6:
        building, unit = g.rng.randint(1, 12), g.rng.randint(1, 3)
        room = g.rng.randint(1, 6) * 100 + g.rng.randint(1, 2)
        return f"唐河县{plan.place}{road}{number}号院{building}号楼{unit}单元{room}"
    return f"唐河县{plan.place}{road}{number}号"


def _contacts(g: _Gen, family: str, rural: bool) -> list[ContactRow]:
    contacts: list[ContactRow] = []
    count = g.rng.choices((1, 2, 3), weights=(25, 45, 30))[0]
    for priority in range(1, count + 1):
        roll = g.rng.random()
        if priority == 1 or roll < 0.45:
            relation, sex = g.rng.choice(CHILD_RELATIONS)
            name = g.young_name(sex, family)
        elif roll < 0.7:
            relation, sex = g.rng.choice(KIN_RELATIONS)
            name = g.young_name(sex, family if relation.startswith("侄") else None)
        elif roll < 0.9:
            relation, name = "邻居", g.elder_name(g.rng.choice("MF"))
        else:
            relation = "村干部" if rural else "社区网格员"
            name = g.young_name(g.rng.choice("MF"))
        contacts.append(ContactRow(name=name, relation=relation, phone=g.mobile(), priority=priority))
    return contacts


def _resident(
    g: _Gen,
    rid: str,
    home: HomeRow,
    sex: str,
    name: str,
    alone_household: bool,
    contacts: list[ContactRow],
) -> ResidentRow:
    age = int(g.rng.triangular(62, 94, 80))
    birth = date(REFERENCE_DATE.year - age, g.rng.randint(1, 12), g.rng.randint(1, 28))
    level = g.rng.choices(range(5), weights=_CAPACITY_WEIGHTS)[0]
    if age >= 85 and level < 4 and g.rng.random() < 0.3:
        level += 1
    # Someone who has lost most capacity rarely lives alone, but those who do matter most.
    living_alone = alone_household and g.rng.random() < (0.8 if level <= 2 else 0.25)

    names = [c for c, _ in CONDITIONS]
    weights = [w for _, w in CONDITIONS]
    conditions: list[str] = []
    for _ in range(g.rng.choices((0, 1, 2, 3), weights=(15, 40, 30, 15))[0]):
        pick = g.rng.choices(names, weights=weights)[0]
        if pick not in conditions:
            conditions.append(pick)
    if level >= 3 and g.rng.random() < 0.5:
        extra = g.rng.choice(("阿尔茨海默病", "脑梗后遗症"))
        if extra not in conditions:
            conditions.append(extra)

    notes: list[str] = []
    if living_alone:
        notes.append(g.rng.choice(("独居，子女在外地务工", "独居，每日需电话问候", "空巢老人")))
    if level == 4:
        notes.append("卧床，需定时翻身")
    elif level == 3:
        notes.append(g.rng.choice(("行动不便，使用轮椅", "半失能，白天有护工照看")))
    if "阿尔茨海默病" in conditions:
        notes.append("记忆力差，易走失，外出需陪同")
    if age >= 80 and g.rng.random() < 0.3:
        notes.append("高龄津贴对象")
    if g.rng.random() < 0.3:
        notes.append(g.rng.choice(GENERAL_NOTES))

    hr_min = hr_max = rr_min = rr_max = None
    if "冠心病" in conditions and g.rng.random() < 0.5:
        hr_min, hr_max = 50, 110
    if "慢性阻塞性肺病" in conditions and g.rng.random() < 0.5:
        rr_min, rr_max = 10, 28
    return ResidentRow(
        id=rid,
        home_id=home.id,
        name=name,
        sex="M" if sex == "M" else "F",
        birth_date=birth,
        capacity_level=level,
        living_alone=living_alone,
        conditions=conditions,
        notes="；".join(notes),
        hr_min=hr_min,
        hr_max=hr_max,
        rr_min=rr_min,
        rr_max=rr_max,
        contacts=contacts,
    )


_EXTRA_DEVICES = (
    DeviceKind.radar,
    DeviceKind.mattress,
    DeviceKind.smoke,
    DeviceKind.gas,
    DeviceKind.water,
    DeviceKind.door,
    DeviceKind.watch,
)


def _devices(g: _Gen, home: HomeRow, residents: list[ResidentRow]) -> list[DeviceRow]:
    base = DeviceKind.hub if g.rng.random() < 0.8 else DeviceKind.button
    total = g.rng.choices((1, 2, 3, 4), weights=(15, 35, 30, 20))[0]
    frail = max(r.capacity_level for r in residents) >= 3
    alone = any(r.living_alone for r in residents)
    weight = {
        DeviceKind.radar: 4 if alone else 2,
        DeviceKind.mattress: 6 if frail else 2,
        DeviceKind.smoke: 3,
        DeviceKind.gas: 3,
        DeviceKind.water: 1,
        DeviceKind.door: 2 if alone else 1,
        DeviceKind.watch: 1 if frail else 3,
    }
    pool = list(_EXTRA_DEVICES)
    kinds = [base]
    while len(kinds) < total:
        pick = g.rng.choices(pool, weights=[weight[k] for k in pool])[0]
        pool.remove(pick)
        kinds.append(pick)
    return [
        DeviceRow(
            id=f"{home.id}-{kind.value}",
            home_id=home.id,
            kind=kind,
            model=_DEVICE_MODELS[kind],
            heartbeat_s=DEFAULT_HEARTBEAT_S[kind],
            enabled=True,
        )
        for kind in kinds
    ]


def generate_demo_county(seed: int = DEMO_SEED) -> DemoCounty:
    """Build the demo county in memory; the same seed always gives the same county."""
    g = _Gen(seed)
    plans = _stations(g)
    staff = [row for plan in plans for row in _staff(g, plan.row)]

    community = [p for p in plans if p.weight > 0]
    beds_per_station = dict.fromkeys((p.row.id for p in community), 1)
    for plan in g.rng.choices(community, weights=[p.weight for p in community], k=210 - len(community)):
        beds_per_station[plan.row.id] += 1
    far = set(g.rng.sample(range(210), FAR_HOMES))

    homes: list[HomeRow] = []
    residents: list[ResidentRow] = []
    devices: list[DeviceRow] = []
    for plan in community:
        for _ in range(beds_per_station[plan.row.id]):
            index = len(homes)
            home_id = f"h{index + 1:04d}"
            if index in far:
                km = g.rng.uniform(3.5, 8.0)
                lat, lon = _offset(plan.row.lat, plan.row.lon, g.rng.uniform(0, 360), km)
                notes = f"住址偏远，距服务站约{km:.0f}公里"
            else:
                lat, lon = g.near(plan.row.lat, plan.row.lon, HOME_RADIUS_KM * 0.95)
                notes = ""
            address = _home_address(g, plan)
            if not notes and g.rng.random() < 0.4:
                notes = g.rng.choice(FLAT_NOTES if "号楼" in address else HOUSE_NOTES)
            home = HomeRow(
                id=home_id,
                station_id=plan.row.id,
                address=address,
                lat=lat,
                lon=lon,
                area=plan.row.area,
                notes=notes,
            )
            homes.append(home)

            couple = g.rng.random() < 0.35
            husband = g.surname()
            rural = plan.row.area is Area.rural
            if couple:
                contacts = _contacts(g, husband, rural)
                people = [
                    _resident(g, f"{home_id}-r1", home, "M", g.elder_name("M", husband), False, contacts),
                    _resident(g, f"{home_id}-r2", home, "F", g.elder_name("F"), False, contacts),
                ]
            else:
                sex = g.rng.choice("MF")
                own = g.surname()
                family = own if sex == "M" else husband
                contacts = _contacts(g, family, rural)
                people = [_resident(g, f"{home_id}-r1", home, sex, g.elder_name(sex, own), True, contacts)]
            residents.extend(people)
            devices.extend(_devices(g, home, people))

    homes, residents = with_handoff(seed, homes, residents)
    return DemoCounty(
        stations=[p.row for p in plans],
        staff=staff,
        homes=homes,
        residents=residents,
        devices=devices,
    )
