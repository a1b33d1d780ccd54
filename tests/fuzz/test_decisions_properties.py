"""Properties of the two pure decisions every call goes through: which station, and
whether a due escalation timer fires. Hypothesis draws the station trees, staffing,
policies and progress sequences; the properties are the promises the docstrings make."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.calls.escalation import (
    ESCALATION_LEVEL,
    STALE_REASONS,
    Policy,
    Progress,
    Step,
    cancelled_by,
    initial_timers,
    on_timer_due,
)
from dispatcher.calls.routing import REASONS, RoutingConfig, StationNode, choose_station

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------ routing

IN_RANGE = {
    "OWN_STATION_STAFFED_IN_RANGE",
    "NEAREST_STAFFED_IN_STREET",
    "NEAREST_STAFFED_TO_DEVICE",
}


@st.composite
def station_trees(draw: st.DrawFn) -> dict[str, StationNode]:
    """County roots, street centres under them, communities under streets; sometimes
    broken (dangling parents, a community under a community, a cycle) as registries are."""
    ids = iter(f"s{i:02d}" for i in range(100))
    nodes: list[StationNode] = []

    def node(tier: str, parent: str | None) -> StationNode:
        return StationNode(
            id=next(ids),
            name="x",
            tier=tier,  # type: ignore[arg-type]
            parent_id=parent,
            lat=0.0,
            lon=0.0,
            area=draw(st.sampled_from(["urban", "rural"])),
            on_duty_responders=draw(st.integers(0, 3)),
        )

    counties = [node("county", None) for _ in range(draw(st.integers(0, 2)))]
    nodes += counties
    streets = []
    for _ in range(draw(st.integers(0, 4))):
        parent = draw(st.sampled_from([c.id for c in counties] + ["missing"])) if counties else None
        streets.append(node("street", parent))
    nodes += streets
    for _ in range(draw(st.integers(0, 8))):
        choices = [s.id for s in streets] + [n.id for n in nodes if n.tier == "community"] + ["missing", None]
        nodes.append(node("community", draw(st.sampled_from(choices))))
    if draw(st.booleans()) and nodes:  # a cycle: the first node's parent is the last
        first = nodes[0]
        nodes[0] = StationNode(
            first.id, first.name, first.tier, nodes[-1].id, 0.0, 0.0, first.area, first.on_duty_responders
        )
    return {n.id: n for n in nodes}


@st.composite
def routing_cases(draw: st.DrawFn) -> dict[str, object]:
    stations = draw(station_trees())
    known = sorted(stations)
    minutes = st.floats(0, 120, allow_nan=False)
    travel = draw(st.dictionaries(st.sampled_from(known), minutes) if known else st.just({}))
    home = draw(st.sampled_from([*known, "nowhere"]))
    exclude = frozenset(draw(st.sets(st.sampled_from(known))) if known else set())
    return {
        "home_station_id": home,
        "origin": (32.7, 112.8),
        "origin_from_device": draw(st.booleans()),
        "area": draw(st.sampled_from(["urban", "rural"])),
        "stations": stations,
        "travel_min": travel,
        "cfg": RoutingConfig(),
        "exclude": exclude,
    }


@FAST
@given(routing_cases())
def test_choose_station_promises(case: dict[str, object]) -> None:
    decision = choose_station(**case)  # type: ignore[arg-type]
    stations: dict[str, StationNode] = case["stations"]  # type: ignore[assignment]
    travel: dict[str, float] = case["travel_min"]  # type: ignore[assignment]
    exclude: frozenset[str] = case["exclude"]  # type: ignore[assignment]
    cfg: RoutingConfig = case["cfg"]  # type: ignore[assignment]
    limit = cfg.limit_min(case["area"])  # type: ignore[arg-type]

    assert decision.reasons, "a decision always says why"
    assert all(r in REASONS for r in decision.reasons)
    assert decision == choose_station(**case)  # type: ignore[arg-type]  # deterministic
    if decision.station_id is None:
        assert decision.reasons[-1] == "NO_STATION_AVAILABLE"
        assert decision.tier is None and decision.travel_min is None
        return
    picked = stations.get(decision.station_id)
    assert picked is not None, "the pick exists"
    assert decision.tier == picked.tier
    assert decision.station_id not in exclude, "an excluded station never gets the call again"
    assert decision.travel_min == travel.get(picked.id)
    if picked.tier == "community":
        assert picked.on_duty_responders > 0, "a community station is only chosen when staffed"
    if picked.tier == "street":
        assert picked.on_duty_responders > 0
    if IN_RANGE & set(decision.reasons):
        assert decision.travel_min is not None and decision.travel_min <= limit
        assert "BEYOND_LIMIT" not in decision.reasons
    beyond = decision.travel_min is None or decision.travel_min > limit
    assert ("BEYOND_LIMIT" in decision.reasons) == beyond


@FAST
@given(routing_cases())
def test_choice_does_not_depend_on_dict_order(case: dict[str, object]) -> None:
    stations: dict[str, StationNode] = case["stations"]  # type: ignore[assignment]
    travel: dict[str, float] = case["travel_min"]  # type: ignore[assignment]
    reordered = {
        **case,
        "stations": dict(reversed(stations.items())),
        "travel_min": dict(reversed(travel.items())),
    }
    assert choose_station(**case) == choose_station(**reordered)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ escalation

OPENED = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def steps(draw: st.DrawFn) -> Step:
    repeat = draw(st.one_of(st.none(), st.integers(1, 600).map(float)))
    fields: dict[str, object] = {
        "action": draw(
            st.sampled_from(
                [
                    "alert_station",
                    "remind",
                    "escalate_street",
                    "escalate_county",
                    "notify_contacts",
                    "alert_supervisor",
                ]
            )
        ),
        "after_s": float(draw(st.integers(0, 3600))),
        "until": draw(st.sampled_from(["acknowledged", "on_scene", "closed"])),
        "repeat_every_s": repeat,
    }
    if fields["action"] == "notify_contacts":
        # the contact ladder always repeats, every contacts.timeout_s (120 s by default)
        fields.pop("repeat_every_s")
        if repeat is not None:
            fields["contacts"] = {"timeout_s": repeat}
    if repeat is not None or fields["action"] == "notify_contacts":
        fields["max_repeats"] = draw(st.integers(0, 6))
    return Step.model_validate(fields)


policies = st.lists(steps(), min_size=1, max_size=5).map(lambda s: Policy(name="p", steps=tuple(s)))


@st.composite
def progress_timelines(draw: st.DrawFn) -> list[tuple[float, str]]:
    """Forward-only progress: acknowledged, on scene, closed, each maybe, in order."""
    out: list[tuple[float, str]] = []
    at = 0.0
    for change in ("acknowledged", "on_scene", "closed"):
        if draw(st.booleans()):
            at += draw(st.integers(0, 3600))
            out.append((at, change))
    return out


def progress_at(timeline: list[tuple[float, str]], at_s: float, level: int) -> Progress:
    done = {change for t, change in timeline if t <= at_s}
    return Progress(
        acknowledged="acknowledged" in done or "on_scene" in done,
        on_scene="on_scene" in done,
        closed="closed" in done,
        escalation_level=level,
    )


@FAST
@given(policies, progress_timelines())
def test_timer_run_against_progress(policy: Policy, timeline: list[tuple[float, str]]) -> None:
    """Play every timer through in due order, as the shell's sweep would."""
    queue = initial_timers(policy, OPENED)
    assert [t.due_at for t in queue] == sorted(t.due_at for t in queue)
    assert len(queue) == len(policy.steps)
    fired: dict[int, list[datetime]] = {}
    level = 0
    guard = 0
    while queue:
        guard += 1
        assert guard < 1000, "timers must run out"
        queue.sort(key=lambda t: (t.due_at, t.step))
        timer = queue.pop(0)
        at_s = (timer.due_at - OPENED).total_seconds()
        progress = progress_at(timeline, at_s, level)
        decision = on_timer_due(policy, timer.step, timer.repeat, timer.due_at, progress)
        step = policy.steps[timer.step]
        if not decision.fire:
            assert decision.stale_reason in STALE_REASONS and decision.next is None
            continue
        assert decision.stale_reason is None
        # a fired step was still needed
        assert not progress.closed
        if step.until == "acknowledged":
            assert not progress.acknowledged, "no reminder after somebody acknowledged"
        if step.until == "on_scene":
            assert not progress.on_scene
        # and, had the shell cancelled on each progress change, it would not have been cancelled
        changes_so_far = [c for t, c in timeline if t <= at_s]
        assert all(timer.step not in cancelled_by(c, policy) for c in changes_so_far)  # type: ignore[arg-type]
        fired.setdefault(timer.step, []).append(timer.due_at)
        level = max(level, ESCALATION_LEVEL.get(step.action, 0))
        if decision.next is not None:
            assert step.repeat_every_s is not None
            assert decision.next.step == timer.step and decision.next.repeat == timer.repeat + 1
            assert decision.next.due_at - timer.due_at == timedelta(seconds=step.repeat_every_s)
            assert decision.next.repeat <= step.max_repeats
            queue.append(decision.next)
    for index, times in fired.items():
        step = policy.steps[index]
        assert len(times) <= 1 + (step.max_repeats if step.repeat_every_s is not None else 0)
        assert times[0] == OPENED + timedelta(seconds=step.after_s or 0.0)
        if len(times) > 1:  # a fixed cadence from the first due time, never drifting
            assert step.repeat_every_s is not None
            gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
            assert gaps == {step.repeat_every_s}
        if step.action in ESCALATION_LEVEL:
            assert len(times) == 1, "an escalation to a level happens once"


@FAST
@given(
    policies,
    st.integers(-2, 8),
    st.integers(0, 8),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2),
)
def test_on_timer_due_never_fires_a_stale_step(
    policy: Policy, step: int, repeat: int, ack: bool, on_scene: bool, closed: bool, level: int
) -> None:
    progress = Progress(acknowledged=ack, on_scene=on_scene, closed=closed, escalation_level=level)
    decision = on_timer_due(policy, step, repeat, OPENED, progress)
    assert decision == on_timer_due(policy, step, repeat, OPENED, progress)
    if not 0 <= step < len(policy.steps):
        assert decision == decision.__class__(False, "UNKNOWN_STEP", None)
        return
    s = policy.steps[step]
    if decision.fire:
        assert not closed
        assert not (s.until == "acknowledged" and (ack or on_scene))
        assert not (s.until == "on_scene" and on_scene)
        assert level < ESCALATION_LEVEL.get(s.action, 99)
        assert repeat <= (s.max_repeats if s.repeat_every_s is not None else 0)
    else:
        assert decision.stale_reason in STALE_REASONS and decision.next is None
    if decision.next is not None:
        assert decision.next.repeat == repeat + 1 <= s.max_repeats
