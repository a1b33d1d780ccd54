"""Escalation: the default timeline, stale timers, snapshots, and config errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.escalation import (
    STALE_REASONS,
    EscalationConfigError,
    PlannedTimer,
    Policy,
    PolicySet,
    Progress,
    cancelled_by,
    from_snapshot,
    initial_timers,
    load_policies,
    on_timer_due,
    snapshot,
)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
POLICIES = load_policies(REPO / "config" / "escalation.yaml")
WAITING = Progress(acknowledged=False, on_scene=False, closed=False, escalation_level=0)


def snap(event_class: str = "emergency", priority: str = "P1", limit_s: float = 900) -> Policy:
    return from_snapshot(snapshot(POLICIES.select(event_class, priority), travel_limit_s=limit_s))


def run(
    policy: Policy, until_s: float, progress_at: dict[float, Progress] | None = None
) -> list[tuple[float, str]]:
    """Drive the timers like the shell would: fire what is due, store what comes next."""
    progress_at = progress_at or {}
    pending = initial_timers(policy, T0)
    fired: list[tuple[float, str]] = []
    progress = WAITING
    while pending:
        pending.sort(key=lambda t: (t.due_at, t.step))
        timer = pending.pop(0)
        at = (timer.due_at - T0).total_seconds()
        if at > until_s:
            break
        for when in sorted(progress_at):
            if when <= at:
                progress = progress_at[when]
        decision = on_timer_due(policy, timer.step, timer.repeat, timer.due_at, progress)
        if decision.fire:
            fired.append((at, timer.action))
            if timer.action == "escalate_street":
                progress = Progress(progress.acknowledged, progress.on_scene, progress.closed, 1)
            elif timer.action == "escalate_county":
                progress = Progress(progress.acknowledged, progress.on_scene, progress.closed, 2)
        else:
            assert decision.next is None and decision.stale_reason in STALE_REASONS
        if decision.next is not None:
            pending.append(decision.next)
    return fired


@pytest.mark.parametrize(("area_limit_s"), [900, 1800])
def test_default_emergency_timeline(area_limit_s: float) -> None:
    fired = run(snap(limit_s=area_limit_s), until_s=2000)
    reminders = [t for t, a in fired if a == "remind"]
    assert reminders == [20.0 * n for n in range(1, 22)]  # first + 20 repeats, fixed cadence
    others = [(t, a) for t, a in fired if a != "remind"]
    assert others == [
        (0.0, "alert_station"),
        (60.0, "escalate_street"),
        (180.0, "escalate_county"),
        (180.0, "notify_contacts"),
        (float(area_limit_s), "alert_supervisor"),
    ]


def test_ack_makes_later_steps_stale() -> None:
    acked = Progress(acknowledged=True, on_scene=False, closed=False, escalation_level=0)
    fired = run(snap(), until_s=2000, progress_at={45.0: acked})
    assert fired == [
        (0.0, "alert_station"),
        (20.0, "remind"),
        (40.0, "remind"),
        (900.0, "alert_supervisor"),  # acknowledged is not on scene
    ]
    policy = snap()
    d = on_timer_due(policy, 1, 2, T0 + timedelta(seconds=60), acked)
    assert (d.fire, d.stale_reason, d.next) == (False, "ALREADY_ACKNOWLEDGED", None)
    on_scene = Progress(True, True, False, 0)
    assert on_timer_due(policy, 5, 0, T0, on_scene).stale_reason == "ALREADY_ON_SCENE"
    closed = Progress(False, False, True, 0)
    assert on_timer_due(policy, 0, 0, T0, closed).stale_reason == "CALL_CLOSED"
    at_county = Progress(False, False, False, 2)
    assert on_timer_due(policy, 2, 0, T0, at_county).stale_reason == "LEVEL_ALREADY_REACHED"
    assert on_timer_due(policy, 99, 0, T0, WAITING).stale_reason == "UNKNOWN_STEP"


def test_repeat_cadence_does_not_drift() -> None:
    policy = snap()
    due = T0 + timedelta(seconds=20)
    d = on_timer_due(policy, 1, 0, due, WAITING)
    assert d.next == PlannedTimer(1, "remind", T0 + timedelta(seconds=40), 1)
    assert on_timer_due(policy, 1, 20, due, WAITING).next is None  # max_repeats reached
    assert on_timer_due(policy, 1, 21, due, WAITING).stale_reason == "REPEATS_EXHAUSTED"


def test_cancelled_by() -> None:
    policy = snap()  # alert, remind, street, county, contacts, supervisor
    assert cancelled_by("acknowledged", policy) == {1, 2, 3, 4}
    assert cancelled_by("on_scene", policy) == {1, 2, 3, 4, 5}
    assert cancelled_by("closed", policy) == set(range(6))


def test_trouble_and_urgent_are_gentler() -> None:
    trouble = run(snap("trouble", "P4"), until_s=5 * 3600)
    assert trouble[:2] == [(0.0, "alert_station"), (3600.0, "remind")]
    assert (14400.0, "escalate_street") in trouble
    assert all(a not in ("escalate_county", "notify_contacts") for _, a in trouble)
    assert POLICIES.select("urgent", "P2").name == "urgent"
    assert POLICIES.select("emergency", "P4").name == "emergency"


def test_snapshot_round_trip() -> None:
    policy = POLICIES.select("emergency", "P1")
    body = snapshot(policy, travel_limit_s=1800)
    restored = from_snapshot(body)
    assert restored.steps[-1].after_s == 1800 and restored.steps[-1].after is None
    assert snapshot(restored, travel_limit_s=1800) == body  # idempotent, JSON-stable
    assert [s.action for s in restored.steps] == [s.action for s in policy.steps]
    with pytest.raises(ValueError, match="format"):
        from_snapshot({k: v for k, v in body.items() if k != "format"})
    with pytest.raises(ValueError, match="unresolved"):
        initial_timers(policy, T0)


@given(limit=st.floats(0, 7200), opened=st.datetimes(timezones=st.just(UTC)))
def test_initial_timers_sorted_and_offset(limit: float, opened: datetime) -> None:
    policy = snap(limit_s=limit)
    timers = initial_timers(policy, opened)
    assert [(t.due_at, t.step) for t in timers] == sorted((t.due_at, t.step) for t in timers)
    assert {t.step for t in timers} == set(range(len(policy.steps)))
    assert all(t.repeat == 0 for t in timers)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "escalation.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_bad_key_is_named(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        """
policies:
  - name: trouble
    match: {classes: [trouble]}
    steps:
      - {action: alert_station, after_s: 0, until: closed}
      - {action: remind, after_s: 60, repeat_evry_s: 60, until: acknowledged}
  - name: all
    steps: [{action: alert_station, after_s: 0, until: closed}]
""",
    )
    with pytest.raises(EscalationConfigError, match=r"policies\[trouble\]\.steps\[1\]\.repeat_evry_s"):
        load_policies(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "policies: [{name: e, match: {classes: [emergency]}, "
            "steps: [{action: alert_station, after_s: 0, until: closed}]}]",
            "no catch-all",
        ),
        (
            "policies: [{name: all, steps: [{action: alert_station, after_s: 0, until: closed}]},"
            " {name: e, match: {classes: [emergency]}, "
            "steps: [{action: alert_station, after_s: 0, until: closed}]}]",
            "must come last",
        ),
        (
            "policies: [{name: all, steps: [{action: alert_station, until: closed}]}]",
            r"policies\[all\]\.steps\[0\].*exactly one of after_s and after",
        ),
        (
            "policies: [{name: all, steps: [{action: page_everyone, after_s: 0, until: closed}]}]",
            r"policies\[all\]\.steps\[0\]\.action",
        ),
        (
            "policies: [{name: all, steps: [{action: remind, after_s: 0, until: acknowleged}]}]",
            r"policies\[all\]\.steps\[0\]\.until",
        ),
        ("polices: []", "unknown key 'polices'"),
    ],
)
def test_invalid_policies(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(EscalationConfigError, match=message):
        load_policies(write(tmp_path, text))


def test_shipped_file_has_a_catch_all() -> None:
    assert isinstance(POLICIES, PolicySet)
    assert POLICIES.policies[-1].match.catch_all
