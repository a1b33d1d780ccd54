"""Escalation: the default timeline, stale timers, snapshots, and config errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.calls.config_files import load_policies
from dispatcher.calls.escalation import (
    STALE_REASONS,
    EscalationConfigError,
    PlannedTimer,
    Policy,
    PolicySet,
    Progress,
    cancelled_by,
    from_snapshot,
    initial_timers,
    on_timer_due,
    opening,
    paging_of,
    snapshot,
)

REPO = Path(__file__).resolve().parents[3]
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
    # paging the station's people: at once, then every 30 s page timeout, at most 10 more
    pages = [t for t, a in fired if a == "page_station"]
    # ... and the voice round before the county at 120 s, closed a timeout later
    assert pages == sorted([30.0 * n for n in range(11)] + [120.0, 180.0])
    # the contact ladder: from 180 s, every 120 s contact timeout (the shell stops the
    # repeats once someone is going or every contact has been told)
    contacts = [t for t, a in fired if a == "notify_contacts"]
    assert contacts == [180.0 + 120.0 * n for n in range(16)]
    others = [(t, a) for t, a in fired if a not in ("remind", "page_station", "notify_contacts")]
    assert others == [
        (0.0, "alert_station"),
        (60.0, "escalate_street"),
        (180.0, "escalate_county"),
        (float(area_limit_s), "alert_supervisor"),
    ]


def test_ack_makes_later_steps_stale() -> None:
    acked = Progress(acknowledged=True, on_scene=False, closed=False, escalation_level=0)
    fired = run(snap(), until_s=2000, progress_at={45.0: acked})
    assert fired == [
        (0.0, "alert_station"),
        (0.0, "page_station"),
        (20.0, "remind"),
        (30.0, "page_station"),  # the first person's page timed out: the next one
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
    policy = snap()  # alert, remind, street, county, contacts, supervisor, page, voice page
    assert cancelled_by("acknowledged", policy) == {1, 2, 3, 4, 6, 7}
    assert cancelled_by("on_scene", policy) == {1, 2, 3, 4, 5, 6, 7}
    assert cancelled_by("closed", policy) == set(range(8))


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
    [supervisor] = [s for s in restored.steps if s.action == "alert_supervisor"]
    assert supervisor.after_s == 1800 and supervisor.after is None
    assert snapshot(restored, travel_limit_s=1800) == body  # idempotent, JSON-stable
    assert [s.action for s in restored.steps] == [s.action for s in policy.steps]
    with pytest.raises(ValueError, match="format"):
        from_snapshot({k: v for k, v in body.items() if k != "format"})
    with pytest.raises(ValueError, match="unresolved"):
        initial_timers(policy, T0)


def test_a_snapshot_rebuilt_again_is_the_same_policy_and_a_bad_one_fails_every_time() -> None:
    """from_snapshot keeps rebuilt policies by their JSON text: the same snapshot (another
    dict of the same content) gives the same policy, a different one its own, and a bad
    one raises on every call, never a policy kept from before."""
    body = snapshot(POLICIES.select("emergency", "P1"), travel_limit_s=1800)
    first = from_snapshot(body)
    again = from_snapshot(json.loads(json.dumps(body)))
    assert again == first
    other = from_snapshot(snapshot(POLICIES.select("emergency", "P1"), travel_limit_s=600))
    assert other != first
    bad = {**body, "format": 999}
    for _ in range(2):
        with pytest.raises(ValueError, match="format"):
            from_snapshot(bad)
    body["steps"] = body["steps"][:1]  # a caller's dict changed afterwards: its own policy
    assert len(from_snapshot(body).steps) == 1 and len(first.steps) > 1


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


def test_page_station_repeats_every_paging_timeout_and_checks_its_keys(tmp_path: Path) -> None:
    step = POLICIES.select("emergency", "P1").steps[-2]  # the last is the voice round before the county
    assert step.action == "page_station" and step.paging is not None
    assert step.repeat_every_s == step.paging.timeout_s == 30 and step.max_repeats == step.paging.max_people
    assert paging_of(snapshot(POLICIES.select("emergency", "P1"), travel_limit_s=900)) == step.paging
    assert paging_of(snapshot(POLICIES.select("trouble", "P4"), travel_limit_s=900)) is None
    head = "policies: [{name: all, steps: ["
    with pytest.raises(EscalationConfigError, match="leave repeat_every_s out"):
        load_policies(
            write(
                tmp_path,
                head + "{action: page_station, after_s: 0, until: acknowledged, repeat_every_s: 5}]}]",
            )
        )
    with pytest.raises(EscalationConfigError, match="only with action page_station"):
        load_policies(
            write(tmp_path, head + "{action: remind, after_s: 0, until: acknowledged, paging: {}}]}]")
        )
    with pytest.raises(EscalationConfigError, match="mode"):
        load_policies(
            write(
                tmp_path,
                head + "{action: page_station, after_s: 0, until: acknowledged, paging: {mode: shout}}]}]",
            )
        )


# --------------------------------------------------------------------------- opening (issue 15)


@pytest.mark.parametrize("event_class", ["emergency", "urgent", "trouble", "mass_offline", "anything"])
def test_every_policy_fires_its_opening_step_with_the_call_and_stores_the_rest(event_class: str) -> None:
    """Step 0, due the instant the call opens, fires with the call; every other step's
    timer is stored (a later step due at once too), exactly as initial_timers plans."""
    policy = snap(event_class, "P1")
    plan = opening(policy, T0)
    fired = [p for p, _ in plan.fire]
    assert fired == [PlannedTimer(0, "alert_station", T0, 0)]
    assert sorted(fired + list(plan.timers), key=lambda t: (t.due_at, t.step)) == initial_timers(policy, T0)
    assert all(t.step != 0 for t in plan.timers)
    for planned, decision in plan.fire:
        assert decision == on_timer_due(policy, planned.step, 0, T0, WAITING)


def test_an_opening_step_that_repeats_plans_its_next_repetition() -> None:
    policy = Policy.model_validate(
        {
            "name": "nag",
            "steps": [
                {
                    "action": "remind",
                    "after_s": 0,
                    "repeat_every_s": 30,
                    "max_repeats": 2,
                    "until": "acknowledged",
                },
                {"action": "escalate_street", "after_s": 60, "until": "acknowledged"},
            ],
        }
    )
    plan = opening(policy, T0)
    assert [(p.step, d.next) for p, d in plan.fire] == [
        (0, PlannedTimer(0, "remind", T0 + timedelta(seconds=30), 1))
    ]
    assert plan.timers == (PlannedTimer(1, "escalate_street", T0 + timedelta(seconds=60), 0),)


def test_an_opening_step_that_would_not_fire_is_stored_for_the_timer_loop_to_record() -> None:
    """A call opened at the street centre (a street's mass offline incident) is already at
    the level an immediate escalate_street names: stored, so the timer loop records it stale."""
    policy = Policy.model_validate(
        {
            "name": "street",
            "steps": [
                {"action": "escalate_street", "after_s": 0, "until": "acknowledged"},
                {"action": "alert_station", "after_s": 0, "until": "closed"},
            ],
        }
    )
    at_street = Progress(acknowledged=False, on_scene=False, closed=False, escalation_level=1)
    plan = opening(policy, T0, at_street)
    assert plan.fire == ()
    assert plan.timers == (PlannedTimer(0, "escalate_street", T0, 0), PlannedTimer(1, "alert_station", T0, 0))
    assert [p.step for p, _ in opening(policy, T0).fire] == [0], "a step 0 that is not an alert fires too"


def test_a_policy_whose_first_step_waits_fires_nothing_at_the_opening() -> None:
    policy = Policy.model_validate(
        {"name": "later", "steps": [{"action": "alert_station", "after_s": 30, "until": "closed"}]}
    )
    plan = opening(policy, T0)
    assert plan.fire == () and plan.timers == (
        PlannedTimer(0, "alert_station", T0 + timedelta(seconds=30), 0),
    )
