"""The cost guard's counts shared by every dispatcher copy, kept in the audit log.

Before each paid send (SMS, voice) a copy **reserves** it: in a transaction of its own it
takes the audit chain's lock (the single ``audit_head`` row: a row lock on PostgreSQL,
the write lock on SQLite), reads the budget's rows, checks the caps and, when allowed,
appends a ``cost_reserved`` row, and commits, before the send goes out. The lock makes the
check and the count one step for all copies, and the commit makes the reservation visible
to them at once: a send in flight in another copy's open outbox round is already counted,
so the caps hold exactly, whatever the number of copies.

The receipt settles the reservation: the attempt row the outbox writes for the send
(``notification_sent`` / ``notification_failed``) names it (``reservation``). A send the
vendor provably did not make (throttled, rejected, a vendor error answer) releases it;
delivered sends and attempts whose answer never came keep it. Until the attempt row is
committed, this copy remembers its own releases. A copy that dies between reserving and
recording leaves the reservation counted (the send may have gone out).

Attempt rows without a reservation (written before reservations existed, or by counters
that only ``record`` in memory) still count by themselves; ``usage`` then adds this copy's
in-memory sends that its rows (actor = its name) do not show yet.

Cost alerts (``cost_guard_hit``) are claimed the same way (``claim_alert``): under the
lock, only the first copy to raise one for a call (per-call cap) or a clock hour (hourly
cap) records it and queues the supervisors' alert.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.audit.models import AuditRow
from dispatcher.notifications.channels.delivery import InMemoryCostCounters
from dispatcher.notifications.channels.models import ChannelKind, ReceiptStatus
from dispatcher.notifications.channels.policy import HOUR_S, CostUsage, CostVerdict, counts_against_cost

ATTEMPT_KINDS = (AuditKind.notification_sent.value, AuditKind.notification_failed.value)
ALERT_KIND = AuditKind.cost_guard_hit.value
RESERVED_KIND = AuditKind.cost_reserved.value
LEDGER_KINDS = (*ATTEMPT_KINDS, ALERT_KIND, RESERVED_KIND)
AlertKey = tuple[str, str, int | None]
PAID_KINDS = (ChannelKind.sms, ChannelKind.voice)
# an attempt row is stamped with its round's start, a little before its reservation:
# releases are read this much further back than the hour
RELEASE_MARGIN_S = 900.0
_RELEASE_MEMORY = 10_000
_CALL_MEMORY = 10_000


def paid_kind(detail: Any) -> ChannelKind | None:
    """The kind of a paid send that an attempt row keeps in the budget (the same rule as
    ``counts_against_cost``: delivered, or sent without an answer), else None."""
    if not isinstance(detail, dict):
        return None
    try:
        kind = ChannelKind(str(detail.get("kind")))
        status = ReceiptStatus(str(detail.get("status")))
    except ValueError:  # blocked by the guard, or a row of another shape
        return None
    code = detail.get("error_code")
    if kind not in PAID_KINDS or not counts_against_cost(status, code if isinstance(code, str) else None):
        return None
    return kind


def alert_key(kind: str, scope: str, call_id: int | None, at: float) -> AlertKey:
    """One cost alert per call for a per-call cap, per clock hour for an hourly one."""
    return (kind, scope, call_id if scope == "call" else int(at // HOUR_S))


def _alert_of(row: Any) -> AlertKey | None:
    call_id, _actor, detail, row_kind, at = row
    if row_kind != ALERT_KIND or not isinstance(detail, dict):
        return None
    kind, scope = detail.get("kind"), detail.get("scope")
    if not isinstance(kind, str) or not isinstance(scope, str):
        return None
    when = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return alert_key(kind, scope, call_id, when.timestamp())


def _reservation(detail: Any) -> str | None:
    value = detail.get("reservation") if isinstance(detail, dict) else None
    return value if isinstance(value, str) and value else None


def _reserved_kind(detail: Any) -> ChannelKind | None:
    try:
        kind = ChannelKind(str(detail.get("kind"))) if isinstance(detail, dict) else None
    except ValueError:
        return None
    return kind if kind in PAID_KINDS else None


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _released_by_rows(rows: Iterable[Any]) -> set[str]:
    """Reservations whose attempt row says nothing was sent."""
    gone: set[str] = set()
    for _call, _actor, detail, row_kind, _at in rows:
        rid = _reservation(detail) if row_kind in ATTEMPT_KINDS else None
        if rid is not None and paid_kind(detail) is None:
            gone.add(rid)
    return gone


def tally(
    rows: Iterable[Any], actor: str, *, since: datetime | None = None, released: Iterable[str] = ()
) -> tuple[Counter[ChannelKind], Counter[ChannelKind]]:
    """(every copy's, this copy's) paid sends in ``rows`` (call_id, actor, detail, kind, at),
    rows at or before ``since`` left out. A reservation counts unless released (by an
    attempt row naming it that does not count, or in ``released``); an attempt row counts
    by itself only when it names no reservation. "This copy's" are its attempt rows without
    one (matched against the in-memory sends of ``record``)."""
    rows = list(rows)
    gone = set(released) | _released_by_rows(rows)
    every: Counter[ChannelKind] = Counter()
    mine: Counter[ChannelKind] = Counter()
    for _call, row_actor, detail, row_kind, at in rows:
        if since is not None and _aware(at) <= since:
            continue
        if row_kind == RESERVED_KIND:
            kind = _reserved_kind(detail)
            if kind is not None and _reservation(detail) not in gone:
                every[kind] += 1
        elif row_kind in ATTEMPT_KINDS and _reservation(detail) is None:
            kind = paid_kind(detail)
            if kind is not None:
                every[kind] += 1
                if row_actor == actor:
                    mine[kind] += 1
    return every, mine


_COLUMNS = (AuditRow.call_id, AuditRow.actor, AuditRow.detail, AuditRow.kind, AuditRow.at)


class SharedCostCounters:
    """Reservations and counts in the audit log (all copies); see the module's doc."""

    def __init__(self, maker: async_sessionmaker[AsyncSession], actor: str) -> None:
        self.maker = maker
        self.actor = actor
        self._local = InMemoryCostCounters()  # this copy's sends counted only in memory
        self._hour_all: Counter[ChannelKind] = Counter()
        self._hour_mine: Counter[ChannelKind] = Counter()
        self._call_all: dict[int, Counter[ChannelKind]] = {}
        self._call_mine: dict[int, Counter[ChannelKind]] = {}
        # cost alerts already raised by any copy (see ``alert_key``)
        self.alerted: set[AlertKey] = set()
        # reservations this copy released whose attempt rows are not committed yet
        self._released: dict[str, None] = {}

    async def refresh(self, call_id: int | None, now: float) -> None:
        """Read the rolling hour's paid sends and, for ``call_id``, the call's."""
        async with self.maker() as session:
            await self._read(session, call_id, now)

    async def _read(self, session: AsyncSession, call_id: int | None, now: float) -> None:
        since = datetime.fromtimestamp(now - HOUR_S, UTC)
        base = select(*_COLUMNS).where(AuditRow.kind.in_(LEDGER_KINDS))
        margin = since - timedelta(seconds=RELEASE_MARGIN_S)
        hour_rows = (await session.execute(base.where(AuditRow.at > margin))).all()
        call_rows: list[Any] = []
        if call_id is not None:
            call_rows = list((await session.execute(base.where(AuditRow.call_id == call_id))).all())
        released = list(self._released)
        self._hour_all, self._hour_mine = tally(hour_rows, self.actor, since=since, released=released)
        self.alerted = {k for row in (*hour_rows, *call_rows) if (k := _alert_of(row)) is not None}
        if call_id is not None:
            if len(self._call_all) > _CALL_MEMORY:  # only the calls being delivered matter
                self._call_all, self._call_mine = {}, {}
            self._call_all[call_id], self._call_mine[call_id] = tally(
                call_rows, self.actor, released=released
            )

    async def reserve(
        self, kind: ChannelKind, call_id: int | None, now: float, check: Callable[[CostUsage], CostVerdict]
    ) -> tuple[CostVerdict, str | None]:
        """Under the audit chain's lock: read the budget, ``check`` it and, when allowed,
        commit a ``cost_reserved`` row (see the module's doc)."""
        reservation: str | None = None
        async with self.maker() as session, session.begin():
            await audit.lock_head(session)  # one reserver at a time, across every copy
            await self._read(session, call_id, now)
            verdict = check(self.usage(kind, call_id, now))
            if verdict.allowed:
                reservation = uuid.uuid4().hex
                await audit.append(
                    session,
                    kind=RESERVED_KIND,
                    at=datetime.fromtimestamp(now, UTC),
                    actor=self.actor,
                    call_id=call_id,
                    detail={"kind": kind.value, "reservation": reservation},
                )
        if reservation is not None:
            self._hour_all[kind] += 1
            if call_id is not None:
                self._call_all.setdefault(call_id, Counter())[kind] += 1
        return verdict, reservation

    def settle(self, reservation: str, counted: bool) -> None:
        """The send's answer; a release is remembered until the attempt row says it too."""
        if counted:
            return
        if len(self._released) >= _RELEASE_MEMORY:
            self._released.pop(next(iter(self._released)))
        self._released[reservation] = None

    async def claim_alert(self, key: AlertKey, write: Callable[[AsyncSession], Awaitable[None]]) -> bool:
        """Record a cost alert once across copies: under the chain's lock, ``write`` (the
        ``cost_guard_hit`` row and what goes with it) runs and commits only when no copy
        recorded this alert before. True when this call claimed it."""
        _kind, scope, ref = key
        if scope == "call":
            where = AuditRow.call_id == ref
        else:
            where = AuditRow.at >= datetime.fromtimestamp((ref or 0) * HOUR_S, UTC)
        async with self.maker() as session, session.begin():
            await audit.lock_head(session)
            rows = (await session.execute(select(*_COLUMNS).where(AuditRow.kind == ALERT_KIND, where))).all()
            if any(_alert_of(row) == key for row in rows):
                self.alerted.add(key)
                return False
            await write(session)
        self.alerted.add(key)
        return True

    def raised(self, key: AlertKey) -> bool:
        """Did some copy already record this cost alert (as of the last read)?"""
        return key in self.alerted

    def usage(self, kind: ChannelKind, call_id: int | None, now: float) -> CostUsage:
        local = self._local.usage(kind, call_id, now)
        hour = self._hour_all[kind] + max(0, local.last_hour - self._hour_mine[kind])
        per_call = 0
        if call_id is not None:
            recorded = self._call_all.get(call_id, Counter())[kind]
            mine = self._call_mine.get(call_id, Counter())[kind]
            per_call = recorded + max(0, local.per_call - mine)
        return CostUsage(per_call=per_call, last_hour=hour)

    def record(self, kind: ChannelKind, call_id: int | None, now: float) -> None:
        self._local.record(kind, call_id, now)

    def release(self, kind: ChannelKind, call_id: int | None, at: float) -> None:
        self._local.release(kind, call_id, at)
