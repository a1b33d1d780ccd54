"""The stall alarm's monitor: measure the dispatch pipeline, record stall episodes, tell people.

Every process that serves the console or dispatches (``serve``, each ``dispatcher`` copy,
the demo) runs a :class:`StallMonitor`. Every ``stall_check_s`` it asks the database, the
record of truth, for a few oldest times (dispatcher.health.queries; so it also notices when
every dispatcher copy is dead or stuck), adds the heartbeats of its own dispatcher's loops,
and lets the pure ``dispatcher.health.stall.find_stalls`` decide. Then:

* ``/healthz`` answers 503 naming the stalled parts (dispatcher.health.views reads the
  :class:`~dispatcher.health.state.DispatchHealth` this monitor publishes to);
* Prometheus gauges ``carecall_dispatch_stalled{part}`` and the oldest ages;
* ``dispatch_stalls`` rows record each episode (dispatcher.health.recording): whichever
  copy opens one writes the audit row and tells the admins, once; the others only confirm
  it. An episode ends when nobody has confirmed it for ``hold_s``, so copies that disagree
  at the edge cannot make it flap, and a loop reported by a copy that has stopped does not
  stay red for ever;
* the console polls ``GET /api/v1/health/dispatch`` and shows a red banner.

Admins are told through the configured notifier directly, not through the outbox: the
outbox may be the stalled part.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Gauge
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import CatchUpClock, Clock
from carecall.core.metrics import REGISTRY
from config.settings import Settings
from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.health import stall as st
from dispatcher.health.messages import alarm_text
from dispatcher.health.queries import Oldest, active_admins, read_oldest
from dispatcher.health.recording import Episode, Recording, mark_notified, record_episodes
from dispatcher.health.state import DispatchHealth, PartView, view_of
from dispatcher.notifications.notifiers import Message, Notifier

log = structlog.get_logger("carecall.health")

STALLED = Gauge(
    "carecall_dispatch_stalled",
    "1 while a part of the dispatch pipeline is stalled (intake, timers, acks, notifications, database, loop:…)",
    ["part"],
    registry=REGISTRY,
)
OLDEST = Gauge(
    "carecall_dispatch_oldest_age_seconds",
    "Oldest lag per part: event waiting for a call, timer overdue, ack waiting, notification overdue (0 = none)",
    ["part"],
    registry=REGISTRY,
)
LOOP_IDLE = Gauge(
    "carecall_dispatch_loop_idle_seconds",
    "Seconds since each dispatcher loop of this process completed a round",
    ["loop"],
    registry=REGISTRY,
)

SEND_TIMEOUT_S = 10.0


def lags(oldest: Oldest, now: datetime, clock: Clock) -> dict[str, float | None]:
    """Oldest times → real seconds of lag (``None``: nothing waiting, or not yet due)."""

    def since(at: datetime | None) -> float | None:
        if at is None:
            return None
        lag = clock.real_seconds((now - at).total_seconds())
        return lag if lag > 0 else None

    return {
        "intake_wait_s": since(oldest.event_received_at),
        "timer_late_s": since(oldest.timer_due_at),
        "ack_wait_s": since(oldest.ack_queued_at),
        "notification_late_s": since(oldest.notification_due_at),
    }


def steady(clock: Clock) -> bool:
    """Stored times can be compared with real lags: not during a demo's history catch-up,
    whose rate changes all the time (its loops' heartbeats are still watched)."""
    if isinstance(clock, CatchUpClock):
        return clock.caught_up.is_set()
    return True


def thresholds(settings: Settings) -> st.Thresholds:
    return st.Thresholds(
        intake_s=settings.stall_intake_s,
        timers_s=settings.stall_timers_s,
        acks_s=settings.stall_acks_s,
        notifications_s=settings.stall_notifications_s,
        loop_s=settings.stall_loop_s,
        watchdog_loop_s=settings.stall_watchdog_loop_s,
    )


class StallMonitor:
    """The dead man's switch of one process (see the module docstring)."""

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        *,
        settings: Settings,
        clock: Callable[[], Clock],
        name: str,
        notifier: Notifier | None,
        heartbeats: Callable[[], Mapping[str, float] | None] | None = None,
        health: DispatchHealth | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.maker = maker
        self.clock = clock
        self.name = name
        self.notifier = notifier
        self.heartbeats = heartbeats
        self.loops = settings.dispatcher_loop_set  # the loops of its own dispatcher to watch
        self.health = health or DispatchHealth()
        self.limits = thresholds(settings)
        self.interval_s = settings.stall_check_s
        self.hold_s = max(3 * self.interval_s, 6.0)
        self.query_timeout_s = max(5.0, 2 * self.interval_s)
        self._mono = monotonic
        self._wall = wall
        self._floor = 0
        self._missing_since: dict[str, float] = {}
        self._unsteady = False  # the clock has run at a changing rate (demo catch-up)
        self._steady_since: float | None = None
        self._reading: asyncio.Future[Oldest] | None = None

    # -------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event) -> None:
        self.health.watched(max(15.0, 5 * self.interval_s))
        log.info("health.monitor_started", name=self.name, every_s=self.interval_s)
        # No timeout around a whole check: cancelling a transaction half-way could leave a
        # connection holding SQLite's write lock. A read that hangs is given up on (not
        # cancelled) below; a check that hangs anyway leaves /healthz naming the monitor.
        try:
            while not stop.is_set():
                try:
                    await self.check_once()
                except Exception as exc:  # the watcher must keep watching
                    log.error("health.check_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            if self._reading is not None and not self._reading.done():
                self._reading.cancel()

    async def check_once(self) -> list[PartView]:
        """One round: measure, decide, publish, record, announce. Returns what is stalled
        (this process's findings and the open episodes other copies recorded)."""
        obs = await self.observe()
        own = st.find_stalls(obs, self.limits)
        self._gauges(obs, [view_of(s, self.name) for s in own])
        views = [view_of(s, self.name) for s in own]
        self.health.publish(views)  # at once: recording may wait on a busy database
        self._log_changes(views)
        if obs.database_error is not None:
            return views
        try:
            rec = await self.record(own)
        except Exception as exc:
            log.warning("health.record_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return views
        merged = self._merge(views, rec.open_now)
        self.health.publish(merged)
        self._gauges(obs, merged)
        await self.announce(rec)
        return merged

    async def observe(self) -> st.Observation:
        loops = self._loop_idle()
        clock = self.clock()
        if loops is None or not steady(clock):
            # Stored times say nothing of real lags while a demo catches up, and between
            # its history and live phases no dispatcher runs here: spare the queries, and
            # count what is left waiting from when both hold again.
            self._unsteady = True
            self._steady_since = None
            return st.Observation(loop_idle_s=loops or {})
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read())
        try:
            # shielded: a slow read is waited for no longer, but finishes (and ends its
            # transaction) by itself; the next check waits for the same read
            oldest = await asyncio.wait_for(asyncio.shield(self._reading), timeout=self.query_timeout_s)
        except TimeoutError:
            return st.Observation(
                loop_idle_s=loops, database_error=f"no answer within {self.query_timeout_s:g} s"
            )
        except (OperationalError, DBAPIError, OSError) as exc:  # not a programming error: those raise
            return st.Observation(loop_idle_s=loops, database_error=f"{type(exc).__name__}: {exc}"[:200])
        self._floor = oldest.event_floor
        lag = lags(oldest, clock.now(), clock)
        if self._unsteady:
            # After a demo's catch-up, what was left waiting (a timer due while the
            # dispatcher restarts for live time) is counted from when real lags began.
            if self._steady_since is None:
                self._steady_since = self._mono()
            seen = self._mono() - self._steady_since
            lag = {k: None if v is None else min(v, seen) for k, v in lag.items()}
        return st.Observation(
            intake_wait_s=lag["intake_wait_s"],
            timer_late_s=lag["timer_late_s"],
            ack_wait_s=lag["ack_wait_s"],
            notification_late_s=lag["notification_late_s"],
            loop_idle_s=loops,
        )

    async def _read(self) -> Oldest:
        async with self.maker() as session:
            return await read_oldest(session, event_floor=self._floor)

    def _loop_idle(self) -> dict[str, float] | None:
        """Seconds since each loop's last round; {} in a process without a dispatcher,
        None when its dispatcher is not running right now (a demo between phases)."""
        if self.heartbeats is None:
            return {}
        current = self.heartbeats()
        if current is None:
            self._missing_since.clear()
            return None
        beats = dict(current)
        now = self._mono()
        out: dict[str, float] = {}
        for loop in st.LOOPS:
            if loop not in self.loops:
                continue  # another copy runs it (settings.dispatcher_loops)
            seen = beats.get(loop)
            if seen is None:  # not started yet (or a new dispatcher): count from when we noticed
                seen = self._missing_since.setdefault(loop, now)
            else:
                self._missing_since.pop(loop, None)
            out[loop] = max(0.0, now - seen)
        return out

    # -------------------------------------------------------------- recording

    async def record(self, own: list[st.Stall]) -> Recording:
        """Open, confirm and close episodes in one short transaction (no audit lock)."""
        wall = self._wall()
        async with self.maker() as session, session.begin():
            return await record_episodes(session, own=own, name=self.name, hold_s=self.hold_s, now=wall)

    def _merge(self, own: list[PartView], recorded: list[Episode]) -> list[PartView]:
        """This process's findings, with the start time of their episodes, plus the open
        episodes others recorded (a dispatcher copy's loop, a part only they measured)."""
        by_key = {ep.key: ep for ep in recorded}
        out: list[PartView] = []
        seen: set[str] = set()
        for v in own:
            key = st.episode_key(v.part, v.reporter or self.name)
            ep = by_key.get(key)
            out.append(replace(v, since=ep.since) if ep is not None else v)
            seen.add(key)
        out.extend(ep.view() for ep in recorded if ep.key not in seen)
        return out

    # -------------------------------------------------------------- telling people

    async def announce(self, rec: Recording) -> None:
        """Audit rows for episodes we opened or closed; admins told of those we claimed."""
        self._log_rec(rec)
        if rec.opened or rec.cleared:
            try:
                await self._audit(rec)
            except Exception as exc:
                log.warning("health.audit_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        if rec.to_announce:
            if await self._tell_admins("dispatch_stalled", [ep.view() for ep in rec.to_announce]):
                async with self.maker() as session, session.begin():
                    await mark_notified(session, rec.to_announce, now=self._wall())
        told = [ep for ep, _ in rec.cleared if ep.notified]
        if told:
            await self._tell_admins("dispatch_recovered", [ep.view() for ep in told])

    async def _audit(self, rec: Recording) -> None:
        at = self.clock().now()
        async with self.maker() as session, session.begin():
            audit.defer(session)  # the chain's lock only for the commit
            for kind, detail in audit_entries(rec, self.name):
                await audit.append(session, kind=kind.value, at=at, actor=self.name, detail=detail)

    async def _tell_admins(self, purpose: str, parts: list[PartView]) -> bool:
        """One message per active admin, in their language. True when every send worked."""
        if self.notifier is None:
            return False
        async with self.maker() as session:
            admins = await active_admins(session)
        if not admins:
            log.warning("health.no_admin_to_tell", purpose=purpose)
            return True
        messages = [
            Message(
                notification_id=0,  # not an outbox row: sent directly (the outbox may be what stalled)
                call_id=0,  # about the platform, not a call
                purpose=purpose,
                target=f"user:{username}",
                body={
                    "text": alarm_text(purpose, parts, locale),
                    "parts": [p.as_json() for p in parts],
                },
            )
            for username, locale in admins
        ]
        results = await asyncio.gather(
            *(asyncio.wait_for(self.notifier.send(m), SEND_TIMEOUT_S) for m in messages),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        for r in failed:
            log.warning("health.admin_notify_failed", purpose=purpose, error=f"{type(r).__name__}: {r}"[:300])
        return not failed

    # -------------------------------------------------------------- metrics and logs

    def _gauges(self, obs: st.Observation, parts: list[PartView]) -> None:
        on = {p.part for p in parts}
        for part in (*st.DB_PARTS, st.DATABASE, *(st.loop_part(n) for n in st.LOOPS)):
            STALLED.labels(part).set(1 if part in on else 0)
        for part, age in (
            (st.INTAKE, obs.intake_wait_s),
            (st.TIMERS, obs.timer_late_s),
            (st.ACKS, obs.ack_wait_s),
            (st.NOTIFICATIONS, obs.notification_late_s),
        ):
            OLDEST.labels(part).set(age or 0.0)
        for loop, idle in obs.loop_idle_s.items():
            LOOP_IDLE.labels(loop).set(idle)

    _last_logged: frozenset[str] = frozenset()

    def _log_changes(self, views: list[PartView]) -> None:
        now = frozenset(v.part for v in views)
        if now != self._last_logged:
            if now:
                log.error("health.dispatch_stalled", parts=sorted(now), reasons=[v.reason for v in views])
            else:
                log.info("health.dispatch_ok")
            self._last_logged = now

    def _log_rec(self, rec: Recording) -> None:
        for ep in rec.opened:
            log.error("health.stall_started", part=ep.part, reporter=ep.reporter, reason=ep.reason)
        for ep, ended in rec.cleared:
            log.warning(
                "health.stall_cleared",
                part=ep.part,
                reporter=ep.reporter,
                stalled_s=round((ended - ep.since).total_seconds(), 1),
            )


def audit_entries(rec: Recording, name: str) -> list[tuple[AuditKind, dict[str, Any]]]:
    """The audit rows of what copy ``name`` recorded: episodes it opened, then those it
    closed (``how``: recovered, or its reporting copy went silent)."""
    entries: list[tuple[AuditKind, dict[str, Any]]] = [
        (
            AuditKind.dispatch_stalled,
            {
                "part": ep.part,
                "reporter": ep.reporter,
                "episode": ep.episode,
                "kind": ep.kind,
                "age_s": round(ep.age_s, 1),
                "limit_s": ep.limit_s,
                "reason": ep.reason,
            },
        )
        for ep in rec.opened
    ]
    for ep, ended in rec.cleared:
        gone = ep.reporter is not None and ep.reporter != name
        entries.append(
            (
                AuditKind.dispatch_recovered,
                {
                    "part": ep.part,
                    "reporter": ep.reporter,
                    "episode": ep.episode,
                    "stalled_s": round((ended - ep.since).total_seconds(), 1),
                    "how": "reporter_silent" if gone else "recovered",
                },
            )
        )
    return entries
