"""Which visits are due: the pure planner (no I/O).

A plan is a resident's standing reason to be visited (a special-difficulty category, a
risk flag, or one emergency call's follow-up). Every plan falls due once per *period*:

- ``monthly``: the local calendar month (``2026-12``), due by the first instant of the
  next local month;
- ``weekly``: the local ISO week (``2026-W49``), Monday 00:00 to the next Monday 00:00;
- ``once``: a follow-up, from the call's close to ``follow_up_within_h`` later
  (``call-<id>``).

"Local" is the policy's time zone (Asia/Shanghai by default): 2026-01-31T16:30Z is
already February there. Times in and out are timezone-aware.

A period's visit is generated unless it already exists (the database's unique key on
plan + period makes that hold across copies too) or the resident already had a visit
done inside that period (one visit satisfies every plan of its period). A resident with
a weekly plan gets no separate monthly visit: the weekly visits cover the month.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dispatcher.visits.rules import FREQUENCY_RANK, Category, Frequency, VisitRules

__all__ = [
    "DueVisit",
    "Period",
    "PlanFacts",
    "PlanSpec",
    "ResidentFacts",
    "choose_visitor",
    "desired_plans",
    "escalation_target",
    "follow_up_plan",
    "next_due",
    "open_status",
    "period_of",
]


@dataclass(frozen=True)
class Period:
    label: str
    start: datetime  # UTC, inclusive
    due_at: datetime  # UTC, exclusive end of the period: the visit is due before it


@dataclass(frozen=True)
class ResidentFacts:
    resident_id: str
    capacity_level: int
    living_alone: bool
    categories: frozenset[Category]


@dataclass(frozen=True)
class PlanSpec:
    """A plan the policy asks for; ``key`` is unique per resident and reason."""

    key: str
    resident_id: str
    category: str  # a Category value, "risk:<rule>" or "follow_up"
    frequency: Frequency
    call_id: int | None = None
    anchor: datetime | None = None  # a follow-up's start (the call's close)


@dataclass(frozen=True)
class PlanFacts:
    """A stored plan, as the planner needs it."""

    plan_id: int
    resident_id: str
    frequency: Frequency
    call_id: int | None = None
    anchor: datetime | None = None


@dataclass(frozen=True)
class DueVisit:
    plan_id: int
    resident_id: str
    period: str
    window_start: datetime
    due_at: datetime


def _aware(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return at


def _month_start(year: int, month: int, tz: ZoneInfo) -> datetime:
    return datetime(year, month, 1, tzinfo=tz).astimezone(UTC)


def period_of(
    frequency: Frequency,
    at: datetime,
    tz: ZoneInfo,
    *,
    call_id: int | None = None,
    anchor: datetime | None = None,
    follow_up_within_h: float = 24.0,
) -> Period:
    """The period of ``frequency`` that contains ``at`` (for ``once``: the follow-up's)."""
    _aware(at, "the time")
    if frequency is Frequency.once:
        if call_id is None or anchor is None:
            raise ValueError("a one-off (follow-up) plan needs its call and anchor time")
        start = _aware(anchor, "the anchor").astimezone(UTC)
        return Period(f"call-{call_id}", start, start + timedelta(hours=follow_up_within_h))
    local = at.astimezone(tz)
    if frequency is Frequency.monthly:
        nxt = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        return Period(
            f"{local.year:04d}-{local.month:02d}",
            _month_start(local.year, local.month, tz),
            _month_start(*nxt, tz),
        )
    monday = local.date() - timedelta(days=local.weekday())
    iso = monday.isocalendar()
    start = datetime(monday.year, monday.month, monday.day, tzinfo=tz)
    nxt_monday = monday + timedelta(days=7)
    end = datetime(nxt_monday.year, nxt_monday.month, nxt_monday.day, tzinfo=tz)
    return Period(f"{iso.year:04d}-W{iso.week:02d}", start.astimezone(UTC), end.astimezone(UTC))


def _flagged(r: ResidentFacts, rules: VisitRules) -> list[tuple[str, Frequency]]:
    hits = []
    for rule in rules.risk_rules:
        if rule.min_capacity_level is not None and r.capacity_level < rule.min_capacity_level:
            continue
        if rule.living_alone is not None and r.living_alone != rule.living_alone:
            continue
        if rule.categories_any and not (set(rule.categories_any) & r.categories):
            continue
        hits.append((f"risk:{rule.name}", rule.every))
    return hits


def desired_plans(r: ResidentFacts, rules: VisitRules) -> list[PlanSpec]:
    """The recurring plans the policy asks for this resident: one per special-difficulty
    category the policy visits (living alone counts from the registry's flag too) and one
    per matching risk rule."""
    cats = set(r.categories)
    if r.living_alone:
        cats.add(Category.living_alone)
    out = [
        PlanSpec(f"{r.resident_id}:{c.value}", r.resident_id, c.value, rules.special_difficulty_every)
        for c in sorted(cats & set(rules.categories))
    ]
    out += [
        PlanSpec(f"{r.resident_id}:{name}", r.resident_id, name, every) for name, every in _flagged(r, rules)
    ]
    return out


def follow_up_plan(resident_id: str, call_id: int, closed_at: datetime) -> PlanSpec:
    """The one-off plan: visit ``resident_id`` within the policy's hours after call ``call_id`` closed."""
    return PlanSpec(
        f"{resident_id}:follow_up:{call_id}",
        resident_id,
        "follow_up",
        Frequency.once,
        call_id=call_id,
        anchor=_aware(closed_at, "the close time").astimezone(UTC),
    )


def next_due(
    plans: Iterable[PlanFacts],
    *,
    last_done: Mapping[str, datetime],
    existing: Iterable[tuple[int, str]],
    now: datetime,
    rules: VisitRules,
) -> list[DueVisit]:
    """The visits to create now: each plan's current period (a follow-up's own period,
    once its anchor has passed), unless it exists, the resident's last done visit already
    falls in it, or (for a monthly plan) the resident has a weekly plan.

    ``last_done``: resident id → time of their latest done visit. ``existing``: the
    (plan id, period) pairs already stored. Calling it again with its own result added
    to ``existing`` gives nothing: generation is idempotent.
    """
    _aware(now, "now")
    tz = rules.tz
    plans = list(plans)
    have = set(existing)
    best: dict[str, int] = {}
    for p in plans:
        if p.frequency in FREQUENCY_RANK:
            rank = FREQUENCY_RANK[p.frequency]
            best[p.resident_id] = min(best.get(p.resident_id, rank), rank)
    out: list[DueVisit] = []
    for p in sorted(plans, key=lambda p: p.plan_id):
        if p.frequency in FREQUENCY_RANK and FREQUENCY_RANK[p.frequency] > best[p.resident_id]:
            continue  # covered by the resident's more frequent plan
        per = period_of(
            p.frequency,
            now,
            tz,
            call_id=p.call_id,
            anchor=p.anchor,
            follow_up_within_h=rules.follow_up_within_h,
        )
        if (p.plan_id, per.label) in have or now < per.start:
            continue
        done = last_done.get(p.resident_id)
        if done is not None and per.start <= done < per.due_at:
            continue
        have.add((p.plan_id, per.label))
        out.append(DueVisit(p.plan_id, p.resident_id, per.label, per.start, per.due_at))
    return out


def open_status(due_at: datetime, now: datetime, rules: VisitRules) -> str:
    """An open visit's status at ``now``: due, late (past due) or missed (past due + grace)."""
    if now < due_at:
        return "due"
    if now < due_at + timedelta(hours=rules.missed_after_h):
        return "late"
    return "missed"


def escalation_target(due_at: datetime, now: datetime, rules: VisitRules) -> int:
    """How far an open visit should have escalated by ``now``: 0 not yet, 1 the station
    manager, 2 the street centre."""
    esc = rules.escalation
    if now >= due_at + timedelta(hours=esc.street_after_h):
        return 2
    if now >= due_at + timedelta(hours=esc.station_manager_after_h):
        return 1
    return 0


def choose_visitor(resident_id: str, rostered: Sequence[str]) -> str | None:
    """The named visitor for a resident among the station's rostered staff ids: the same
    person for the same resident on every copy and every round (a stable hash), none
    when nobody is on the roster."""
    if not rostered:
        return None
    staff = sorted(set(rostered))
    return staff[zlib.crc32(resident_id.encode("utf-8")) % len(staff)]
