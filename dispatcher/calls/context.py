"""What the calls' service modules share: the process's dispatch configuration, what a
transaction changed (for the shell to announce after commit), who acts, the error an
action answers with, and the per-transaction batch of rows read once and kept current.

A :class:`Batch` is created where a transaction starts (the intake's batch, the timers'
batch, one operator action) and passed down explicitly; nothing is cached in the session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.db import plans_per_statement
from device_gateway.models import DeviceEvent
from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.calls import escalation as esc
from dispatcher.calls import routing
from dispatcher.calls.dispatch_config import DispatchConfig
from dispatcher.calls.models import Call
from dispatcher.calls.travel import TravelEngine
from dispatcher.registry.models import Home, Resident

__all__ = [
    "OUTCOMES",
    "Actor",
    "AreaEvents",
    "Batch",
    "CallError",
    "DeviceNotice",
    "DispatchContext",
    "Outcome",
    "is_pg",
    "record",
]

OUTCOMES = (
    "helped_on_site",
    "taken_to_hospital",
    "false_alarm",
    "no_access",
    "handed_to_120",
    "handed_to_110",
    "handed_to_119",
    "restored",
    "cancelled_by_resident",
    "cancelled",
    "other",
)


class CallError(Exception):
    """An action that cannot be taken; ``status`` is the HTTP code the API answers with."""

    def __init__(self, message: str, status: int = 409, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = dict(detail or {})


@dataclass
class DeviceNotice:
    """An ack the device should get once the transaction committed."""

    call_id: int
    device_id: str
    event_id: str
    state: str


@dataclass
class Outcome:
    """What a transaction changed, for the shell to announce after commit."""

    calls: set[int] = field(default_factory=set)
    device_notices: list[DeviceNotice] = field(default_factory=list)
    notifications: int = 0
    # the earliest due time of the timers it stored (None: none): the timer loop is woken
    # only when that is sooner than what it already waits for
    first_timer_at: datetime | None = None

    def timer_at(self, due: datetime) -> None:
        if self.first_timer_at is None or due < self.first_timer_at:
            self.first_timer_at = due

    def merge(self, other: Outcome) -> None:
        self.calls |= other.calls
        self.device_notices.extend(other.device_notices)
        self.notifications += other.notifications
        if other.first_timer_at is not None:
            self.timer_at(other.first_timer_at)


class AreaEvents(Protocol):
    """Where the intake hands ``offline`` and ``online`` events first: mass offline
    incidents (dispatcher/incidents/service.py, ``MassOfflineIntake``), one object per
    batch holding that batch's reads. Passed in with the :class:`DispatchContext`, so
    the calls package imports nothing of the incidents package (which builds on calls)."""

    async def on_offline(
        self,
        session: AsyncSession,
        *,
        ev: DeviceEvent,
        ctx: DispatchContext,
        batch: Batch,
        actor: str,
        out: Outcome,
        now: datetime,
    ) -> int | None:
        """The incident the offline event joined or opened, or None (a call as usual)."""
        ...

    async def on_restore(
        self, session: AsyncSession, *, ev: DeviceEvent, batch: Batch, actor: str, out: Outcome, now: datetime
    ) -> int | None:
        """The incident a device came back to, or None."""
        ...


@dataclass(frozen=True)
class DispatchContext:
    """Configuration a dispatcher copy holds for the life of the process."""

    dispatch_cfg: DispatchConfig
    policies: esc.PolicySet
    engine: TravelEngine
    tz: ZoneInfo
    # a new one per intake batch (dispatcher.engine.load_context passes MassOfflineIntake)
    area_events: Callable[[], AreaEvents]
    join_window_s: float = 600.0
    notifier_channel: str = "log"
    # builds a family contact's link to their one-page view (dispatcher/family); None:
    # contacts are told without a link
    family_link: Callable[[int, int, datetime], str] | None = None
    # pages are also sent through the notification channels (config/notifications.yaml
    # routes ``page``): each new page queues a notification for its person
    page_notifications: bool = False
    # the link in a page's message: the responder app (/m/) opened on the call
    page_link: Callable[[int], str] | None = None


@dataclass(frozen=True)
class Actor:
    """Who acts: an operator (user) or the system."""

    name: str
    user_id: int | None = None
    staff_id: str | None = None


@dataclass
class Batch:
    """Rows one transaction reads once and keeps current with its own changes.

    An alarm storm opens hundreds of calls per transaction; reading the stations, homes
    and open calls once per event was most of the intake's round trips. Staffing does not
    change inside one transaction (operators send responders in their own), and registry
    rows are not written by dispatchers. The homes are held here (the session's identity
    map holds objects weakly, so ``session.get`` alone would query again)."""

    stations: dict[str, routing.StationNode] | None = None
    homes: dict[str, Home] = field(default_factory=dict)
    # home id -> the resident a call is about (the most dependent), or None
    residents: dict[str, Resident | None] = field(default_factory=dict)
    # home id -> its open calls, newest first, locked (homes prefetched by the intake only)
    open_calls: dict[str, list[Call]] = field(default_factory=dict)
    # home id -> calls opened in the last 24 h, including the ones this transaction opened
    recent_calls: dict[str, int] = field(default_factory=dict)

    def call_opened(self, call: Call) -> None:
        """Keep the lists current after this transaction opened ``call``."""
        if call.home_id in self.recent_calls:
            self.recent_calls[call.home_id] += 1
        if call.home_id in self.open_calls:
            self.open_calls[call.home_id].insert(0, call)  # newest first, as the query orders them


class _CallsStation:
    """Marks "the call's own station" as the default of :func:`record`."""


_CALLS_STATION: Final = _CallsStation()


def is_pg(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def plan_for_parameters(session: AsyncSession) -> None:
    """PostgreSQL: plan this transaction's statements for their parameters and the
    tables' current size, every time (no-op elsewhere).

    The driver prepares every statement, and after five runs PostgreSQL may keep a
    generic plan, made once from the statistics of that moment. For a query over tables
    that grow fast (events, their intake) a plan made while they were nearly empty stays
    in force until an ANALYZE: the intake's claim then compared every event with every
    taken-in one (tests/integration/test_intake_claim_plan_pg.py). A custom plan sizes
    the tables from their current pages."""
    if is_pg(session) and not plans_per_statement(session.get_bind()):
        # an engine of make_engine's plans every statement so already: no round trip
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def record(
    session: AsyncSession,
    call: Call,
    kind: AuditKind,
    *,
    at: datetime,
    actor: str,
    detail: Mapping[str, Any],
    station_id: str | _CallsStation | None = _CALLS_STATION,
) -> None:
    """One audit fact about ``call``, filed under its station unless told otherwise."""
    await audit.append(
        session,
        kind=kind.value,
        at=at,
        actor=actor,
        call_id=call.id,
        station_id=call.station_id if isinstance(station_id, _CallsStation) else station_id,
        detail=detail,
    )
