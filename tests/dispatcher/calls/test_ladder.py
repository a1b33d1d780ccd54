"""The contact ladder's decision (dispatcher/calls/ladder.py): one contact at a time, in
order; the next after the timeout or at once after "cannot"/"call me"; none after "going"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.calls.contacts import ladder_timeout
from dispatcher.calls.escalation import Step, from_snapshot
from dispatcher.calls.ladder import LadderDecision, LadderState, next_contact

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=120)


def decide(told: dict[int, float], answers: dict[int, str] | None = None, at: float = 0.0) -> LadderDecision:
    return next_contact(
        [11, 12, 13],
        {c: T0 + timedelta(seconds=s) for c, s in told.items()},
        answers or {},
        timeout=TIMEOUT,
        now=T0 + timedelta(seconds=at),
    )


def test_the_first_contact_is_told_at_once() -> None:
    assert decide({}) == LadderDecision(LadderState.tell, contact_id=11)


def test_the_next_contact_waits_for_the_timeout() -> None:
    d = decide({11: 0}, at=119)
    assert d.state is LadderState.wait and d.contact_id == 11
    assert d.wait_until == T0 + TIMEOUT
    assert decide({11: 0}, at=120) == LadderDecision(LadderState.tell, contact_id=12)


@pytest.mark.parametrize("answer", ["cannot", "call_me"])
def test_cannot_and_call_me_advance_at_once(answer: str) -> None:
    assert decide({11: 0}, {11: answer}, at=5) == LadderDecision(LadderState.tell, contact_id=12)


def test_the_timeout_counts_from_the_contact_told_last() -> None:
    # 11 said "cannot" at 5 s, 12 was told then: 12 has its own 120 s
    assert decide({11: 0, 12: 5}, {11: "cannot"}, at=120).state is LadderState.wait
    assert decide({11: 0, 12: 5}, {11: "cannot"}, at=125) == LadderDecision(LadderState.tell, contact_id=13)


def test_going_stops_the_ladder_whoever_said_it() -> None:
    assert decide({11: 0}, {11: "going"}, at=500) == LadderDecision(LadderState.stopped, contact_id=11)
    # the first said "cannot", the second is going: the third is never told
    d = decide({11: 0, 12: 3}, {11: "cannot", 12: "going"}, at=900)
    assert d == LadderDecision(LadderState.stopped, contact_id=12)


def test_everyone_told_is_exhausted_and_no_contacts_is_said() -> None:
    assert decide({11: 0, 12: 120, 13: 240}, at=1000).state is LadderState.exhausted
    assert next_contact([], {}, {}, timeout=TIMEOUT, now=T0).state is LadderState.no_contacts
    with pytest.raises(ValueError):
        next_contact([1], {}, {}, timeout=timedelta(0), now=T0)


def test_a_contact_added_later_is_told_in_turn_and_a_removed_one_still_counts() -> None:
    # 99 was told (then removed from the list): its turn runs out before 11 is told
    d = next_contact([11, 12], {99: T0}, {}, timeout=TIMEOUT, now=T0 + timedelta(seconds=60))
    assert d.state is LadderState.wait and d.contact_id == 99
    d = next_contact([11, 12], {99: T0}, {}, timeout=TIMEOUT, now=T0 + TIMEOUT)
    assert d == LadderDecision(LadderState.tell, contact_id=11)


answers_st = st.sampled_from(["going", "cannot", "call_me"])


@given(
    n=st.integers(1, 6),
    steps=st.lists(st.tuples(st.integers(0, 300), st.one_of(st.none(), answers_st)), max_size=12),
)
def test_running_the_ladder_tells_each_contact_once_in_order_and_never_after_going(
    n: int, steps: list[tuple[int, str | None]]
) -> None:
    """Drive the ladder through time: each step some seconds pass and the contact told
    last may answer. Contacts are told in order, at most once, never after "going", and
    never before their predecessor's turn ended."""
    contacts = list(range(100, 100 + n))
    told: dict[int, datetime] = {}
    answers: dict[int, str] = {}
    now = T0
    for wait_s, answer in [(0, None), *steps]:
        now += timedelta(seconds=wait_s)
        if answer is not None and told:
            last = max(told, key=lambda c: told[c])
            answers[last] = answer
        d = next_contact(contacts, told, answers, timeout=TIMEOUT, now=now)
        if d.state is LadderState.tell:
            assert d.contact_id is not None and d.contact_id not in told
            assert "going" not in answers.values()
            if told:
                last = max(told, key=lambda c: told[c])
                assert answers.get(last) in ("cannot", "call_me") or now >= told[last] + TIMEOUT
            told[d.contact_id] = now
        elif d.state is LadderState.stopped:
            assert answers.get(d.contact_id or -1) == "going"
        elif d.state is LadderState.wait:
            assert d.wait_until is not None and d.wait_until > now
        else:
            assert d.state is LadderState.exhausted and set(told) == set(contacts)
    assert list(told) == contacts[: len(told)]


def test_the_step_takes_a_contact_timeout_and_old_snapshots_still_load() -> None:
    step = Step.model_validate({"action": "notify_contacts", "after_s": 180, "until": "acknowledged"})
    assert step.contacts is not None and step.contacts.timeout_s == 120 and step.repeat_every_s == 120
    step = Step.model_validate(
        {"action": "notify_contacts", "after_s": 180, "until": "acknowledged", "contacts": {"timeout_s": 45}}
    )
    assert step.repeat_every_s == 45
    with pytest.raises(ValueError, match=r"contacts\.timeout_s"):
        Step.model_validate(
            {"action": "notify_contacts", "after_s": 0, "until": "acknowledged", "repeat_every_s": 30}
        )
    with pytest.raises(ValueError, match="contacts goes only"):
        Step.model_validate({"action": "remind", "after_s": 0, "until": "acknowledged", "contacts": {}})
    # a call opened before the ladder: its snapshot has no contacts key and no repeats
    old = {
        "format": 1,
        "name": "emergency",
        "match": {},
        "travel_limit_s": 900.0,
        "steps": [{"action": "notify_contacts", "after_s": 180.0, "until": "acknowledged"}],
    }
    policy = from_snapshot(old)
    assert policy.steps[0].repeat_every_s == 120
    assert ladder_timeout(old) == TIMEOUT
    assert ladder_timeout(
        {"steps": [{"action": "notify_contacts", "contacts": {"timeout_s": 30}}]}
    ) == timedelta(seconds=30)
