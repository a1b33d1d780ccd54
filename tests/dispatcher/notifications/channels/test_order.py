"""A person's own channel order against the purpose's route (order.py, pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.notifications.channels.order import app_only, parse_order, resolve_order

ROUTE = ["app", "aliyun_sms", "tencent_sms", "aliyun_voice"]
AVAILABLE = {
    "app": "app",
    "aliyun_sms": "sms",
    "tencent_sms": "sms",
    "aliyun_voice": "voice",
    "tencent_voice": "voice",
    "email": "email",
}


def test_no_own_order_is_the_route() -> None:
    assert resolve_order(ROUTE, AVAILABLE, "") == ROUTE
    assert resolve_order(ROUTE, AVAILABLE, None) == ROUTE
    assert resolve_order(ROUTE, AVAILABLE, "  ") == ROUTE


def test_the_persons_kinds_win_and_keep_the_routes_vendors_in_route_order() -> None:
    assert resolve_order(ROUTE, AVAILABLE, "voice sms") == ["aliyun_voice", "aliyun_sms", "tencent_sms"]
    assert resolve_order(ROUTE, AVAILABLE, "app sms voice") == ROUTE
    # the failover goes to the person's next channel: sms is never tried for "app voice"
    assert resolve_order(ROUTE, AVAILABLE, "app voice") == ["app", "aliyun_voice"]


def test_a_kind_missing_from_the_route_takes_the_configured_channels_of_that_kind() -> None:
    contact_route = ["aliyun_sms", "tencent_sms"]
    assert resolve_order(contact_route, AVAILABLE, "voice") == ["aliyun_voice", "tencent_voice"]
    assert resolve_order(contact_route, AVAILABLE, "email sms") == ["email", "aliyun_sms", "tencent_sms"]


def test_a_channel_name_picks_that_vendor_only() -> None:
    assert resolve_order(ROUTE, AVAILABLE, "tencent_sms aliyun_voice") == ["tencent_sms", "aliyun_voice"]
    assert resolve_order(ROUTE, AVAILABLE, "tencent_sms sms") == ["tencent_sms", "aliyun_sms"]


def test_nothing_the_person_named_is_available_falls_back_to_the_route() -> None:
    assert resolve_order(ROUTE, AVAILABLE, "robot fax") == ROUTE
    assert resolve_order(ROUTE, {"aliyun_sms": "sms"}, "voice") == ["aliyun_sms"]


def test_unavailable_route_entries_never_appear() -> None:
    assert resolve_order(ROUTE, {"aliyun_sms": "sms", "aliyun_voice": "voice"}, "") == [
        "aliyun_sms",
        "aliyun_voice",
    ]


def test_parse_order_tolerates_commas_case_duplicates_and_junk() -> None:
    assert parse_order("SMS, voice  sms") == ("sms", "voice")
    assert parse_order(["voice", "Voice", "<script>", ""]) == ("voice",)
    assert parse_order("") == ()
    assert app_only("app") and app_only(["APP"]) and not app_only("app sms") and not app_only("")


WORDS = st.sampled_from(["app", "sms", "voice", "robot", "email", "tencent_sms", "aliyun_voice", "x", "SMS"])


@given(st.lists(WORDS, max_size=8), st.sets(st.sampled_from(sorted(AVAILABLE)), max_size=6))
def test_resolved_orders_are_available_distinct_and_never_empty_when_the_route_is_not(
    words: list[str], names: set[str]
) -> None:
    available = {n: AVAILABLE[n] for n in names}
    out = resolve_order(ROUTE, available, " ".join(words))
    assert len(out) == len(set(out)) and set(out) <= set(available)
    if any(n in available for n in ROUTE):
        assert out
    # every channel chosen is of a kind (or name) the person asked for, unless nothing was
    kinds = {w.lower() for w in words}
    if out != [n for n in ROUTE if n in available]:
        assert all(n in kinds or available[n] in kinds for n in out)
