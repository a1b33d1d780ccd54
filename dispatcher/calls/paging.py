"""Paging in the call flow: loads a station's people and a call's pages, applies the pure decision.

The caller owns the transaction; every change here is an audit row in the same
transaction. When the notification channels route pages, each new page is also an
outbox notification (sent by a dispatcher after the commit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.one_of import one_of
from device_gateway.models import DeviceEvent
from dispatcher.audit import service as audit
from dispatcher.calls import bulk
from dispatcher.calls.context import DispatchContext, is_pg
from dispatcher.calls.models import OPEN_STATUSES, Assignment, Call, CallEvent
from dispatcher.notifications.channels.order import app_only, parse_order
from dispatcher.notifications.models import Notification, NotificationStatus
from dispatcher.paging.models import Page
from dispatcher.paging.policy import (
    Attempt,
    Availability,
    PageOutcome,
    PagingDecision,
    PagingPolicy,
    Person,
    decide,
)
from dispatcher.registry.models import Home, Resident, Staff

# Audit kinds of paging (their labels are translated with the others in the console).
PAGED = "paged"
PAGE_ACCEPTED = "page_accepted"
PAGE_DECLINED = "page_declined"
PAGE_TIMED_OUT = "page_timed_out"
PAGE_WITHDRAWN = "page_withdrawn"
AVAILABILITY_SET = "availability_set"


class PageOut(BaseModel):
    """One person paged for the call: who, how they were reached and what they answered."""

    page_id: int
    staff_id: str
    name: str
    station_id: str
    channel: str  # app, or the kind of channel that delivered the page (sms, voice …)
    paged_at: datetime
    outcome: str  # pending accepted declined timed_out withdrawn
    answered_at: datetime | None
    delivery: str  # pending delivered failed
    receipt: str


class PagingError(Exception):
    """A page answered by someone else, twice, or after it stopped counting."""


def availability_of(staff: Staff) -> Availability:
    if not staff.on_duty:
        return Availability.off_duty
    return Availability.busy if staff.busy else Availability.on_duty


async def people_at(session: AsyncSession, *, station_id: str) -> list[Person]:
    """The station's staff as paging sees them (roster order: name, then id)."""
    people, _ = await _rosters(session, [station_id])
    return people.get(station_id, [])


async def _rosters(
    session: AsyncSession, station_ids: Sequence[str]
) -> tuple[dict[str, list[Person]], dict[str, str]]:
    """The stations' people as paging sees them, each station in roster order (name, then
    id), and each person's own channel order (staff.channels): one statement for any
    number of stations (whether a person is on an open call is a column of it)."""
    on_a_call = (
        select(Assignment.id)
        .join(Call, Call.id == Assignment.call_id)
        .where(
            Assignment.staff_id == Staff.id,
            Assignment.active.is_(True),
            Call.status.in_([str(s) for s in OPEN_STATUSES]),
        )
        .exists()
    )
    rows = (
        await session.execute(
            select(Staff, on_a_call.label("on_a_call"))
            .where(one_of(Staff.station_id, sorted(set(station_ids))))
            .order_by(Staff.station_id, Staff.name, Staff.id)
        )
    ).all()
    staff = [s for s, _ in rows]
    busy_with_calls = {s.id for s, busy in rows if busy}
    people: dict[str, list[Person]] = {sid: [] for sid in station_ids}
    for s in staff:
        roster = people[s.station_id]
        roster.append(
            Person(s.id, s.role, availability_of(s), on_call=s.id in busy_with_calls, rank=float(len(roster)))
        )
    return people, {s.id: s.channels for s in staff}


async def pages_of(session: AsyncSession, *, call_id: int, station_id: str | None = None) -> list[Page]:
    query = select(Page).where(Page.call_id == call_id)
    if station_id is not None:
        query = query.where(Page.station_id == station_id)
    return list((await session.execute(query.order_by(Page.paged_at, Page.id))).scalars().all())


@dataclass(frozen=True)
class _Message:
    """What a page's message says about its call, besides the call's own columns."""

    call: Call
    address: str
    resident: str
    event_types: list[str]


@dataclass
class PagingReads:
    """What paging reads in one transaction, read once and kept current with its own
    changes: each call's pages (the new ones added as they are made), each station's
    people with their own channel order (staffing does not change inside one
    transaction: operators send responders in their own), and what a page's message
    says about each call.

    A timer batch loads them for all its page_station timers at once (:meth:`load`),
    after locking their calls (a page is answered under its call's lock, so the pages
    read stay current until the commit); whatever is missing is read when first needed,
    so one empty instance does what a single step needs."""

    pages: dict[int, list[Page]] = field(default_factory=dict)  # call id -> all its pages
    people: dict[str, list[Person]] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)  # staff id -> staff.channels
    messages: dict[int, _Message] = field(default_factory=dict)
    # PostgreSQL, a batch's reads (load with several calls): ids for its new pages, drawn
    # ahead in one statement, so they go in as one INSERT rather than a flush per step
    steps: int = 0  # the paging steps the batch expects (load's calls)
    page_ids: list[int] = field(default_factory=list)

    async def new_page_ids(self, session: AsyncSession, n: int) -> list[int] | None:
        """Ids for ``n`` new pages, or None: flush them for their ids (SQLite, a single
        step, a transaction that does not defer its rows). A batch draws ids for its
        steps' pages ahead (at least one a step), so a round of one-by-one pages is one
        draw for the whole batch."""
        if self.steps < 2 or not bulk.deferring(session) or not is_pg(session):
            return None
        if len(self.page_ids) < n:
            self.page_ids += await bulk.draw_ids(session, "pages", max(n - len(self.page_ids), self.steps))
        ids, self.page_ids = self.page_ids[:n], self.page_ids[n:]
        return ids

    async def load(
        self, session: AsyncSession, *, call_ids: Sequence[int], station_ids: Sequence[str], messages: bool
    ) -> None:
        """The calls' pages and the stations' people (and, with ``messages``, what the
        calls' page messages say) in a fixed number of statements."""
        self.steps += len(set(call_ids))
        calls = sorted(set(call_ids) - set(self.pages))
        if calls:
            found = (
                await session.scalars(
                    select(Page)
                    .where(one_of(Page.call_id, calls))
                    .order_by(Page.call_id, Page.paged_at, Page.id)
                )
            ).all()
            for cid in calls:
                self.pages[cid] = []
            for page in found:
                self.pages[page.call_id].append(page)
        stations = sorted(set(station_ids) - set(self.people))
        if stations:
            people, channels = await _rosters(session, stations)
            self.people.update(people)
            self.channels.update(channels)
        if messages:
            await self._load_messages(session, sorted(set(call_ids) - set(self.messages)))

    async def pages_at(self, session: AsyncSession, *, call_id: int, station_id: str) -> list[Page]:
        """The call's pages at the station, oldest first (paged_at, then id)."""
        if call_id not in self.pages:
            self.pages[call_id] = await pages_of(session, call_id=call_id)
        return [p for p in self.pages[call_id] if p.station_id == station_id]

    def paged(self, call_id: int, pages: Sequence[Page]) -> None:
        """Pages this transaction made (stored, with their ids), newest last."""
        self.pages.setdefault(call_id, []).extend(pages)

    async def people_at(self, session: AsyncSession, *, station_id: str) -> list[Person]:
        if station_id not in self.people:
            await self.load(session, call_ids=(), station_ids=(station_id,), messages=False)
        return self.people[station_id]

    async def channels_of(self, session: AsyncSession, staff_ids: Sequence[str]) -> dict[str, str]:
        """Each person's own channel order (staff.channels; "" when they chose none)."""
        missing = sorted(set(staff_ids) - set(self.channels))
        if missing:
            rows = await session.execute(select(Staff.id, Staff.channels).where(one_of(Staff.id, missing)))
            self.channels.update({sid: ch for sid, ch in rows.all()})
        return {sid: self.channels[sid] for sid in staff_ids if sid in self.channels}

    async def message(self, session: AsyncSession, call_id: int) -> _Message:
        if call_id not in self.messages:
            await self._load_messages(session, [call_id])
        return self.messages[call_id]

    async def _load_messages(self, session: AsyncSession, call_ids: Sequence[int]) -> None:
        if not call_ids:
            return
        rows = (
            await session.execute(
                select(Call, Home.address, Resident.name)
                .join(Home, Home.id == Call.home_id)
                .outerjoin(Resident, Resident.id == Call.resident_id)
                .where(one_of(Call.id, call_ids))
            )
        ).all()
        types: dict[int, set[str]] = {cid: set() for cid in call_ids}
        for cid, typ in await session.execute(
            select(CallEvent.call_id, DeviceEvent.type)
            .join(DeviceEvent, CallEvent.event_pk == DeviceEvent.id)
            .where(one_of(CallEvent.call_id, call_ids))
        ):
            types[cid].add(typ)
        for call, address, resident in rows:
            self.messages[call.id] = _Message(call, address or "", resident or "", sorted(types[call.id]))


@dataclass(frozen=True)
class StepResult:
    decision: PagingDecision
    new_pages: list[Page]


async def step(
    session: AsyncSession,
    *,
    call_id: int,
    station_id: str,
    policy: PagingPolicy,
    now: datetime,
    actor: str = "dispatcher",
    channel: str = "app",
    ctx: DispatchContext | None = None,
    reads: PagingReads | None = None,
) -> StepResult:
    """Decide and record the next paging step of one call at one station. With a context
    whose notification channels route pages, each new page also queues a notification
    for its person (SMS, voice … reach them when the app is closed). A step with ``via``
    (the voice round before the county) needs those channels; without them it does
    nothing. ``reads``: the transaction's paging reads (a timer batch's, loaded for all
    its calls at once); without them the step reads what it needs itself."""
    if policy.via and (ctx is None or not ctx.page_notifications):
        # a round by SMS / voice … with no channel to send it: nothing to do (the app
        # pages of the other steps go on)
        return StepResult(PagingDecision(), [])
    reads = reads if reads is not None else PagingReads()
    pages = await reads.pages_at(session, call_id=call_id, station_id=station_id)
    attempts = [Attempt(p.staff_id, p.paged_at, PageOutcome(p.outcome), p.channel) for p in pages]
    decision = decide(policy, await reads.people_at(session, station_id=station_id), attempts, now=now)
    timeout = timedelta(seconds=policy.timeout_s)
    for page in pages:  # this step's round only (a ``via`` step leaves the others' pages alone)
        if (
            page.staff_id in decision.time_out
            and page.outcome == PageOutcome.pending
            and policy.round_of(page.channel)
            and now >= page.paged_at + timeout
        ):
            page.outcome = PageOutcome.timed_out
            page.answered_at = now
            await audit.append(
                session,
                kind=PAGE_TIMED_OUT,
                at=now,
                actor=actor,
                call_id=call_id,
                station_id=station_id,
                detail={"staff_id": page.staff_id, "page_id": page.id},
            )
    for page in pages:
        if page.staff_id in decision.withdraw and page.outcome == PageOutcome.pending:
            await _withdraw(session, page, now=now, actor=actor)
    if policy.via:
        channel = policy.via[0]
    new_pages = []
    ids = await reads.new_page_ids(session, len(decision.page)) if decision.page else None
    for i, staff_id in enumerate(decision.page):
        page = Page(call_id=call_id, station_id=station_id, staff_id=staff_id, channel=channel, paged_at=now)
        if ids is not None:  # drawn ahead: goes in with the batch's other new pages
            page.id = ids[i]
            bulk.add_object(session, page)
        else:
            session.add(page)
        new_pages.append(page)
    if new_pages:
        if ids is None:
            await session.flush()  # their ids: the audit rows and the messages name them
        reads.paged(call_id, new_pages)
    for page in new_pages:
        await audit.append(
            session,
            kind=PAGED,
            at=now,
            actor=actor,
            call_id=call_id,
            station_id=station_id,
            detail={
                "staff_id": page.staff_id,
                "page_id": page.id,
                "channel": channel,
                "mode": policy.mode,
                **({"via": list(policy.via)} if policy.via else {}),
            },
        )
    if new_pages and ctx is not None and ctx.page_notifications:
        await queue_page_notifications(
            session, call_id=call_id, pages=new_pages, ctx=ctx, now=now, policy=policy, reads=reads
        )
    return StepResult(decision, new_pages)


async def queue_page_notifications(
    session: AsyncSession,
    *,
    call_id: int,
    pages: list[Page],
    ctx: DispatchContext,
    now: datetime,
    policy: PagingPolicy | None = None,
    reads: PagingReads | None = None,
) -> None:
    """One outbox notification per page (purpose ``page``, target ``staff:<id>``) with
    what the message says: the call, its priority, the events, the address and the link
    to the app. The outbox writes the delivery back on the page.

    ``channels`` in the body is the order the channels try: the step's ``via`` (the voice
    call before the county), else the person's own (staff.channels), else the route's.
    Someone who chose the app alone gets no notification outside it. With the step's
    ``fallback_after_s`` the notification waits that long and is not sent if the page
    was answered meanwhile (the outbox checks the page before sending)."""
    reads = reads if reads is not None else PagingReads()
    msg = await reads.message(session, call_id)
    call = msg.call
    link = ctx.page_link(call_id) if ctx.page_link is not None else f"/m/?call={call_id}"
    via = list(policy.via) if policy is not None else []
    delay = timedelta(seconds=policy.fallback_after_s or 0) if policy is not None else timedelta()
    own = await reads.channels_of(session, [p.staff_id for p in pages])
    for page in pages:
        order = via or list(parse_order(own.get(page.staff_id) or ""))
        if app_only(order):
            continue
        bulk.add(  # a loop's transaction: one INSERT with its other notifications, at the end
            session,
            Notification,
            {
                "call_id": call_id,
                "channel": ctx.notifier_channel,
                "purpose": "page",
                "target": f"staff:{page.staff_id}",
                "body": {
                    "page_id": page.id,
                    "call_id": call_id,
                    "priority": call.priority,
                    "station_id": page.station_id,
                    "event_class": call.event_class,
                    "event_types": msg.event_types,
                    "address": msg.address,
                    "resident": msg.resident,
                    "link": link,
                    **({"channels": order} if order else {}),
                },
                "status": NotificationStatus.pending.value,
                "attempts": 0,
                "next_attempt_at": now + delay,
                "created_at": now,
            },
        )


async def _withdraw(session: AsyncSession, page: Page, *, now: datetime, actor: str) -> None:
    page.outcome = PageOutcome.withdrawn
    page.answered_at = now
    await audit.append(
        session,
        kind=PAGE_WITHDRAWN,
        at=now,
        actor=actor,
        call_id=page.call_id,
        station_id=page.station_id,
        detail={"staff_id": page.staff_id, "page_id": page.id},
    )


async def withdraw_pending(session: AsyncSession, *, call_id: int, now: datetime, actor: str) -> int:
    """Withdraw every page of the call still waiting for an answer (the call was taken
    on the console, or closed); returns how many."""
    pending = [p for p in await pages_of(session, call_id=call_id) if p.outcome == PageOutcome.pending]
    for page in pending:
        await _withdraw(session, page, now=now, actor=actor)
    return len(pending)


async def answer(
    session: AsyncSession,
    *,
    page_id: int,
    staff_id: str,
    accept: bool,
    now: datetime,
    actor: str,
    reason: str = "",
) -> Page:
    """A paged person accepts or declines. The first acceptance owns the call: the rest of
    that call's pending pages are withdrawn in the same transaction, and an answer to a page
    that is no longer pending is refused. The call's row is locked first (FOR UPDATE on
    PostgreSQL; SQLite serialises writers), so two copies answering at once cannot both win."""
    found = await session.get(Page, page_id)
    if found is None or found.staff_id != staff_id:
        raise PagingError("no such page for this person")
    await session.execute(select(Call.id).where(Call.id == found.call_id).with_for_update())
    page = await session.get(Page, page_id, populate_existing=True)
    assert page is not None
    if page.outcome != PageOutcome.pending:
        raise PagingError(f"this page is already {page.outcome}")
    siblings = await pages_of(session, call_id=page.call_id)
    if accept and any(p.outcome == PageOutcome.accepted for p in siblings):
        raise PagingError("someone else has already accepted this call")
    page.outcome = PageOutcome.accepted if accept else PageOutcome.declined
    page.answered_at = now
    page.reason = reason[:200]
    await audit.append(
        session,
        kind=PAGE_ACCEPTED if accept else PAGE_DECLINED,
        at=now,
        actor=actor,
        call_id=page.call_id,
        station_id=page.station_id,
        detail={"staff_id": staff_id, "page_id": page.id, **({"reason": reason[:200]} if reason else {})},
    )
    if accept:  # the others are told it is taken
        for other in siblings:
            if other.id != page.id and other.outcome == PageOutcome.pending:
                await _withdraw(session, other, now=now, actor=actor)
    return page


async def set_availability(
    session: AsyncSession, *, staff_id: str, availability: Availability, now: datetime, actor: str
) -> Staff:
    """A responder's own on duty / busy / off duty; an audit row names them."""
    staff = await session.get(Staff, staff_id)
    if staff is None:
        raise PagingError(f"unknown staff {staff_id}")
    staff.on_duty = availability is not Availability.off_duty
    staff.busy = availability is Availability.busy
    await audit.append(
        session,
        kind=AVAILABILITY_SET,
        at=now,
        actor=actor,
        station_id=staff.station_id,
        detail={"staff_id": staff_id, "availability": availability},
    )
    return staff


async def page_rows(session: AsyncSession, *, call_id: int) -> list[PageOut]:
    rows = (
        await session.execute(
            select(Page, Staff.name)
            .join(Staff, Staff.id == Page.staff_id)
            .where(Page.call_id == call_id)
            .order_by(Page.paged_at, Page.id)
        )
    ).all()
    return [
        PageOut(
            page_id=p.id,
            staff_id=p.staff_id,
            name=name,
            station_id=p.station_id,
            channel=p.channel,
            paged_at=p.paged_at,
            outcome=p.outcome,
            answered_at=p.answered_at,
            delivery=p.delivery,
            receipt=p.receipt,
        )
        for p, name in rows
    ]
