"""The call lifecycle table (dispatcher.calls.lifecycle): pure, over the enums."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.calls.lifecycle import (
    CLOSED_STATUSES,
    INITIAL_STATUSES,
    OPEN_STATUSES,
    CallAction,
    CallStatus,
    Refusal,
    acknowledged,
    allowed_from,
    device_state_after,
    is_closed,
    is_open,
    next_status,
    on_scene,
    resident_may_cancel,
)

# the order a call moves through while it is open; closing ends it
_RANK = {s: i for i, s in enumerate(OPEN_STATUSES)}


def _reachable() -> set[CallStatus]:
    seen: set[CallStatus] = set(INITIAL_STATUSES)
    todo = list(INITIAL_STATUSES)
    while todo:
        status = todo.pop()
        for action in CallAction:
            after = next_status(status, action)
            if isinstance(after, CallStatus) and after not in seen:
                seen.add(after)
                todo.append(after)
    return seen


def test_every_status_is_open_or_closed_and_reachable() -> None:
    assert set(OPEN_STATUSES) | set(CLOSED_STATUSES) == set(CallStatus)
    assert not set(OPEN_STATUSES) & set(CLOSED_STATUSES)
    assert _reachable() == set(CallStatus)


def test_the_table_as_operators_know_it() -> None:
    assert next_status(CallStatus.assigned, CallAction.acknowledge) is CallStatus.acknowledged
    assert next_status(CallStatus.open, CallAction.dispatch) is CallStatus.dispatched
    assert next_status(CallStatus.acknowledged, CallAction.dispatch) is CallStatus.dispatched
    # more responders for a call already under way: the status stays
    assert next_status(CallStatus.en_route, CallAction.dispatch) is CallStatus.en_route
    assert next_status(CallStatus.on_scene, CallAction.dispatch) is CallStatus.on_scene
    assert next_status(CallStatus.dispatched, CallAction.en_route) is CallStatus.en_route
    assert next_status(CallStatus.dispatched, CallAction.arrive) is CallStatus.on_scene
    assert next_status(CallStatus.en_route, CallAction.arrive) is CallStatus.on_scene
    assert next_status(CallStatus.open, CallAction.resolve) is CallStatus.resolved
    assert next_status(CallStatus.on_scene, CallAction.cancel) is CallStatus.cancelled
    assert next_status(CallStatus.resolved, CallAction.note) is CallStatus.resolved
    refused = next_status(CallStatus.acknowledged, CallAction.acknowledge)
    assert refused == Refusal(CallAction.acknowledge, CallStatus.acknowledged)
    assert isinstance(refused, Refusal)
    assert refused.message == "cannot acknowledge a call that is acknowledged"
    assert isinstance(next_status(CallStatus.assigned, CallAction.en_route), Refusal)
    assert isinstance(next_status(CallStatus.on_scene, CallAction.arrive), Refusal)
    assert CallAction("en-route") is CallAction.en_route


def test_helpers_follow_the_statuses() -> None:
    assert [s for s in CallStatus if not acknowledged(s)] == [CallStatus.open, CallStatus.assigned]
    assert [s for s in CallStatus if on_scene(s)] == [CallStatus.on_scene, CallStatus.resolved]
    assert [s for s in CallStatus if resident_may_cancel(s)] == [
        CallStatus.open,
        CallStatus.assigned,
        CallStatus.acknowledged,
    ]
    assert device_state_after(CallAction.arrive) == "on_scene"
    assert device_state_after(CallAction.cancel) == "resolved"
    assert device_state_after(CallAction.note) is None


@pytest.mark.parametrize("action", list(CallAction))
def test_allowed_from_is_where_the_table_answers(action: CallAction) -> None:
    for status in CallStatus:
        accepted = not isinstance(next_status(status, action), Refusal)
        assert accepted == (status in allowed_from(action))


@given(st.sampled_from(CLOSED_STATUSES), st.sampled_from(list(CallAction)))
def test_no_action_leaves_a_closed_call(status: CallStatus, action: CallAction) -> None:
    after = next_status(status, action)
    assert isinstance(after, Refusal) or after is status
    assert isinstance(after, Refusal) or action is CallAction.note


@given(st.sampled_from(INITIAL_STATUSES), st.lists(st.sampled_from(list(CallAction)), max_size=30))
def test_every_reachable_status_can_still_close(start: CallStatus, actions: list[CallAction]) -> None:
    """Whatever operators did (refused actions change nothing), the call can be closed:
    resolve and cancel are accepted in every open status, and a closed call stays closed."""
    status = start
    for action in actions:
        after = next_status(status, action)
        if isinstance(after, CallStatus):
            if is_closed(status):
                assert after is status
            status = after
        assert is_open(status) or is_closed(status)
    if is_open(status):
        assert next_status(status, CallAction.resolve) is CallStatus.resolved
        assert next_status(status, CallAction.cancel) is CallStatus.cancelled


@given(st.sampled_from(OPEN_STATUSES), st.sampled_from(list(CallAction)))
def test_an_open_call_only_moves_forward(status: CallStatus, action: CallAction) -> None:
    after = next_status(status, action)
    if isinstance(after, CallStatus) and is_open(after):
        assert _RANK[after] >= _RANK[status]
        # progress is never lost: acknowledged stays acknowledged, on scene stays on scene
        assert acknowledged(after) or not acknowledged(status)
        assert on_scene(after) or not on_scene(status)
