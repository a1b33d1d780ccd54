"""The service order's state table: every allowed step, every refused one, and what each
step must carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.orders.lifecycle import (
    OrderAction,
    OrderStatus,
    TransitionError,
    audit_kind,
    transition,
)

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
A, S = OrderAction, OrderStatus

HAPPY: list[tuple[OrderAction, dict[str, Any], OrderStatus]] = [
    (A.assign, {"provider_id": "p1"}, S.assigned),
    (A.accept, {}, S.accepted),
    (A.start, {}, S.started),
    (A.done, {"notes": "送餐到门口"}, S.done),
    (A.confirm, {"satisfaction": 5}, S.confirmed),
    (A.close, {}, S.closed),
]
ALLOWED = {(S.created, A.assign), (S.assigned, A.assign)} | {
    (before, action)
    for (action, _, _), before in zip(
        HAPPY[1:], [S.assigned, S.accepted, S.started, S.done, S.confirmed], strict=True
    )
}
CANCELLABLE = {S.created, S.assigned, S.accepted, S.started, S.done, S.confirmed}


def test_the_happy_path() -> None:
    status, started = S.created, None
    for action, body, expected in HAPPY:
        step = transition(status, action, body, started_at=started, now=NOW)
        assert step.status is expected and step.values["status"] == expected.value
        assert step.detail["from"] == status.value and step.detail["to"] == expected.value
        if action is A.start:
            started = NOW - timedelta(minutes=40)
        status = step.status


def test_done_measures_the_duration_from_check_in() -> None:
    step = transition(S.started, A.done, {"notes": " ok "}, started_at=NOW - timedelta(minutes=42), now=NOW)
    assert step.values["duration_s"] == 42 * 60 and step.values["done_notes"] == "ok"
    assert step.detail == {"from": "started", "to": "done", "duration_s": 2520, "notes": "ok"}


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("action", list(A))
def test_only_the_table_moves(status: OrderStatus, action: OrderAction) -> None:
    body: dict[str, Any] = {"provider_id": "p1", "satisfaction": 4, "reason": "家属取消"}
    allowed = (status, action) in ALLOWED or (action is A.cancel and status in CANCELLABLE)
    if allowed:
        assert transition(status, action, body, started_at=NOW, now=NOW).status
    else:
        with pytest.raises(TransitionError) as err:
            transition(status, action, body, started_at=NOW, now=NOW)
        assert err.value.code == "INVALID_TRANSITION"


@pytest.mark.parametrize(
    ("status", "action", "body", "code"),
    [
        (S.created, A.assign, {}, "MISSING_ASSIGNEE"),
        (S.created, A.assign, {"provider_id": "p1", "station_id": "cm1"}, "TWO_ASSIGNEES"),
        (S.assigned, A.cancel, {}, "MISSING_REASON"),
        (S.assigned, A.cancel, {"reason": "   "}, "MISSING_REASON"),
        (S.assigned, A.cancel, {"reason": 5}, "BAD_REASON"),
        (S.done, A.confirm, {}, "BAD_SATISFACTION"),
        (S.done, A.confirm, {"satisfaction": 0}, "BAD_SATISFACTION"),
        (S.done, A.confirm, {"satisfaction": 6}, "BAD_SATISFACTION"),
        (S.done, A.confirm, {"satisfaction": True}, "BAD_SATISFACTION"),
        (S.done, A.confirm, {"satisfaction": 3, "not_done": True}, "BAD_CONFIRMATION"),
        (S.started, A.done, {"notes": "x" * 2001}, "BAD_NOTES"),
        (S.created, "fly", {}, "UNKNOWN_ACTION"),
    ],
)
def test_bad_inputs_are_refused_with_a_code(
    status: OrderStatus, action: str, body: dict[str, Any], code: str
) -> None:
    with pytest.raises(TransitionError) as err:
        transition(status, action, body, started_at=NOW, now=NOW)
    assert err.value.code == code and str(err.value)


def test_not_done_is_a_confirmation_without_a_score() -> None:
    step = transition(S.done, A.confirm, {"not_done": True, "note": "没人来"}, started_at=NOW, now=NOW)
    assert step.values["satisfaction"] is None and step.values["not_done"] is True
    assert step.detail["note"] == "没人来"


def test_done_without_check_in_is_refused() -> None:
    with pytest.raises(TransitionError) as err:
        transition(S.started, A.done, {}, started_at=None, now=NOW)
    assert err.value.code == "NOT_STARTED"


def test_audit_kinds_are_the_order_kinds_of_the_log() -> None:
    from dispatcher.audit.chain import AuditKind

    assert {audit_kind(a) for a in A} | {audit_kind("created")} <= set(AuditKind)


def test_assign_replaces_the_taker_and_keeps_what_is_not_named() -> None:
    staff_only = transition(S.assigned, A.assign, {"staff_id": "cm1-r1"}, started_at=None, now=NOW)
    assert staff_only.values == {"staff_id": "cm1-r1", "status": "assigned", "assigned_at": NOW}
    station = transition(S.assigned, A.assign, {"station_id": "cm1"}, started_at=None, now=NOW)
    assert station.values["provider_id"] is None and station.values["assignee_station_id"] == "cm1"
    assert "staff_id" not in station.values


@given(st.lists(st.sampled_from(list(A)), max_size=12))
def test_any_sequence_moves_forward_only_and_ends_stay_ended(actions: list[OrderAction]) -> None:
    order = [S.created, S.assigned, S.accepted, S.started, S.done, S.confirmed, S.closed]
    body: dict[str, Any] = {"staff_id": "s1", "satisfaction": 3, "reason": "r"}
    status = S.created
    for action in actions:
        try:
            step = transition(status, action, body, started_at=NOW, now=NOW)
        except TransitionError:
            continue
        assert status not in (S.closed, S.cancelled), "an ended order never moves"
        if step.status is not S.cancelled:
            assert order.index(step.status) >= order.index(status)
        status = step.status
