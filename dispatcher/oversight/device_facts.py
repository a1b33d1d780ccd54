"""Device health inputs: registry devices in scope with their state, their offline time
and rejected messages in a window (the pure arithmetic: dispatcher/oversight/health.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from device_gateway.models import Device, DeviceEvent, DeviceState, RejectedMessage
from dispatcher.oversight.health import DeviceFacts, offline_seconds
from dispatcher.oversight.service import load_stations, utc_value
from dispatcher.registry.models import Home

__all__ = ["load_device_facts"]


async def load_device_facts(
    session: AsyncSession,
    *,
    scope: frozenset[str] | None,
    start: datetime,
    end: datetime,
) -> list[DeviceFacts]:
    """Registry devices in scope with their state, offline seconds in [start, end) and
    rejected messages in it."""
    stations = await load_stations(session)
    q = (
        select(
            Device.id,
            Device.home_id,
            Home.station_id,
            Device.kind,
            Device.enabled,
            Device.created_at,
            DeviceState.online,
            DeviceState.offline_since,
            DeviceState.last_seen_at,
            DeviceState.battery_pct,
            DeviceState.last_test_at,
        )
        .join(Home, Home.id == Device.home_id)
        .outerjoin(DeviceState, DeviceState.device_id == Device.id)
        .order_by(Device.id)
    )
    if scope is not None:
        q = q.where(Home.station_id.in_(sorted(scope)))
    devices = (await session.execute(q)).all()
    sup_types = ("offline", "online")
    changes: dict[str, list[tuple[datetime, str]]] = {}
    for dev, at, typ in (
        await session.execute(
            select(DeviceEvent.device_id, DeviceEvent.received_at, DeviceEvent.type).where(
                DeviceEvent.type.in_(sup_types),
                DeviceEvent.received_at >= start,
                DeviceEvent.received_at < end,
            )
        )
    ).all():
        changes.setdefault(dev, []).append((utc_value(at) or at, typ))
    last_before = (
        select(DeviceEvent.device_id.label("dev"), func.max(DeviceEvent.id).label("pk"))
        .where(DeviceEvent.type.in_(sup_types), DeviceEvent.received_at < start)
        .group_by(DeviceEvent.device_id)
        .subquery()
    )
    state_at_start: dict[str, str] = dict(
        (
            await session.execute(
                select(last_before.c.dev, DeviceEvent.type).join(
                    DeviceEvent, DeviceEvent.id == last_before.c.pk
                )
            )
        ).all()
    )
    rejected = dict(
        (
            await session.execute(
                select(RejectedMessage.device_id, func.sum(RejectedMessage.messages))
                .where(RejectedMessage.received_at >= start, RejectedMessage.received_at < end)
                .group_by(RejectedMessage.device_id)
            )
        ).all()
    )
    out: list[DeviceFacts] = []
    for d in devices:
        st = stations.get(d.station_id)
        out.append(
            DeviceFacts(
                id=d.id,
                home_id=d.home_id,
                station_id=d.station_id,
                street_id=st.street_id if st else None,
                kind=d.kind,
                enabled=d.enabled,
                created_at=utc_value(d.created_at) or d.created_at,
                online=d.online,
                offline_since=utc_value(d.offline_since),
                last_seen_at=utc_value(d.last_seen_at),
                battery_pct=d.battery_pct,
                last_test_at=utc_value(d.last_test_at),
                offline_s_in_period=offline_seconds(
                    changes.get(d.id, []),
                    start=start,
                    end=end,
                    offline_at_start=state_at_start.get(d.id) == "offline",
                ),
                rejected_in_period=int(rejected.get(d.id, 0)),
                station_name=st.name if st else d.station_id,
            )
        )
    return out
