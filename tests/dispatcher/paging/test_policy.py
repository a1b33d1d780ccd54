"""The paging decision: who is paged, in which order, and when paging is exhausted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dispatcher.paging.policy import (
    Attempt,
    Availability,
    PageOutcome,
    PagingMode,
    PagingPolicy,
    Person,
    decide,
)

T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
ONE_BY_ONE = PagingPolicy(mode=PagingMode.one_by_one, timeout_s=60)
ALL = PagingPolicy(mode=PagingMode.all_at_once, timeout_s=90)

ANNA = Person("anna", "responder", Availability.on_duty, rank=1)
BO = Person("bo", "nurse", Availability.on_duty, rank=2)
CHEN = Person("chen", "responder", Availability.off_duty, rank=0)
DAI = Person("dai", "responder", Availability.busy, rank=0.5)
EVA = Person("eva", "responder", Availability.on_duty, on_call=True, rank=0.1)
OPS = Person("ops", "operator", Availability.on_duty, rank=0)
TEAM = [ANNA, BO, CHEN, DAI, EVA, OPS]


def test_one_by_one_pages_the_best_free_person_first_and_says_why_others_were_skipped() -> None:
    d = decide(ONE_BY_ONE, TEAM, [], now=T0)
    assert d.page == ("anna",)
    assert d.skipped == {
        "chen": "off_duty",
        "dai": "busy",
        "eva": "on_another_call",
        "ops": "role_not_paged",
    }
    assert d.next_check_at == T0 + timedelta(seconds=60) and not d.exhausted


def test_an_ignored_page_times_out_and_the_next_person_is_paged() -> None:
    attempts = [Attempt("anna", T0)]
    assert decide(ONE_BY_ONE, TEAM, attempts, now=T0 + timedelta(seconds=59)).page == ()
    d = decide(ONE_BY_ONE, TEAM, attempts, now=T0 + timedelta(seconds=60))
    assert d.time_out == ("anna",) and d.page == ("bo",)


def test_a_decline_moves_on_at_once() -> None:
    d = decide(ONE_BY_ONE, TEAM, [Attempt("anna", T0, PageOutcome.declined)], now=T0 + timedelta(seconds=3))
    assert d.page == ("bo",) and d.time_out == ()


def test_when_everyone_has_answered_no_paging_is_exhausted() -> None:
    attempts = [Attempt("anna", T0, PageOutcome.declined), Attempt("bo", T0, PageOutcome.timed_out)]
    d = decide(ONE_BY_ONE, TEAM, attempts, now=T0 + timedelta(seconds=200))
    assert d.page == () and d.exhausted and d.next_check_at is None


def test_all_at_once_pages_every_free_person_and_the_first_acceptance_owns_it() -> None:
    d = decide(ALL, TEAM, [], now=T0)
    assert d.page == ("anna", "bo")
    attempts = [
        Attempt("anna", T0, PageOutcome.accepted),
        Attempt("bo", T0),
    ]
    d = decide(ALL, TEAM, attempts, now=T0 + timedelta(seconds=5))
    assert d.owner == "anna" and d.withdraw == ("bo",) and d.page == ()


def test_the_earliest_acceptance_wins_even_if_listed_later() -> None:
    attempts = [
        Attempt("bo", T0 + timedelta(seconds=1), PageOutcome.accepted),
        Attempt("anna", T0, PageOutcome.accepted),
    ]
    assert decide(ALL, TEAM, attempts, now=T0).owner == "anna"


def test_max_people_caps_the_pages_for_one_call() -> None:
    policy = PagingPolicy(mode=PagingMode.all_at_once, max_people=1)
    assert decide(policy, TEAM, [], now=T0).page == ("anna",)
    d = decide(policy, TEAM, [Attempt("anna", T0, PageOutcome.declined)], now=T0)
    assert d.page == () and d.exhausted


def test_policy_is_checked() -> None:
    with pytest.raises(ValidationError):
        PagingPolicy(timeout_s=1)
    with pytest.raises(ValidationError):
        PagingPolicy(roles=())
    with pytest.raises(ValidationError):
        PagingPolicy.model_validate({"mode": "shout"})


people = st.lists(
    st.builds(
        Person,
        staff_id=st.sampled_from([f"s{i}" for i in range(8)]),
        role=st.sampled_from(["responder", "nurse", "operator"]),
        availability=st.sampled_from(list(Availability)),
        on_call=st.booleans(),
        rank=st.floats(0, 10),
    ),
    max_size=8,
    unique_by=lambda p: p.staff_id,
)


@settings(max_examples=300, deadline=None)
@given(
    team=people,
    mode=st.sampled_from(list(PagingMode)),
    outcomes=st.lists(st.sampled_from(list(PageOutcome)), max_size=8),
    elapsed=st.integers(0, 400),
)
def test_nobody_unavailable_or_already_paged_is_ever_paged(
    team: list[Person], mode: PagingMode, outcomes: list[PageOutcome], elapsed: int
) -> None:
    policy = PagingPolicy(mode=mode, timeout_s=60)
    attempts = [Attempt(p.staff_id, T0, o) for p, o in zip(team, outcomes, strict=False)]
    d = decide(policy, team, attempts, now=T0 + timedelta(seconds=elapsed))
    by_id = {p.staff_id: p for p in team}
    already = {a.staff_id for a in attempts}
    for staff_id in d.page:
        person = by_id[staff_id]
        assert staff_id not in already
        assert person.availability is Availability.on_duty and not person.on_call
        assert person.role in policy.roles
    assert len(set(d.page)) == len(d.page)
    if mode is PagingMode.one_by_one:
        assert len(d.page) <= 1
        if any(a.outcome is PageOutcome.pending and a.staff_id not in d.time_out for a in attempts):
            assert d.page == ()
    if d.owner is not None:
        assert d.page == () and not d.exhausted
    assert not (d.exhausted and d.page)
