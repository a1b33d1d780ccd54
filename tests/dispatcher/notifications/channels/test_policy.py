"""The pure delivery policy: backoff, retry-or-failover, cost guard, outcome."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.notifications.channels import policy as policy_module
from dispatcher.notifications.channels.models import ChannelKind, ReceiptStatus
from dispatcher.notifications.channels.policy import (
    Action,
    CostCaps,
    CostScope,
    CostUsage,
    OutcomeStatus,
    RetryPolicy,
    after_receipt,
    backoff_delay,
    check_cost,
    in_window,
    max_attempts,
    outcome_status,
)

retry_policies = st.builds(
    RetryPolicy,
    max_attempts_per_channel=st.integers(1, 10),
    base_delay_s=st.floats(0, 5),
    multiplier=st.floats(1, 4),
    max_delay_s=st.floats(5, 60),
    jitter=st.floats(0, 1),
)


def test_the_policy_module_imports_nothing_that_does_io() -> None:
    tree = ast.parse(Path(policy_module.__file__).read_text(encoding="utf-8"))
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    allowed = {
        "__future__",
        "math",
        "collections.abc",
        "dataclasses",
        "enum",
        "pydantic",
        "dispatcher.notifications.channels.models",
    }
    assert imported <= allowed, imported - allowed


def test_backoff_doubles_then_caps() -> None:
    p = RetryPolicy(base_delay_s=1, multiplier=2, max_delay_s=5, jitter=0)
    assert [backoff_delay(p, n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert backoff_delay(p, 10_000) == 5


@given(retry_policies, st.integers(1, 200), st.floats(0, 1))
def test_backoff_is_bounded(p: RetryPolicy, n: int, draw: float) -> None:
    delay = backoff_delay(p, n, draw)
    assert 0 <= delay <= p.max_delay_s
    raw = min(p.base_delay_s * p.multiplier ** (n - 1), p.max_delay_s)
    assert raw * (1 - p.jitter) - 1e-9 <= delay <= raw * (1 + p.jitter) + 1e-9


@given(retry_policies, st.integers(1, 50))
def test_backoff_without_jitter_never_shrinks(p: RetryPolicy, n: int) -> None:
    assert backoff_delay(p, n + 1, 0.5) >= backoff_delay(p, n, 0.5)


def test_backoff_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        backoff_delay(RetryPolicy(), 0)
    with pytest.raises(ValueError):
        backoff_delay(RetryPolicy(), 1, 1.5)
    with pytest.raises(ValueError, match="max_delay_s"):
        RetryPolicy(base_delay_s=10, max_delay_s=1)


def test_after_receipt_cases() -> None:
    p = RetryPolicy(max_attempts_per_channel=3, base_delay_s=1, max_delay_s=10, jitter=0)
    assert after_receipt(p, 1, ReceiptStatus.delivered, False).action is Action.done
    assert after_receipt(p, 1, ReceiptStatus.rejected, False).action is Action.failover
    assert after_receipt(p, 1, ReceiptStatus.throttled, False).action is Action.failover
    retry = after_receipt(p, 1, ReceiptStatus.failed, True)
    assert (retry.action, retry.delay_s) == (Action.retry, 1)
    assert after_receipt(p, 2, ReceiptStatus.failed, True).delay_s == 2
    assert after_receipt(p, 3, ReceiptStatus.failed, True).action is Action.failover
    # the provider's Retry-After lengthens the wait, within our cap; past it we move on
    assert after_receipt(p, 1, ReceiptStatus.throttled, True, retry_after_s=7).delay_s == 7
    assert after_receipt(p, 1, ReceiptStatus.throttled, True, retry_after_s=60).action is Action.failover


@given(
    retry_policies,
    st.integers(0, 5),
    st.lists(st.tuples(st.sampled_from(list(ReceiptStatus)), st.booleans()), max_size=200),
)
def test_a_simulated_ladder_is_bounded_and_tries_channels_in_order(
    p: RetryPolicy, channels: int, receipts: list[tuple[ReceiptStatus, bool]]
) -> None:
    """Drive the decisions as ``deliver`` does with arbitrary receipts: it always ends,
    never exceeds the bound, and moves only forward through the channels."""
    feed = iter(receipts)
    sent: list[int] = []
    delivered = False
    for index in range(channels):
        attempt = 1
        while True:
            status, retryable = next(feed, (ReceiptStatus.failed, True))
            sent.append(index)
            decision = after_receipt(p, attempt, status, retryable)
            if decision.action is Action.retry:
                assert 0 <= decision.delay_s <= p.max_delay_s
                attempt += 1
                continue
            delivered = decision.action is Action.done
            break
        if delivered:
            break
    assert len(sent) <= max_attempts(p, channels)
    assert sent == sorted(sent)
    if delivered:
        assert outcome_status(channels, True, []) is OutcomeStatus.delivered


def test_cost_guard_per_call_and_per_hour() -> None:
    caps = CostCaps(sms_per_call=2, voice_per_call=1, sms_per_hour=5, voice_per_hour=3)
    assert check_cost(caps, ChannelKind.sms, CostUsage(1, 4)).allowed
    per_call = check_cost(caps, ChannelKind.sms, CostUsage(2, 0))
    assert (per_call.allowed, per_call.scope, per_call.limit, per_call.used, per_call.alert) == (
        False,
        CostScope.call,
        2,
        2,
        True,
    )
    assert per_call.decision == "blocked_by_cost_guard"
    assert per_call.reason == "blocked_by_cost_guard: 2/2 per call"
    assert check_cost(caps, ChannelKind.sms, CostUsage(0, 0)).decision == "allowed"
    hourly = check_cost(caps, ChannelKind.voice, CostUsage(0, 3))
    assert (hourly.allowed, hourly.scope) == (False, CostScope.hour)
    # a notice about no call is held only by the hourly cap
    assert check_cost(caps, ChannelKind.sms, CostUsage(9, 0), has_call=False).allowed
    for free in (ChannelKind.robot, ChannelKind.email, ChannelKind.app):
        assert check_cost(caps, free, CostUsage(10**6, 10**6)).allowed


@given(
    st.integers(0, 50),
    st.integers(0, 50),
    st.integers(0, 100),
    st.integers(0, 100),
    st.sampled_from([ChannelKind.sms, ChannelKind.voice]),
)
def test_cost_guard_allows_exactly_below_both_caps(
    cap_call: int, cap_hour: int, used_call: int, used_hour: int, kind: ChannelKind
) -> None:
    caps = CostCaps(
        sms_per_call=cap_call, voice_per_call=cap_call, sms_per_hour=cap_hour, voice_per_hour=cap_hour
    )
    verdict = check_cost(caps, kind, CostUsage(used_call, used_hour))
    assert verdict.allowed == (used_call < cap_call and used_hour < cap_hour)
    assert verdict.alert == (not verdict.allowed)


@given(st.lists(st.floats(0, 10_000), max_size=50), st.floats(0, 10_000))
def test_rolling_window(times: list[float], now: float) -> None:
    kept = in_window(times, now, 3600)
    assert all(now - 3600 < t <= now for t in kept)
    assert len(kept) == sum(1 for t in times if now - 3600 < t <= now)


def test_outcome_status() -> None:
    assert outcome_status(0, False, []) is OutcomeStatus.no_channel
    assert outcome_status(2, False, [False, False]) is OutcomeStatus.failed
    assert outcome_status(2, False, [False, True]) is OutcomeStatus.blocked_by_cost_guard
    assert outcome_status(2, True, [True]) is OutcomeStatus.delivered


def test_what_stays_counted_against_the_cost_budget() -> None:
    from dispatcher.notifications.channels.policy import counts_against_cost

    assert counts_against_cost(ReceiptStatus.delivered, None)
    assert counts_against_cost(ReceiptStatus.failed, "timeout")  # may have been sent
    assert counts_against_cost(ReceiptStatus.failed, "network_error")
    assert not counts_against_cost(ReceiptStatus.failed, "http_503")
    assert not counts_against_cost(ReceiptStatus.throttled, "isv.BUSINESS_LIMIT_CONTROL")
    assert not counts_against_cost(ReceiptStatus.rejected, "isv.SMS_TEMPLATE_ILLEGAL")
