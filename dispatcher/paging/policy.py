"""Paging a person, not a station: who to page next for a call, decided from plain data.

A call routed to a station pages that station's people on duty, in the order the policy
sets: everyone at once, or one by one with a timeout each. The first to accept owns the
call and the others are told it is taken. Nobody off duty, busy, already on a call, or who
declined this call is paged; nobody is paged twice for the same call. When no one is left
(or the last page timed out), paging is exhausted and the station ladder (street, county)
goes on as its own timers say.

Pure: no I/O; the caller loads the people and the attempts and applies the decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The kinds of channel a page step may name in ``via`` (dispatcher/notifications/channels).
VIA_KINDS = ("sms", "voice", "robot", "email")


class PagingMode(StrEnum):
    all_at_once = "all_at_once"
    one_by_one = "one_by_one"


class Availability(StrEnum):
    on_duty = "on_duty"
    busy = "busy"
    off_duty = "off_duty"


class PageOutcome(StrEnum):
    pending = "pending"  # paged, no answer yet
    accepted = "accepted"
    declined = "declined"
    timed_out = "timed_out"
    withdrawn = "withdrawn"  # someone else accepted, or the call closed


ANSWERED = frozenset({PageOutcome.accepted, PageOutcome.declined})
FINISHED = frozenset(
    {PageOutcome.accepted, PageOutcome.declined, PageOutcome.timed_out, PageOutcome.withdrawn}
)


class PagingPolicy(BaseModel):
    """One paging step of an escalation policy (config/escalation.yaml, ``paging:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: PagingMode = PagingMode.one_by_one
    # How long one page may go unanswered before the next person (one by one) or before
    # paging counts as exhausted (all at once).
    timeout_s: int = Field(default=60, ge=5, le=3600)
    # Roles that carry a responder's phone; operators answer on the console instead.
    roles: tuple[str, ...] = ("responder", "nurse", "doctor", "manager")
    # At most this many people paged for one call at this station (a cap, not a target).
    max_people: int = Field(default=10, ge=1, le=100)
    # How the pages of this step reach people outside the app, in order: channel kinds
    # (sms, voice, robot, email; config/notifications.yaml picks the vendors). Empty: each person's
    # own order, else the page route's. A step with ``via`` is a round of its own: it pages
    # again, this way, the people whose earlier pages went unanswered (``voice`` for the
    # last page before the county: a phone call that reads the alarm).
    via: tuple[str, ...] = Field(default=(), max_length=8)
    # Send the page's SMS / voice … only if it is still unanswered this many seconds after
    # it went to the app ("app first, SMS if nobody looks"); unset: at once.
    fallback_after_s: int | None = Field(default=None, ge=0, le=3600)

    @model_validator(mode="after")
    def _roles_given(self) -> PagingPolicy:
        if not self.roles:
            raise ValueError("paging needs at least one role")
        bad = [w for w in self.via if w not in VIA_KINDS]
        if bad:
            raise ValueError(f"paging.via: {bad[0]!r} is not one of {', '.join(VIA_KINDS)}")
        if len(set(self.via)) != len(self.via):
            raise ValueError("paging.via names a channel twice")
        if self.fallback_after_s is not None and self.fallback_after_s >= self.timeout_s:
            raise ValueError("paging.fallback_after_s must be shorter than paging.timeout_s")
        return self

    def round_of(self, channel: str) -> bool:
        """Does a page sent (or delivered) by ``channel`` belong to this step's round? A
        step without ``via`` counts every page; one with ``via`` only those by its kinds."""
        return not self.via or channel in self.via


@dataclass(frozen=True)
class Person:
    """A member of the station's staff as paging sees them."""

    staff_id: str
    role: str
    availability: Availability
    on_call: bool = False  # already owns another open call
    rank: float = 0.0  # lower first: the roster order, or travel time when known


@dataclass(frozen=True)
class Attempt:
    """One page already sent for this call (any channel)."""

    staff_id: str
    paged_at: datetime
    outcome: PageOutcome = PageOutcome.pending
    channel: str = "app"  # how it went out (or was delivered): app sms voice robot email


@dataclass(frozen=True)
class PagingDecision:
    page: tuple[str, ...] = ()  # page these people now, in this order
    time_out: tuple[str, ...] = ()  # these pending pages are past their timeout
    owner: str | None = None  # who accepted (first acceptance)
    withdraw: tuple[str, ...] = ()  # tell these pending people the call is taken
    exhausted: bool = False  # nobody left to page and nobody pending
    next_check_at: datetime | None = None  # when to decide again (earliest timeout)
    skipped: dict[str, str] = field(default_factory=dict)  # staff_id -> why not paged


def in_round(policy: PagingPolicy, attempts: Sequence[Attempt]) -> list[Attempt]:
    """The pages a step counts: all of them, or for a ``via`` step its own round's and
    every answered one."""
    return [a for a in attempts if policy.round_of(a.channel) or a.outcome in ANSWERED]


def eligible(policy: PagingPolicy, people: Sequence[Person], attempts: Sequence[Attempt]) -> list[Person]:
    """People who may still be paged for this call, best first (``skip_reason`` says why not)."""
    paged = {a.staff_id for a in attempts}
    ok = [p for p in people if skip_reason(policy, p, paged) is None]
    return sorted(ok, key=lambda p: (p.rank, p.staff_id))


def skip_reason(policy: PagingPolicy, person: Person, paged: set[str]) -> str | None:
    if person.staff_id in paged:
        return "already_paged"
    if person.role not in policy.roles:
        return "role_not_paged"
    if person.availability is Availability.off_duty:
        return "off_duty"
    if person.availability is Availability.busy:
        return "busy"
    if person.on_call:
        return "on_another_call"
    return None


def decide(
    policy: PagingPolicy, people: Sequence[Person], attempts: Sequence[Attempt], *, now: datetime
) -> PagingDecision:
    """What to do now for one call at one station. A step with ``via`` looks only at the
    pages of its own round (those by its kinds) and at the answers: whoever declined is
    not paged again, an acceptance owns the call whatever the channel."""
    attempts = in_round(policy, attempts)
    timeout = timedelta(seconds=policy.timeout_s)
    accepted = sorted((a for a in attempts if a.outcome is PageOutcome.accepted), key=lambda a: a.paged_at)
    pending = [a for a in attempts if a.outcome is PageOutcome.pending]
    if accepted:
        owner = accepted[0].staff_id
        return PagingDecision(owner=owner, withdraw=tuple(a.staff_id for a in pending if a.staff_id != owner))

    expired = tuple(a.staff_id for a in pending if now >= a.paged_at + timeout)
    still_pending = [a for a in pending if a.staff_id not in expired]
    paged = {a.staff_id for a in attempts}
    skipped = {p.staff_id: r for p in people if (r := skip_reason(policy, p, paged)) is not None}
    room = max(0, policy.max_people - len(attempts))
    candidates = eligible(policy, people, attempts)[:room]

    if policy.mode is PagingMode.all_at_once:
        to_page = tuple(p.staff_id for p in candidates)
    else:
        # one by one: the next person only when nobody's page is still running
        to_page = (candidates[0].staff_id,) if candidates and not still_pending else ()

    waiting = [a.paged_at + timeout for a in still_pending]
    if to_page:
        waiting.append(now + timeout)
    exhausted = not to_page and not still_pending
    return PagingDecision(
        page=to_page,
        time_out=expired,
        exhausted=exhausted,
        next_check_at=min(waiting) if waiting else None,
        skipped=skipped,
    )
