"""The visit planner: periods, plans, due visits, statuses and escalation — by example
and under property tests across month ends, leap days and time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.visits import planner
from dispatcher.visits.planner import PlanFacts, ResidentFacts
from dispatcher.visits.rules import Category, Frequency, RiskRule, VisitRules

SH = ZoneInfo("Asia/Shanghai")
RULES = VisitRules(risk_rules=(RiskRule(name="high_need_alone", min_capacity_level=3, living_alone=True),))
ZONES = (
    "Asia/Shanghai",
    "UTC",
    "America/New_York",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Europe/London",
)

moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 12, 31), timezones=st.just(UTC)
)
# moments near local month ends, where UTC and local disagree about the month
month_edges = st.builds(
    lambda y, m, off_min: datetime(y, m, 1, tzinfo=SH).astimezone(UTC) + timedelta(minutes=off_min),
    st.integers(2020, 2040),
    st.integers(1, 12),
    st.integers(-600, 600),
)


def test_a_local_month_starts_at_local_midnight_not_utc_midnight() -> None:
    # 2026-01-31 16:30 UTC is already 1 February 00:30 in Shanghai
    per = planner.period_of(Frequency.monthly, datetime(2026, 1, 31, 16, 30, tzinfo=UTC), SH)
    assert per.label == "2026-02"
    assert per.start == datetime(2026, 1, 31, 16, 0, tzinfo=UTC)
    assert per.due_at == datetime(2026, 2, 28, 16, 0, tzinfo=UTC)
    utc = planner.period_of(Frequency.monthly, datetime(2026, 1, 31, 16, 30, tzinfo=UTC), ZoneInfo("UTC"))
    assert utc.label == "2026-01"


def test_february_of_a_leap_year_ends_after_the_29th() -> None:
    per = planner.period_of(Frequency.monthly, datetime(2028, 2, 29, 23, 59, tzinfo=SH), SH)
    assert per.label == "2028-02" and per.due_at == datetime(2028, 3, 1, tzinfo=SH)
    assert planner.period_of(Frequency.monthly, datetime(2028, 3, 1, tzinfo=SH), SH).label == "2028-03"
    assert planner.period_of(Frequency.monthly, datetime(2027, 2, 28, 12, tzinfo=SH), SH).due_at == datetime(
        2027, 3, 1, tzinfo=SH
    )


def test_weeks_are_local_iso_weeks_across_the_year_end() -> None:
    per = planner.period_of(Frequency.weekly, datetime(2026, 12, 31, 20, tzinfo=SH), SH)
    assert per.label == "2026-W53" and per.start == datetime(2026, 12, 28, tzinfo=SH)
    assert per.due_at == datetime(2027, 1, 4, tzinfo=SH)
    # Sunday 20:00 UTC is Monday 04:00 in Shanghai: the next week already
    assert planner.period_of(Frequency.weekly, datetime(2026, 12, 6, 20, tzinfo=UTC), SH).label == "2026-W50"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        planner.period_of(Frequency.monthly, datetime(2026, 12, 1), SH)
    with pytest.raises(ValueError, match="timezone-aware"):
        planner.next_due([], last_done={}, existing=[], now=datetime(2026, 12, 1), rules=RULES)


def test_plans_come_from_categories_the_living_alone_flag_and_risk_rules() -> None:
    alone_frail = ResidentFacts("r1", 3, True, frozenset({Category.lost_only_child}))
    plans = planner.desired_plans(alone_frail, RULES)
    assert [(p.key, p.frequency) for p in plans] == [
        ("r1:living_alone", Frequency.monthly),
        ("r1:lost_only_child", Frequency.monthly),
        ("r1:risk:high_need_alone", Frequency.weekly),
    ]
    assert planner.desired_plans(ResidentFacts("r2", 4, False, frozenset()), RULES) == []
    only_some = VisitRules(categories=(Category.disabled,))
    assert planner.desired_plans(alone_frail, only_some) == []


def test_a_weekly_plan_covers_the_month_and_a_visit_done_this_period_satisfies_it() -> None:
    now = datetime(2026, 12, 9, 2, tzinfo=UTC)
    plans = [
        PlanFacts(1, "r1", Frequency.monthly),
        PlanFacts(2, "r1", Frequency.weekly),
        PlanFacts(3, "r2", Frequency.monthly),
    ]
    due = planner.next_due(plans, last_done={}, existing=[], now=now, rules=RULES)
    assert [(d.plan_id, d.period) for d in due] == [(2, "2026-W50"), (3, "2026-12")]
    done_this_month = {"r2": datetime(2026, 12, 2, tzinfo=SH)}
    due = planner.next_due(plans, last_done=done_this_month, existing=[], now=now, rules=RULES)
    assert [d.plan_id for d in due] == [2]
    done_last_month = {"r2": datetime(2026, 11, 30, 23, 59, tzinfo=SH)}
    assert [
        d.plan_id
        for d in planner.next_due(plans, last_done=done_last_month, existing=[], now=now, rules=RULES)
    ] == [2, 3]


def test_a_follow_up_is_due_within_24_hours_of_the_call_closing_and_only_once() -> None:
    closed = datetime(2026, 12, 6, 3, tzinfo=UTC)
    spec = planner.follow_up_plan("r1", 42, closed)
    assert spec.key == "r1:follow_up:42" and spec.frequency is Frequency.once
    plan = PlanFacts(7, "r1", Frequency.once, 42, closed)
    [d] = planner.next_due([plan], last_done={}, existing=[], now=closed + timedelta(minutes=5), rules=RULES)
    assert d.period == "call-42" and d.window_start == closed and d.due_at == closed + timedelta(hours=24)
    later = closed + timedelta(days=40)
    assert planner.next_due([plan], last_done={}, existing=[(7, "call-42")], now=later, rules=RULES) == []
    assert (
        planner.next_due([plan], last_done={}, existing=[], now=closed - timedelta(seconds=1), rules=RULES)
        == []
    )


def test_open_status_and_escalation_follow_the_thresholds() -> None:
    due = datetime(2026, 12, 31, 16, tzinfo=UTC)
    h = timedelta(hours=1)
    assert planner.open_status(due, due - h, RULES) == "due"
    assert planner.open_status(due, due, RULES) == "late"
    assert planner.open_status(due, due + 24 * h, RULES) == "missed"
    assert planner.escalation_target(due, due + 47 * h, RULES) == 0
    assert planner.escalation_target(due, due + 48 * h, RULES) == 1
    assert planner.escalation_target(due, due + 119 * h, RULES) == 1
    assert planner.escalation_target(due, due + 120 * h, RULES) == 2


def test_the_named_visitor_is_stable_and_only_from_the_roster() -> None:
    assert planner.choose_visitor("r1", []) is None
    first = planner.choose_visitor("r1", ["s2", "s1", "s3"])
    assert first in {"s1", "s2", "s3"}
    assert planner.choose_visitor("r1", ["s3", "s1", "s2"]) == first  # order does not matter
    picks = {planner.choose_visitor(f"r{i}", ["s1", "s2", "s3"]) for i in range(50)}
    assert picks == {"s1", "s2", "s3"}  # the work is spread


# ------------------------------------------------------------------ properties


@settings(max_examples=300, deadline=None)
@given(
    at=st.one_of(moments, month_edges),
    zone=st.sampled_from(ZONES),
    freq=st.sampled_from([Frequency.monthly, Frequency.weekly]),
)
def test_the_period_contains_the_moment_and_the_next_period_starts_where_it_ends(
    at: datetime, zone: str, freq: Frequency
) -> None:
    tz = ZoneInfo(zone)
    per = planner.period_of(freq, at, tz)
    assert per.start <= at < per.due_at
    nxt = planner.period_of(freq, per.due_at, tz)
    assert nxt.start == per.due_at and nxt.label != per.label
    assert planner.period_of(freq, per.due_at - timedelta(microseconds=1), tz).label == per.label
    local_start = per.start.astimezone(tz)
    assert local_start.hour == 0 and local_start.minute == 0
    if freq is Frequency.monthly:
        assert local_start.day == 1 and per.label == f"{local_start.year:04d}-{local_start.month:02d}"
        assert 28 * 24 - 1 <= (per.due_at - per.start) / timedelta(hours=1) <= 31 * 24 + 1
    else:
        assert local_start.weekday() == 0


plan_lists = st.lists(
    st.builds(
        PlanFacts,
        plan_id=st.integers(1, 40),
        resident_id=st.sampled_from(["r1", "r2", "r3"]),
        frequency=st.sampled_from([Frequency.monthly, Frequency.weekly]),
    ),
    max_size=12,
    unique_by=lambda p: p.plan_id,
)


@settings(max_examples=300, deadline=None)
@given(
    plans=plan_lists,
    now=st.one_of(moments, month_edges),
    zone=st.sampled_from(ZONES),
    step_h=st.integers(0, 24 * 40),
)
def test_generation_is_idempotent_and_never_doubles_a_plan_period(
    plans: list[PlanFacts], now: datetime, zone: str, step_h: int
) -> None:
    rules = VisitRules(timezone=zone)
    first = planner.next_due(plans, last_done={}, existing=[], now=now, rules=rules)
    keys = [(d.plan_id, d.period) for d in first]
    assert len(keys) == len(set(keys))
    assert planner.next_due(plans, last_done={}, existing=keys, now=now, rules=rules) == []
    for d in first:
        assert d.window_start <= now < d.due_at
    # later rounds only ever add periods not generated before (one visit per plan period)
    later = now + timedelta(hours=step_h)
    again = planner.next_due(plans, last_done={}, existing=keys, now=later, rules=rules)
    assert not {(d.plan_id, d.period) for d in again} & set(keys)
    # per resident, at most one recurring frequency is generated (weekly covers monthly)
    freq = {p.plan_id: p.frequency for p in plans}
    for rid in {p.resident_id for p in plans}:
        assert len({freq[d.plan_id] for d in first if d.resident_id == rid}) <= 1


@settings(max_examples=200, deadline=None)
@given(year=st.integers(2020, 2040), month=st.integers(1, 12), zone=st.sampled_from(ZONES))
def test_a_monthly_plan_gets_exactly_one_visit_per_local_month_over_its_days(
    year: int, month: int, zone: str
) -> None:
    tz = ZoneInfo(zone)
    rules = VisitRules(timezone=zone)
    plan = [PlanFacts(1, "r1", Frequency.monthly)]
    start = datetime(year, month, 1, tzinfo=tz)
    nxt = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
    existing: list[tuple[int, str]] = []
    t = start.astimezone(UTC) - timedelta(hours=1)
    while t < nxt.astimezone(UTC) + timedelta(hours=1):
        existing += [
            (d.plan_id, d.period)
            for d in planner.next_due(plan, last_done={}, existing=existing, now=t, rules=rules)
        ]
        t += timedelta(hours=7)
    labels = [p for _, p in existing]
    assert f"{year:04d}-{month:02d}" in labels and len(labels) == len(set(labels)) <= 3
