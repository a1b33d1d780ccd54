"""The gateway's view of the registry: the facts it needs for every message of a device,
cached, and re-read when a device change is announced (device_gateway/changes.py)."""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core import metrics as m
from device_gateway.store import DeviceInfo, ResidentLookup, load_devices


class DeviceDirectory:
    """Registry facts per device, cached; a miss asks the database (negative results
    are cached briefly so an unknown device flooding us costs one query a minute).

    A change to a device (disabled, re-keyed, deleted, imported) is announced on the bus
    channel ``devices`` after its commit, and ``reload`` re-reads just those devices, so
    a disabled device is refused at once; ``refresh`` re-reads everything every minute as
    a safety net for a lost announcement (the bus is a hint, never the record)."""

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        residents: ResidentLookup,
        negative_ttl_s: float = 60.0,
    ) -> None:
        self._maker = maker
        self._residents = residents
        self._known: dict[str, DeviceInfo] = {}
        self._unknown: dict[str, float] = {}
        self._ttl = negative_ttl_s
        # ids reloaded while a full refresh was reading: its snapshot is older for them
        self._reloaded_during_refresh: set[str] | None = None

    async def refresh(self) -> None:
        self._reloaded_during_refresh = set()
        try:
            async with self._maker() as session:
                infos = await load_devices(session, residents=self._residents)
            fresh = {d.id: d for d in infos}
            for device_id in self._reloaded_during_refresh:
                newer = self._known.get(device_id)
                if newer is None:
                    fresh.pop(device_id, None)
                else:
                    fresh[device_id] = newer
        finally:
            self._reloaded_during_refresh = None
        self._known = fresh
        self._unknown.clear()
        m.DEVICES.labels("registered").set(len(self._known))

    async def reload(self, device_ids: list[str]) -> list[str]:
        """Re-read these devices now; returns the ids whose facts changed (or vanished)."""
        async with self._maker() as session:
            found = {d.id: d for d in await load_devices(session, device_ids, residents=self._residents)}
        changed = []
        for device_id in device_ids:
            info = found.get(device_id)
            old = self._known.get(device_id)
            if info is None:
                self._known.pop(device_id, None)
            else:
                self._known[device_id] = info
                self._unknown.pop(device_id, None)
            if info != old:
                changed.append(device_id)
            if self._reloaded_during_refresh is not None:
                self._reloaded_during_refresh.add(device_id)
        m.DEVICES.labels("registered").set(len(self._known))
        return changed

    def cached(self, device_id: str) -> DeviceInfo | None:
        return self._known.get(device_id)

    async def get(self, device_id: str) -> DeviceInfo | None:
        info = self._known.get(device_id)
        if info is not None:
            return info
        miss = self._unknown.get(device_id)
        if miss is not None and time.monotonic() - miss < self._ttl:
            return None
        async with self._maker() as session:
            found = await load_devices(session, [device_id], residents=self._residents)
        if found:
            self._known[device_id] = found[0]
            return found[0]
        if len(self._unknown) > 100_000:
            self._unknown.clear()
        self._unknown[device_id] = time.monotonic()
        return None

    def heartbeat(self, device_id: str) -> int:
        info = self._known.get(device_id)
        return info.heartbeat_s if info else 60
