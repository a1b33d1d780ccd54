"""What the intake learned, written in batches, and the liveness events it implies.

Every flush writes the devices' pending state and the rejections in one transaction, and
turns wills and returns into ``offline`` / ``online`` events; every sweep turns silence
past a device's due time into ``offline``. All transitions are conditional UPDATEs
(device_gateway/store.py), so with several gateway copies each raises exactly one event.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock
from device_gateway import protocol as p
from device_gateway.directory import DeviceDirectory
from device_gateway.intake import Intake
from device_gateway.limits import Suppressed
from device_gateway.store import (
    EventRow,
    RejectRow,
    flush_states,
    insert_events,
    insert_rejects,
    mark_offline,
    sweep_overdue,
)
from device_gateway.writer import EventWriter

log = structlog.get_logger("carecall.gateway")


class StateWriter:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        clock: Clock,
        name: str,
        offline_after_intervals: int,
        directory: DeviceDirectory,
        intake: Intake,
        writer: EventWriter,
    ) -> None:
        self.maker = maker
        self.clock = clock
        self.name = name
        self.intervals = offline_after_intervals
        self.directory = directory
        self.intake = intake
        self.writer = writer
        # one flush at a time: a flush that finds another writing waits for it, so when
        # flush() returns, everything learned before the call is in the database (the
        # stop path's last flush, a test's; before, it found nothing left to take and
        # returned while the periodic one was still writing)
        self._flushing = asyncio.Lock()

    async def flush(self) -> None:
        """Write device state and rejections; raise online/offline for wills and returns.
        Returns once everything learned before the call is written (a flush already
        writing is waited for)."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        learned = self.intake.take()
        pending, rejects, summaries = learned
        if not pending and not rejects and not summaries:
            return
        hb = {d: self.directory.heartbeat(d) for d in pending}
        now = self.clock.now()
        try:
            async with self.maker() as session, session.begin():
                await insert_rejects(session, rejects + [self._summary_row(s) for s in summaries])
                # A sign of life clears a pending will (Intake._seen), so a will still
                # pending came after the device's last sign of life: write what was seen
                # first, then flip the will's devices offline. (The other order left a
                # device that announced itself and dropped within one flush online, with
                # no offline event, until it missed three heartbeats.)
                restored = await flush_states(session, pending, hb, self.intervals)
                wills = [d for d, st in pending.items() if st.will_at is not None]
                went_offline = await mark_offline(session, wills, now) if wills else []
                rows = [self._supervision_row(d, "online", now, offline_since=since) for d, since in restored]
                rows += [
                    self._supervision_row(d, "offline", now, last_seen=ls, cause="will")
                    for d, ls in went_offline
                ]
                new = await insert_events(session, rows)
        except Exception:
            # keep what we learned for the next flush rather than lose it
            self.intake.give_back(learned)
            raise
        if rows:
            await self.writer.after_commit(rows, new)

    def _summary_row(self, s: Suppressed) -> RejectRow:
        span = max(0.0, s.last_at - s.first_at)
        who = "this device" if s.device_id is not None else "devices past the tracking limit"
        return RejectRow(
            received_at=self.clock.now(),
            device_id=s.device_id,
            topic=s.topic,
            reason=s.reason,
            detail=(
                f"{s.count} more {s.reason} rejection(s) from {who} over {span:.1f} s: counted, "
                "not stored one by one nor acked (rate limit)"
            )[:500],
            payload_size=s.largest,
            payload_excerpt="",
            messages=s.count,
        )

    async def sweep(self) -> None:
        now = self.clock.now()
        async with self.maker() as session, session.begin():
            overdue = await sweep_overdue(session, now)
            rows = [
                self._supervision_row(d, "offline", now, last_seen=ls, cause="silent") for d, ls in overdue
            ]
            new = await insert_events(session, rows)
        if rows:
            log.info("gateway.devices_offline", count=len(rows))
            await self.writer.after_commit(rows, new)

    def _supervision_row(
        self,
        device_id: str,
        kind: str,
        now: datetime,
        *,
        last_seen: datetime | None = None,
        offline_since: datetime | None = None,
        cause: str | None = None,
    ) -> EventRow:
        info = self.directory.cached(device_id)
        data: dict[str, Any] = {}
        if kind == "offline":
            anchor = now
            data = {"cause": cause, "last_seen": last_seen.isoformat() if last_seen else None}
            if info:
                data["heartbeat_s"] = info.heartbeat_s
        else:
            anchor = offline_since or now
            data = {
                "offline_since": offline_since.isoformat() if offline_since else None,
                "offline_s": round((now - offline_since).total_seconds(), 1) if offline_since else None,
            }
        return EventRow(
            device_id=device_id,
            event_id=f"sup-{kind}-{int(anchor.timestamp() * 1000)}",
            home_id=info.home_id if info else "",
            type=kind,
            event_class=p.EventClass.trouble.value,
            sensor=None,
            data=data,
            source="supervision",
            device_ts=None,
            received_at=now,
            clock_skew_s=None,
            clock_suspect=False,
            gateway=self.name,
            t_arrived=time.monotonic(),
            ack=False,
        )
