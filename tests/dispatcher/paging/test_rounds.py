"""Paging rounds by channel: the voice round before the county, app-first fallback (pure,
and the shipped config/escalation.yaml)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from dispatcher.calls.config_files import load_policies
from dispatcher.calls.escalation import paging_of, snapshot
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
REPO = Path(__file__).resolve().parents[3]
PEOPLE = [Person(s, "responder", Availability.on_duty, rank=i) for i, s in enumerate("abc")]
VOICE = PagingPolicy(mode=PagingMode.all_at_once, timeout_s=60, via=("voice",))


def test_a_voice_round_pages_again_everyone_silent_but_not_who_declined() -> None:
    earlier = [
        Attempt("a", T0, PageOutcome.timed_out),  # by app
        Attempt("b", T0, PageOutcome.declined),
        Attempt("c", T0 + timedelta(seconds=30), PageOutcome.pending, channel="sms"),
    ]
    d = decide(VOICE, PEOPLE, earlier, now=T0 + timedelta(seconds=120))
    assert d.page == ("a", "c") and d.time_out == ()  # the app round's pending page is not this round's
    # its own round: paged once, then timed out, then nobody left
    again = [*earlier, Attempt("a", T0 + timedelta(seconds=120), channel="voice")]
    d2 = decide(VOICE, PEOPLE, again, now=T0 + timedelta(seconds=180))
    assert d2.page == ("c",) and d2.time_out == ("a",)


def test_an_acceptance_on_any_channel_owns_the_call_in_the_voice_round() -> None:
    d = decide(VOICE, PEOPLE, [Attempt("b", T0, PageOutcome.accepted)], now=T0 + timedelta(seconds=120))
    assert d.owner == "b" and d.page == ()


def test_a_step_without_via_counts_every_page() -> None:
    plain = PagingPolicy(mode=PagingMode.all_at_once, timeout_s=60)
    d = decide(plain, PEOPLE, [Attempt("a", T0, PageOutcome.timed_out, channel="voice")], now=T0)
    assert d.page == ("b", "c")


@pytest.mark.parametrize(
    "bad",
    [
        {"via": ["fax"]},
        {"via": ["voice", "voice"]},
        {"via": ["app"]},
        {"fallback_after_s": 60, "timeout_s": 60},
        {"fallback_after_s": -1},
    ],
)
def test_bad_via_or_fallback_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PagingPolicy.model_validate(bad)


def test_the_shipped_ladders_page_by_voice_last_before_the_county_and_not_earlier() -> None:
    policies = load_policies(REPO / "config" / "escalation.yaml")
    checked = 0
    for policy in policies.policies:
        county = [s.after_s for s in policy.steps if s.action == "escalate_county"]
        pages = sorted(
            (s for s in policy.steps if s.action == "page_station" and s.paging is not None),
            key=lambda s: s.after_s or 0.0,
        )
        if not county:
            continue
        before = [s for s in pages if (s.after_s or 0.0) < county[0]]
        assert before, policy.name
        *earlier, last = before
        assert last.paging is not None and last.paging.via == ("voice",), policy.name
        assert all(s.paging is not None and not s.paging.via for s in earlier), policy.name
        # snapshotted onto the call like any step, and a decline passes on with the app round
        snap = snapshot(policy, travel_limit_s=900)
        assert any(s.get("paging", {}).get("via") == ["voice"] for s in snap["steps"])
        main = paging_of(snap)
        assert main is not None and main.via == ()
        checked += 1
    assert checked >= 3  # emergency, urgent, catch-all
