"""The demo county's special-difficulty groups (特殊困难老年人), so its visit plans exist.

The demo registry already says who lives alone and how much capacity each resident has
lost (``dispatcher.registry.demo_county``); the other groups are drawn from those facts
with a stable hash of the resident id (no random stream, so the county stays as it is):

- ``disabled`` (失能/半失能): capacity level 3 or 4, about two in three of them;
- ``severely_handicapped`` (重残): capacity level 4, about one in four;
- ``empty_nest`` (空巢): an elderly couple living on their own, about one in three;
- ``left_behind`` (留守): rural residents whose children work away, about one in five;
- ``lost_only_child`` (失独): about one in sixty.

Living alone needs no row (the registry's flag counts), and the risk rule of
config/visits.yaml (capacity 3+ and alone: weekly) reads the registry too.
``demo_categories`` is pure; ``load_demo_categories`` writes them once.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.registry.models import Home, Resident
from dispatcher.visits.models import ResidentCategory
from dispatcher.visits.rules import Category

__all__ = ["ResidentPoint", "demo_categories", "load_demo_categories"]


@dataclass(frozen=True)
class ResidentPoint:
    id: str
    home_id: str
    capacity_level: int
    living_alone: bool
    rural: bool


def _draw(resident_id: str, salt: str, one_in: int) -> bool:
    return zlib.crc32(f"{salt}:{resident_id}".encode()) % one_in == 0


def demo_categories(residents: Iterable[ResidentPoint]) -> list[tuple[str, Category]]:
    """(resident id, category) pairs for the demo county, sorted."""
    people = list(residents)
    household = Counter(r.home_id for r in people)
    out: set[tuple[str, Category]] = set()
    for r in people:
        if r.capacity_level >= 3 and not _draw(r.id, "disabled", 3):
            out.add((r.id, Category.disabled))
        if r.capacity_level >= 4 and _draw(r.id, "handicapped", 4):
            out.add((r.id, Category.severely_handicapped))
        if household[r.home_id] == 2 and not r.living_alone and _draw(r.home_id, "empty_nest", 3):
            out.add((r.id, Category.empty_nest))
        if r.rural and _draw(r.id, "left_behind", 5):
            out.add((r.id, Category.left_behind))
        if _draw(r.id, "lost_only_child", 60):
            out.add((r.id, Category.lost_only_child))
    return sorted(out)


async def load_demo_categories(maker: async_sessionmaker[AsyncSession]) -> int:
    """Write the groups into a registry with none yet (once); how many rows."""
    async with maker() as s, s.begin():
        if int(await s.scalar(select(func.count()).select_from(ResidentCategory)) or 0):
            return 0
        rows = (
            await s.execute(
                select(
                    Resident.id, Resident.home_id, Resident.capacity_level, Resident.living_alone, Home.area
                ).join(Home, Home.id == Resident.home_id)
            )
        ).all()
        pairs = demo_categories(
            ResidentPoint(r.id, r.home_id, r.capacity_level, bool(r.living_alone), r.area == "rural")
            for r in rows
        )
        s.add_all(ResidentCategory(resident_id=rid, category=cat.value) for rid, cat in pairs)
        return len(pairs)
