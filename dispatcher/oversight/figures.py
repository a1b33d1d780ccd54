"""Response-time figures: per call, from its audit rows, and aggregated into groups.

Pure functions over plain data, so every figure a supervisor hands a regulator can be
recomputed by hand from the audit log and checked in tests without a database.

Definitions (docs/oversight.md says the same in prose):

* A call **starts** at its first ``event_received`` row: the moment the platform held
  the alarm. Every duration is measured from there, and a call belongs to the period
  (day, week, month) in which it started, read in its station's time zone.
* **answer** = start → first ``acknowledged`` row. A call an operator closed without
  acknowledging first (resolved or cancelled by a ``user:`` actor) counts as answered
  when it was closed: someone did handle it. **dispatch** = start → first
  ``responder_dispatched``; **arrival** = start → first ``on_scene``; **close** =
  start → first ``resolved``, ``cancelled`` or ``restored``.
* Percentiles use the **nearest-rank** method everywhere: the p-th percentile of n
  sorted values is the value at 1-based rank ⌈p·n/100⌉ (the median is p50). It always
  returns a time that really happened, which is what an auditor can point at.
* A target is **met** when the time is within the limit, **missed** when it is over the
  limit or when the call waited past the limit without it (until it closed, or until
  now), and **not applicable** when the call ended, or is still running, inside the limit
  without it (a resident cancelling after 20 s was not a missed answer). Compliance =
  met ÷ (met + missed). Arrival targets apply only to calls a responder was sent to.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from operator import attrgetter
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from dispatcher.audit.chain import AuditKind
from dispatcher.oversight.targets import Targets
from dispatcher.oversight.workhours import trouble_state

__all__ = [
    "GROUPINGS",
    "METRICS",
    "PERCENTILES",
    "REPORT_TZ",
    "AuditFact",
    "CallFigures",
    "CallInfo",
    "CallMarks",
    "Grouping",
    "Period",
    "Stats",
    "aggregate",
    "call_figures",
    "default_period",
    "figures_maker",
    "from_us",
    "graded_answer_times",
    "group_rows",
    "in_period",
    "marks_from_rows",
    "nearest_rank",
    "period_bounds",
    "stats",
    "summary",
    "target_column",
    "target_state",
    "to_us",
    "utc_window",
]

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
METRICS: tuple[str, ...] = ("answer", "dispatch", "arrival", "close")
Grouping = Literal["station", "street", "county", "type", "priority", "hour", "day", "week", "month"]
GROUPINGS: tuple[Grouping, ...] = (
    "station",
    "street",
    "county",
    "type",
    "priority",
    "hour",
    "day",
    "week",
    "month",
)
NONE_KEY = "(none)"

_CLOSE_KINDS = frozenset({AuditKind.resolved.value, AuditKind.cancelled.value, AuditKind.restored.value})


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class AuditFact:
    """The part of an audit row the figures read."""

    at: datetime
    kind: str
    actor: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


class CallMarks(NamedTuple):
    """The moments of one call, each the first audit row of its kind (None: never), in
    integer microseconds since 1970 UTC.

    Integers, so durations are exact (the same as subtracting the datetimes) and a
    report over 100,000 calls does not build 600,000 datetime objects; a named tuple
    rather than a frozen dataclass because it is built several times faster. ``of``
    builds one from datetimes.
    """

    received_us: int | None
    opened_us: int | None = None
    acknowledged_us: int | None = None
    dispatched_us: int | None = None
    on_scene_us: int | None = None
    closed_us: int | None = None
    escalations: int = 0
    escalated_to_county: bool = False

    @classmethod
    def of(
        cls,
        received_at: datetime | None,
        opened_at: datetime | None = None,
        acknowledged_at: datetime | None = None,
        dispatched_at: datetime | None = None,
        on_scene_at: datetime | None = None,
        closed_at: datetime | None = None,
        escalations: int = 0,
        escalated_to_county: bool = False,
    ) -> CallMarks:
        return cls(
            to_us(received_at),
            to_us(opened_at),
            to_us(acknowledged_at),
            to_us(dispatched_at),
            to_us(on_scene_at),
            to_us(closed_at),
            escalations,
            escalated_to_county,
        )

    @property
    def start_us(self) -> int | None:
        return self.received_us if self.received_us is not None else self.opened_us

    @property
    def start(self) -> datetime | None:
        return from_us(self.start_us)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(at: datetime | None) -> int | None:
    """A timezone-aware datetime as integer microseconds since 1970 UTC (exact)."""
    return None if at is None else (at - _EPOCH) // _US


def from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _earliest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b < a else a


def marks_from_rows(rows: Iterable[AuditFact]) -> CallMarks:
    """A call's moments from its audit rows (any order). The service computes the same in
    one SQL pass for many calls; tests hold the two to each other."""
    received = opened = ack = operator_close = dispatched = on_scene = closed = None
    escalations = 0
    to_county = False
    for r in rows:
        k = r.kind
        if k == AuditKind.event_received.value:
            received = _earliest(received, r.at)
        elif k == AuditKind.call_opened.value:
            opened = _earliest(opened, r.at)
        elif k == AuditKind.acknowledged.value:
            ack = _earliest(ack, r.at)
        elif k == AuditKind.responder_dispatched.value:
            dispatched = _earliest(dispatched, r.at)
        elif k == AuditKind.on_scene.value:
            on_scene = _earliest(on_scene, r.at)
        elif k == AuditKind.escalated.value:
            escalations += 1
            to_county = to_county or r.detail.get("to") == "county"
        if k in _CLOSE_KINDS:
            closed = _earliest(closed, r.at)
            if r.actor.startswith("user:") and k != AuditKind.restored.value:
                operator_close = _earliest(operator_close, r.at)
    answered = ack if ack is not None else operator_close
    return CallMarks.of(
        received_at=received,
        opened_at=opened,
        acknowledged_at=answered,
        dispatched_at=dispatched,
        on_scene_at=on_scene,
        closed_at=closed,
        escalations=escalations,
        escalated_to_county=to_county,
    )


class CallInfo(NamedTuple):
    """Registry facts of a call: where it belongs and what it was.

    ``station_id`` is the station the call was first assigned to (responsible for the
    answer even if it escalated away); ``street_id``/``county_id`` are those above the
    home's station, so a street's report holds its beds' calls.
    """

    call_id: int
    station_id: str | None
    station_name: str
    home_id: str
    home_station_id: str
    street_id: str | None
    street_name: str
    county_id: str | None
    county_name: str
    timezone: str
    area: str
    priority: str
    event_type: str
    event_class: str
    status: str
    outcome: str | None


@dataclass(frozen=True, slots=True)
class Period:
    """Local calendar days ``start`` .. ``end``, both included, read in each call's
    station's time zone."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"period ends ({self.end}) before it starts ({self.start})")

    def holds(self, day: date) -> bool:
        return self.start <= day <= self.end


REPORT_TZ = "Asia/Shanghai"  # the county's calendar, when no station's zone applies


def default_period(now: datetime, timezone: str = REPORT_TZ) -> Period:
    """This month so far, by the county's calendar: what a supervisor opens first."""
    today = now.astimezone(_zone(timezone)).date()
    return Period(today.replace(day=1), today)


# Time zones run from UTC-12 to UTC+14: a local day lies inside this margin of UTC.
_TZ_MARGIN = timedelta(hours=15)


def utc_window(period: Period) -> tuple[datetime, datetime]:
    """A UTC range that surely holds every local day of the period in any time zone."""
    lo = datetime.combine(period.start, time(0), tzinfo=UTC) - _TZ_MARGIN
    hi = datetime.combine(period.end + timedelta(days=1), time(0), tzinfo=UTC) + _TZ_MARGIN
    return lo, hi


def period_bounds(period: Period, timezone: str) -> tuple[datetime, datetime]:
    """UTC instants of local midnight at the period's first day and after its last, in
    ``timezone``: device hours are counted over the same local days as the calls."""
    tz = _zone(timezone)
    return (
        datetime.combine(period.start, time(0), tzinfo=tz).astimezone(UTC),
        datetime.combine(period.end + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC),
    )


# --------------------------------------------------------------------------- per call


def target_state(elapsed_s: float | None, limit_s: float, waited_s: float | None) -> bool | None:
    """True met, False missed, None not applicable (see the module docstring)."""
    if elapsed_s is not None:
        return elapsed_s <= limit_s
    if waited_s is not None and waited_s > limit_s:
        return False
    return None


class CallFigures(NamedTuple):
    """One call's figures. ``answer_met`` maps each answer target's seconds to its state."""

    info: CallInfo
    marks: CallMarks
    start_local: datetime
    answer_s: float | None
    dispatch_s: float | None
    arrival_s: float | None
    close_s: float | None
    answer_met: Mapping[float, bool | None]
    arrival_limit_s: float
    arrival_met: bool | None
    answer_review: bool | None
    # whether the answer/arrival targets grade this call (targets.answer_classes), and
    # the device-trouble target's state (None for calls that are not trouble)
    graded: bool = True
    trouble_met: bool | None = None

    def seconds(self, metric: str) -> float | None:
        value: float | None = getattr(self, f"{metric}_s")
        return value


def call_figures(info: CallInfo, marks: CallMarks, targets: Targets, now: datetime) -> CallFigures:
    """Durations and target states of one call at ``now`` (which only matters for calls
    still waiting: a call unanswered for longer than a target has missed it already)."""
    return figures_maker(targets, now)(info, marks)


def figures_maker(targets: Targets, now: datetime) -> Callable[[CallInfo, CallMarks], CallFigures]:
    """``call_figures`` with the targets and ``now`` read once, for a report that calls
    it for every call of a month.

    Durations: the exact integer difference in microseconds, then one correctly rounded
    division, which is round(timedelta.total_seconds(), 3) of the datetimes.
    """
    now_us = to_us(now) or 0
    answer_limits = tuple(t.within_s for t in targets.answer)
    review_s = targets.review.answer_over_s
    urban_s, rural_s = targets.arrival.limit_s("urban"), targets.arrival.limit_s("rural")
    graded_classes = frozenset(targets.answer_classes)
    trouble = targets.trouble
    not_graded = dict.fromkeys(answer_limits)
    epoch = _EPOCH

    def make(info: CallInfo, marks: CallMarks) -> CallFigures:
        received, opened, ack, disp, scene, closed = marks[:6]
        start = received if received is not None else opened
        if start is None:
            raise ValueError(f"call {info.call_id} has no event_received or call_opened row")
        waited = round(((closed if closed is not None else now_us) - start) / 1e6, 3)
        answer = None if ack is None else round((ack - start) / 1e6, 3)
        arrival = None if scene is None else round((scene - start) / 1e6, 3)
        limit = rural_s if info.area == "rural" else urban_s
        graded = info.event_class in graded_classes
        trouble_met = None
        if info.event_class == "trouble":
            start_at = epoch + timedelta(microseconds=start)
            trouble_met = trouble_state(
                start_at,
                None if ack is None else epoch + timedelta(microseconds=ack),
                epoch + timedelta(microseconds=closed if closed is not None else now_us),
                trouble,
                info.timezone,
            )
        return CallFigures(
            info,
            marks,
            (epoch + timedelta(microseconds=start)).astimezone(_zone(info.timezone)),
            answer,
            None if disp is None else round((disp - start) / 1e6, 3),
            arrival,
            None if closed is None else round((closed - start) / 1e6, 3),
            {s: target_state(answer, s, waited) for s in answer_limits} if graded else not_graded,
            limit,
            target_state(arrival, limit, waited) if disp is not None and graded else None,
            target_state(answer, review_s, waited) if graded else None,
            graded,
            trouble_met,
        )

    return make


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# --------------------------------------------------------------------------- statistics


def nearest_rank(sorted_values: Sequence[float], p: int) -> float | None:
    """The p-th percentile by nearest rank: the value at 1-based rank ⌈p·n/100⌉.

    Integer arithmetic for the rank, so 95 % of 20 is rank 19 exactly, never 20 through
    a floating-point 19.000000000000004.
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in 1..100, got {p}")
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, -(-p * n // 100))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Stats:
    count: int
    median: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None


def stats(values: Iterable[float]) -> Stats:
    ordered = sorted(values)
    median, p90, p95, p99 = (nearest_rank(ordered, p) for p in PERCENTILES)
    return Stats(len(ordered), median, p90, p95, p99, ordered[-1] if ordered else None)


def _share(states: Iterable[bool | None]) -> tuple[int, int]:
    met = eligible = 0
    for s in states:
        if s is None:
            continue
        eligible += 1
        met += s
    return met, eligible


def _pct(met: int, eligible: int) -> float | None:
    return round(100.0 * met / eligible, 2) if eligible else None


def _target_met(met: int, eligible: int, min_share: float) -> bool | None:
    return (met / eligible >= min_share) if eligible else None


def target_column(within_s: float) -> str:
    return f"answer_within_{math.trunc(within_s) if within_s == math.trunc(within_s) else within_s}s"


def aggregate(figs: Sequence[CallFigures], targets: Targets) -> dict[str, Any]:
    """One flat row of figures for a set of calls: the unit of every table and export.

    Flat (no nesting) so the same dict is a JSON object, a CSV row, an XLSX row and a
    terminal line, and the four can only agree.
    """
    row: dict[str, Any] = {"calls": len(figs)}
    graded = [f for f in figs if f.graded]
    row["graded_calls"] = len(graded)
    for metric in METRICS:
        get = attrgetter(f"{metric}_s")
        st = stats([v for f in graded if (v := get(f)) is not None])
        row[f"{metric}_n"] = st.count
        row[f"{metric}_median_s"] = st.median
        row[f"{metric}_p90_s"] = st.p90
        row[f"{metric}_p95_s"] = st.p95
        row[f"{metric}_p99_s"] = st.p99
        row[f"{metric}_max_s"] = st.max
    for t in targets.answer:
        col = target_column(t.within_s)
        met, eligible = _share(f.answer_met[t.within_s] for f in graded)
        row[f"{col}_met"] = met
        row[f"{col}_eligible"] = eligible
        row[f"{col}_pct"] = _pct(met, eligible)
        row[f"{col}_target_pct"] = round(100.0 * t.min_share, 2)
        row[f"{col}_target_met"] = _target_met(met, eligible, t.min_share)
    met, eligible = _share(f.arrival_met for f in graded)
    row["arrival_within_limit_met"] = met
    row["arrival_within_limit_eligible"] = eligible
    row["arrival_within_limit_pct"] = _pct(met, eligible)
    row["arrival_within_limit_target_pct"] = round(100.0 * targets.arrival.min_share, 2)
    row["arrival_within_limit_target_met"] = _target_met(met, eligible, targets.arrival.min_share)
    row["escalated"] = sum(1 for f in figs if f.marks.escalations > 0)
    row["escalated_to_county"] = sum(1 for f in figs if f.marks.escalated_to_county)
    row["unanswered"] = sum(1 for f in graded if f.answer_s is None)
    row.update(_trouble_columns(figs, targets))
    return row


def _trouble_columns(figs: Sequence[CallFigures], targets: Targets) -> dict[str, Any]:
    """Device trouble against its own working-hours target (never the answer targets)."""
    trouble = [f for f in figs if f.info.event_class == "trouble"]
    answered = stats([f.answer_s for f in trouble if f.answer_s is not None])
    met, eligible = _share(f.trouble_met for f in trouble)
    share = targets.trouble.min_share
    return {
        "trouble_calls": len(trouble),
        "trouble_answer_median_s": answered.median,
        "trouble_answer_max_s": answered.max,
        "trouble_in_time_met": met,
        "trouble_in_time_eligible": eligible,
        "trouble_in_time_pct": _pct(met, eligible),
        "trouble_in_time_target_pct": round(100.0 * share, 2),
        "trouble_in_time_target_met": _target_met(met, eligible, share),
        "trouble_unanswered": sum(1 for f in trouble if f.answer_s is None),
    }


def summary(figs: Sequence[CallFigures], targets: Targets) -> dict[str, Any]:
    """The figures of every call given, as one row (the dashboard's headline)."""
    return aggregate(figs, targets)


def _key(grouping: Grouping) -> Callable[[CallFigures], tuple[str, str]]:
    """(key, label) of a call in a grouping; labels are what people read."""

    def by(f: CallFigures) -> tuple[str, str]:
        i = f.info
        loc = f.start_local
        if grouping == "station":
            return (i.station_id or NONE_KEY, i.station_name or NONE_KEY)
        if grouping == "street":
            return (i.street_id or NONE_KEY, i.street_name or NONE_KEY)
        if grouping == "county":
            return (i.county_id or NONE_KEY, i.county_name or NONE_KEY)
        if grouping == "type":
            return (i.event_type, i.event_type)
        if grouping == "priority":
            return (i.priority, i.priority)
        if grouping == "hour":
            h = f"{loc.hour:02d}"
            return (h, f"{h}:00")
        if grouping == "day":
            d = loc.date().isoformat()
            return (d, d)
        if grouping == "week":
            y, w, _ = loc.isocalendar()
            return (f"{y}-W{w:02d}", f"{y}-W{w:02d}")
        m = f"{loc.year:04d}-{loc.month:02d}"
        return (m, m)

    return by


def group_rows(figs: Sequence[CallFigures], grouping: Grouping, targets: Targets) -> list[dict[str, Any]]:
    """One aggregate row per group, sorted by key (hours, days and weeks in time order)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"unknown grouping {grouping!r}; one of {', '.join(GROUPINGS)}")
    key_of = _key(grouping)
    groups: dict[tuple[str, str], list[CallFigures]] = defaultdict(list)
    for f in figs:
        groups[key_of(f)].append(f)
    return [
        {"group": grouping, "key": key, "label": label, **aggregate(members, targets)}
        for (key, label), members in sorted(groups.items())
    ]


def graded_answer_times(figs: Iterable[CallFigures]) -> list[float]:
    """Every answered graded call's seconds, sorted: the answer-time distribution."""
    return sorted(f.answer_s for f in figs if f.graded and f.answer_s is not None)


def in_period(figs: Iterable[CallFigures], period: Period) -> list[CallFigures]:
    """Calls that started inside the period by their own station's calendar."""
    return [f for f in figs if period.holds(f.start_local.date())]
