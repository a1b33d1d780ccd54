"""What the mass offline intake reads, once per transaction, and keeps current with its
own changes: the open incidents, the offline events and broker outages around the
events of the batch, each incident's devices, and which incidents each still-offline
device belongs to. An :class:`AreaBatch` is created with the intake's batch
(dispatcher/calls/intake.py) and passed down; nothing is cached in the session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from device_gateway.models import BrokerOutage, DeviceEvent
from dispatcher.calls import lifecycle
from dispatcher.calls.context import Batch, is_pg
from dispatcher.calls.lifecycle import OPEN_STATUSES, CallStatus
from dispatcher.calls.models import Call
from dispatcher.calls.queries import station_nodes
from dispatcher.incidents import mass_offline as mo
from dispatcher.incidents.models import IncidentDevice, MassOfflineIncident
from dispatcher.registry.models import Home, Station

__all__ = [
    "OPEN_VALUES",
    "AreaBatch",
    "existing_incident",
    "incident_row",
    "lock_incident",
    "members",
    "offline_index",
    "open_incidents",
    "open_of",
    "outage_detail",
    "outages",
    "sightings",
    "station_of",
    "stations",
    "still_open",
    "tally",
]

OPEN_VALUES = [s.value for s in OPEN_STATUSES]

Members = dict[str, tuple[bool, int]]  # device id -> (still offline, its offline event)
OfflineIndex = tuple[dict[str, list[int]], dict[int, Call]]


@dataclass
class AreaBatch:
    """One transaction's view of the mass offline incidents."""

    # call id -> the open incident, as this transaction sees it (None: not read yet)
    open: dict[int, mo.OpenIncident] | None = None
    sightings: tuple[datetime, datetime, list[mo.Sighting]] | None = None  # offline events loaded
    outages: tuple[datetime, datetime, list[mo.Outage]] | None = None
    swept: set[int] = field(default_factory=set)  # incidents whose leftovers this transaction folded
    # station id -> (when, the open incidents then, the Join decided for it)
    memo: dict[str, tuple[datetime, frozenset[int], mo.Join]] = field(default_factory=dict)
    locked: set[int] = field(default_factory=set)  # incident calls this transaction holds locked
    index: OfflineIndex | None = None  # see offline_index
    # read once per transaction under the incident's lock, kept current by its own changes
    members: dict[int, Members] = field(default_factory=dict)
    # the incidents' rows, held for the transaction (the identity map alone holds them
    # weakly, and their changes are flushed with the batch)
    rows: dict[int, MassOfflineIncident] = field(default_factory=dict)

    def opened(self) -> dict[int, mo.OpenIncident]:
        """The open incidents as known so far (started empty when not read yet)."""
        if self.open is None:
            self.open = {}
        return self.open

    def forget(self, call_id: int) -> None:
        if self.open is not None:
            self.open.pop(call_id, None)


async def stations(session: AsyncSession, *, batch: Batch) -> dict[str, mo.StationRef]:
    nodes = await station_nodes(session, batch=batch)
    return {n.id: mo.StationRef(n.id, n.parent_id, n.tier) for n in nodes.values()}


async def station_of(session: AsyncSession, *, home_id: str, batch: Batch) -> str | None:
    home = batch.homes.get(home_id) or await session.get(Home, home_id)
    return home.station_id if home is not None else None


def open_of(r: MassOfflineIncident) -> mo.OpenIncident:
    return mo.OpenIncident(r.call_id, r.area_station_id, r.cause, r.outage_id, r.last_offline_at)


async def open_incidents(session: AsyncSession, *, areas: AreaBatch) -> dict[int, mo.OpenIncident]:
    if areas.open is not None:
        return areas.open
    rows = (
        await session.execute(
            select(MassOfflineIncident)
            .join(Call, Call.id == MassOfflineIncident.call_id)
            .where(Call.status.in_(OPEN_VALUES))
        )
    ).scalars()
    areas.open = {r.call_id: open_of(r) for r in rows}
    return areas.open


async def sightings(
    session: AsyncSession, *, areas: AreaBatch, lo: datetime, hi: datetime
) -> list[mo.Sighting]:
    """Offline events received from lo to hi (loaded once per transaction and widened as
    the batch needs: a storm's batch is many events of the same minute)."""
    cached = areas.sightings
    if cached is not None and cached[0] <= lo and hi <= cached[1]:
        return [s for s in cached[2] if lo <= s.at <= hi]
    if cached is not None:
        lo, hi = min(lo, cached[0]), max(hi, cached[1])
    # the rest of a batch is received later than this event: load ahead once, not per event
    hi += (hi - lo) / 2
    rows = await session.execute(
        select(DeviceEvent.device_id, DeviceEvent.home_id, Home.station_id, DeviceEvent.received_at)
        .join(Home, Home.id == DeviceEvent.home_id)
        .where(DeviceEvent.type == "offline", DeviceEvent.received_at >= lo, DeviceEvent.received_at <= hi)
    )
    found = [mo.Sighting(d, h, s, at) for d, h, s, at in rows.all()]
    areas.sightings = (lo, hi, found)
    return found


async def outages(session: AsyncSession, *, areas: AreaBatch, lo: datetime, hi: datetime) -> list[mo.Outage]:
    cached = areas.outages
    if cached is not None and cached[0] <= lo and hi <= cached[1]:
        return cached[2]
    if cached is not None:
        lo, hi = min(lo, cached[0]), max(hi, cached[1])
    rows = await session.scalars(
        select(BrokerOutage).where(
            BrokerOutage.lost_at <= hi, (BrokerOutage.back_at.is_(None)) | (BrokerOutage.back_at >= lo)
        )
    )
    found = [mo.Outage(o.id, o.gateway, o.lost_at, o.back_at) for o in rows]
    areas.outages = (lo, hi, found)
    return found


async def members(session: AsyncSession, *, areas: AreaBatch, call_id: int) -> Members:
    found = areas.members.get(call_id)
    if found is None:
        await session.flush()
        rows = await session.execute(
            select(IncidentDevice.device_id, IncidentDevice.back_at, IncidentDevice.offline_event_pk).where(
                IncidentDevice.call_id == call_id
            )
        )
        found = areas.members[call_id] = {d: (back is None, pk) for d, back, pk in rows.all()}
    return found


def tally(found: Members) -> tuple[int, int]:
    """(devices, devices back)."""
    offline = sum(1 for gone, _ in found.values() if gone)
    return len(found), len(found) - offline


async def incident_row(
    session: AsyncSession, *, areas: AreaBatch, call_id: int
) -> MassOfflineIncident | None:
    """The incident's row, held for the transaction."""
    row = areas.rows.get(call_id)
    if row is None:
        row = await session.get(MassOfflineIncident, call_id)
        if row is not None:
            areas.rows[call_id] = row
    return row


async def offline_index(session: AsyncSession, *, areas: AreaBatch) -> OfflineIndex:
    """For this transaction: which open incidents each still-offline device belongs to,
    and those incidents' calls, locked. Read once: a restore storm is thousands of
    ``online`` events, each a lookup here instead of a query."""
    if areas.index is not None:
        return areas.index
    await session.flush()
    stmt = (
        select(Call)
        .join(MassOfflineIncident, MassOfflineIncident.call_id == Call.id)
        .where(Call.status.in_(OPEN_VALUES))
        .order_by(Call.id)
    )
    if is_pg(session):
        stmt = stmt.with_for_update(of=Call)
    held = {c.id: c for c in (await session.scalars(stmt)).all()}
    areas.locked.update(held)
    index: dict[str, list[int]] = {}
    if held:
        rows = await session.execute(
            select(IncidentDevice.device_id, IncidentDevice.call_id).where(
                IncidentDevice.call_id.in_(sorted(held)), IncidentDevice.back_at.is_(None)
            )
        )
        for device_id, call_id in rows.all():
            index.setdefault(device_id, []).append(call_id)
    areas.index = (index, held)
    return areas.index


def still_open(status: str | None) -> bool:
    return status is not None and lifecycle.is_open(CallStatus(status))


async def lock_incident(session: AsyncSession, *, areas: AreaBatch, call_id: int) -> bool:
    """Lock the incident's call for this transaction; False when it is no longer open
    (another copy or an operator closed it after this transaction read it)."""
    if call_id in areas.locked:
        return True
    stmt = select(Call.status).where(Call.id == call_id)
    if is_pg(session):
        stmt = stmt.with_for_update()
    status = await session.scalar(stmt)
    if not still_open(status):
        areas.forget(call_id)
        areas.memo.clear()
        return False
    areas.locked.add(call_id)
    return True


async def existing_incident(session: AsyncSession, *, areas: AreaBatch, area_id: str) -> int | None:
    """The open incident of the area another copy opened meanwhile, locked, if any."""
    if is_pg(session):
        # one incident per area across dispatcher copies: the second waits here, then
        # finds the first one's incident below
        await session.execute(select(Station.id).where(Station.id == area_id).with_for_update())
    existing = await session.scalar(
        select(MassOfflineIncident.call_id)
        .join(Call, Call.id == MassOfflineIncident.call_id)
        .where(MassOfflineIncident.area_station_id == area_id, Call.status.in_(OPEN_VALUES))
        .order_by(MassOfflineIncident.call_id)
        .limit(1)
    )
    if existing is None:
        return None
    await lock_incident(session, areas=areas, call_id=int(existing))
    row = await session.get(MassOfflineIncident, existing)
    if row is not None:
        areas.opened()[existing] = open_of(row)
    return int(existing)


async def outage_detail(session: AsyncSession, *, outage_id: int | None) -> dict[str, Any] | None:
    if outage_id is None:
        return None
    o = await session.get(BrokerOutage, outage_id)
    if o is None:
        return None
    return {
        "id": o.id,
        "gateway": o.gateway,
        "lost_at": o.lost_at.isoformat(),
        "back_at": o.back_at.isoformat() if o.back_at else None,
    }
