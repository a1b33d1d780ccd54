"""The demo county's outside service providers (服务商), and writing them into a registry.

A handful of providers a county like Tanghe contracts: a canteen and a cleaning company
in town, a nursing station, a mobile bathing team, a repair shop, and two town providers
for the rural streets. Each is placed at a fixed bearing and distance from a station of
the demo county (``dispatcher.registry.demo_county``), so the same county always gets the
same providers; no random draw. Their areas are a radius around the base and/or the
community stations of a street (the home's own station is what routing compares).

``demo_providers`` is pure (station rows in, provider records out); ``load_demo_providers``
writes them through the same ``save_provider`` as the admins' API, once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.orders.models import Provider
from dispatcher.orders.schemas import ProviderIn
from dispatcher.orders.service import save_provider
from dispatcher.registry.models import Station

__all__ = ["DEMO_PROVIDERS", "DemoProvider", "StationPoint", "demo_providers", "load_demo_providers"]


@dataclass(frozen=True)
class StationPoint:
    id: str
    lat: float
    lon: float
    parent_id: str | None


@dataclass(frozen=True)
class DemoProvider:
    id: str
    name: str
    base: str  # the station it is placed next to
    bearing_deg: float
    km: float
    radius_km: float | None
    streets: tuple[str, ...]  # it also serves every community station of these streets
    hours: str
    kinds: tuple[str, ...]
    capacity: int
    manager_name: str
    manager_phone: str


DEMO_PROVIDERS: tuple[DemoProvider, ...] = (
    DemoProvider(
        "p-canteen-binhe", "唐河县滨河老年助餐中心", "binhe", 40, 0.6, 3.5, (),
        "06:30-19:30", ("meal",), 12, "李桂英", "0377-68810231",
    ),
    DemoProvider(
        "p-clean-anju", "唐河县安居家政服务有限公司", "wenfeng", 150, 0.8, 6.0, (),
        "mon-sat 08:00-18:00", ("cleaning", "shopping"), 6, "王建国", "0377-68820517",
    ),
    DemoProvider(
        "p-nursing-renhe", "唐河县仁和护理站", "tanghe", 300, 0.5, 8.0, (),
        "07:00-21:00", ("medical", "mobility"), 5, "张丽", "0377-68830946",
    ),
    DemoProvider(
        "p-bath-kangle", "唐河县康乐上门助浴服务队", "xingtang", 80, 0.7, 6.0, (),
        "tue-sun 09:00-17:00", ("bathing",), 3, "赵海燕", "0377-68841172",
    ),
    DemoProvider(
        "p-repair-bianmin", "唐河县便民维修服务部", "dongxing", 250, 0.5, 10.0, (),
        "08:00-20:00", ("repair",), 4, "刘长青", "0377-68856603",
    ),
    DemoProvider(
        "p-guotan-xingfu", "郭滩镇幸福院老年食堂", "guotan", 120, 0.4, 3.0, ("guotan",),
        "06:30-18:30", ("meal", "cleaning"), 6, "陈玉兰", "0377-68867718",
    ),
    DemoProvider(
        "p-tongzhaipu-huimin", "桐寨铺镇惠民家政维修服务社", "tongzhaipu", 200, 0.3, 3.0, ("tongzhaipu",),
        "mon-sat 08:00-17:30", ("cleaning", "repair", "bathing"), 4, "周国强", "0377-68872205",
    ),
)  # fmt: skip


def _offset(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    b = math.radians(bearing_deg)
    dlat = km * math.cos(b) / 111.32
    dlon = km * math.sin(b) / (111.32 * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lon + dlon, 6)


def _street_of(station: StationPoint, by_id: dict[str, StationPoint]) -> str | None:
    """The street (the county's child) a station belongs to."""
    seen: set[str] = set()
    cur: StationPoint | None = station
    while cur is not None and cur.id not in seen:
        seen.add(cur.id)
        parent = by_id.get(cur.parent_id) if cur.parent_id else None
        if parent is not None and parent.parent_id is None:
            return cur.id
        cur = parent
    return None


def demo_providers(stations: Iterable[StationPoint]) -> dict[str, ProviderIn]:
    """The demo providers whose base station exists, by id (empty for another registry)."""
    by_id = {s.id: s for s in stations}
    out: dict[str, ProviderIn] = {}
    for p in DEMO_PROVIDERS:
        base = by_id.get(p.base)
        if base is None:
            continue
        lat, lon = _offset(base.lat, base.lon, p.bearing_deg, p.km)
        served = sorted(
            s.id for s in by_id.values() if s.id not in p.streets and _street_of(s, by_id) in p.streets
        )
        out[p.id] = ProviderIn(
            name=p.name,
            lat=lat,
            lon=lon,
            radius_km=p.radius_km,
            stations=served,
            hours=p.hours,
            kinds=list(p.kinds),
            capacity=p.capacity,
            manager_name=p.manager_name,
            manager_phone=p.manager_phone,
        )
    return out


async def load_demo_providers(maker: async_sessionmaker[AsyncSession], *, now: datetime) -> int:
    """Write the demo providers into a registry that has none yet (starting the demo twice
    adds nothing, and a registry with providers of its own is left alone); how many."""
    async with maker() as s, s.begin():
        if int(await s.scalar(select(func.count()).select_from(Provider)) or 0):
            return 0
        rows = (await s.execute(select(Station.id, Station.lat, Station.lon, Station.parent_id))).all()
        wanted = demo_providers(StationPoint(r.id, r.lat, r.lon, r.parent_id) for r in rows)
        for pid, data in wanted.items():
            await save_provider(s, provider_id=pid, data=data, now=now, create=True)
        return len(wanted)
