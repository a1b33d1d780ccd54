"""Escalation policies: what happens, and when, while nobody answers a call.

Operators edit the policies in config/escalation.yaml; the peers' users' loudest
complaint was escalation they could not configure. A policy is an ordered list of steps,
each due a fixed time after the call opened, optionally repeating, and each with an
``until`` condition that makes it pointless once it holds (a reminder after someone has
acknowledged is noise, and noise trains people to ignore the real thing).

When a call opens, the selected policy is frozen onto it as a snapshot (the Grafana
OnCall idea): editing the file later never changes a call already running, and the
record shows which rules the call was handled under. Timers live in the database (the
shell's job); these functions only say which timers to create and, when one comes due,
whether it still means anything.

All times are parameters. Nothing here reads a clock.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dispatcher.paging.policy import PagingPolicy

__all__ = [
    "ACTIONS",
    "ESCALATION_LEVEL",
    "OPENING",
    "STALE_REASONS",
    "ContactLadder",
    "EscalationConfigError",
    "Match",
    "Opening",
    "PlannedTimer",
    "Policy",
    "PolicySet",
    "Progress",
    "Step",
    "TimerAction",
    "TimerDecision",
    "cancelled_by",
    "from_snapshot",
    "initial_timers",
    "on_timer_due",
    "opening",
    "snapshot",
]


class TimerAction(StrEnum):
    """What an escalation step does when its timer comes due."""

    alert_station = "alert_station"
    page_station = "page_station"
    remind = "remind"
    escalate_street = "escalate_street"
    escalate_county = "escalate_county"
    notify_contacts = "notify_contacts"
    alert_supervisor = "alert_supervisor"


Action = TimerAction
ACTIONS: tuple[str, ...] = tuple(a.value for a in TimerAction)
Until = Literal["acknowledged", "on_scene", "closed"]
ProgressChange = Literal["acknowledged", "on_scene", "closed"]
# mass_offline: one incident for many devices offline at once (dispatcher.incidents.service)
CallClass = Literal["emergency", "urgent", "trouble", "mass_offline"]
PriorityName = Literal["P1", "P2", "P3", "P4"]

# Call.escalation_level an escalate step brings the call to (0 = own station).
ESCALATION_LEVEL: dict[str, int] = {"escalate_street": 1, "escalate_county": 2}

# Progress only moves forward, and each later state implies the earlier ones: a
# responder on scene has in effect acknowledged, a closed call needs nothing at all.
_UNTIL_ORDER: dict[str, int] = {"acknowledged": 0, "on_scene": 1, "closed": 2}

STALE_REASONS: dict[str, str] = {
    "CALL_CLOSED": "The call is resolved or cancelled.",
    "ALREADY_ACKNOWLEDGED": "Someone acknowledged the call; the step was waiting for that.",
    "ALREADY_ON_SCENE": "A responder is on scene; the step was waiting for that.",
    "LEVEL_ALREADY_REACHED": "The call already sits at this escalation level or higher.",
    "UNKNOWN_STEP": "The timer names a step the call's policy snapshot does not have.",
    "REPEATS_EXHAUSTED": "The timer's repeat number is past the step's max_repeats.",
}

SNAPSHOT_FORMAT = 1


class EscalationConfigError(ValueError):
    """config/escalation.yaml cannot be used; the message names the policy and the key."""


class ContactLadder(BaseModel):
    """notify_contacts only: the resident's contacts are told one at a time, in their
    order, each given ``timeout_s`` to answer "I'm going" before the next is told
    (dispatcher/family/ladder.py decides)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(default=120.0, gt=0)


class Step(BaseModel):
    """One step of a policy. Exactly one of ``after_s`` and ``after`` says when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    after_s: float | None = Field(default=None, ge=0)
    # "travel_limit": the service circle of the call's area (15 min urban, 30 rural),
    # known only when the call opens, so it is resolved into after_s by snapshot().
    after: Literal["travel_limit"] | None = None
    repeat_every_s: float | None = Field(default=None, gt=0)
    max_repeats: int = Field(default=20, ge=0)
    until: Until
    # page_station only: who to page and how (dispatcher/paging/policy.py). The step
    # repeats every paging timeout (no repeat_every_s of its own): each firing times out
    # unanswered pages and pages the next person, until someone accepts (acknowledged).
    paging: PagingPolicy | None = None
    # notify_contacts only: the contact ladder's timeout. The step repeats every
    # contacts.timeout_s by itself (no repeat_every_s of its own); each firing tells the
    # next contact when the ladder says so. Absent in the file: the default timeout.
    contacts: ContactLadder | None = None

    @model_validator(mode="before")
    @classmethod
    def _cadence(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("action") == "notify_contacts":
            ladder = ContactLadder.model_validate(data.get("contacts") or {})
            if data.get("repeat_every_s") not in (None, ladder.timeout_s):
                raise ValueError("notify_contacts repeats every contacts.timeout_s; leave repeat_every_s out")
            data = {
                **data,
                "contacts": ladder.model_dump(mode="json"),
                "repeat_every_s": ladder.timeout_s,
                "max_repeats": data.get("max_repeats", 20),
            }
        if isinstance(data, dict) and data.get("action") == "page_station":
            policy = PagingPolicy.model_validate(data.get("paging") or {})
            if data.get("repeat_every_s") not in (None, float(policy.timeout_s), policy.timeout_s):
                raise ValueError("page_station repeats every paging.timeout_s; leave repeat_every_s out")
            data = {
                **data,
                "paging": policy.model_dump(mode="json"),
                "repeat_every_s": float(policy.timeout_s),
                "max_repeats": data.get("max_repeats", policy.max_people),
            }
        return data

    @model_validator(mode="after")
    def _one_when(self) -> Step:
        if (self.after_s is None) == (self.after is None):
            raise ValueError("give exactly one of after_s and after")
        if self.paging is not None and self.action != "page_station":
            raise ValueError("paging goes only with action page_station")
        if self.contacts is not None and self.action != "notify_contacts":
            raise ValueError("contacts goes only with action notify_contacts")
        if "max_repeats" in self.model_fields_set and self.repeat_every_s is None:
            raise ValueError("max_repeats needs repeat_every_s")
        return self


class Match(BaseModel):
    """Which calls a policy is for; a missing list matches everything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    classes: tuple[CallClass, ...] | None = Field(default=None, min_length=1)
    priorities: tuple[PriorityName, ...] | None = Field(default=None, min_length=1)

    @property
    def catch_all(self) -> bool:
        return self.classes is None and self.priorities is None

    def matches(self, event_class: str, priority: str) -> bool:
        return (self.classes is None or event_class in self.classes) and (
            self.priorities is None or priority in self.priorities
        )


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    match: Match = Match()
    steps: tuple[Step, ...] = Field(min_length=1)


class PolicySet(BaseModel):
    """All policies, in file order; the first that matches a call wins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policies: tuple[Policy, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _complete(self) -> PolicySet:
        names = [p.name for p in self.policies]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"policy names must be unique: {', '.join(dupes)}")
        catch_alls = [i for i, p in enumerate(self.policies) if p.match.catch_all]
        if not catch_alls:
            # Without one, a call of an unforeseen class or priority would get no alert.
            raise ValueError("no catch-all policy (one without match): some calls would get no alert")
        if catch_alls[0] != len(self.policies) - 1:
            shadowed = ", ".join(p.name for p in self.policies[catch_alls[0] + 1 :])
            raise ValueError(
                f"catch-all policy {self.policies[catch_alls[0]].name!r} must come last; it hides {shadowed}"
            )
        return self

    def select(self, event_class: str, priority: str) -> Policy:
        for policy in self.policies:
            if policy.match.matches(event_class, priority):
                return policy
        raise AssertionError("unreachable: validation guarantees a catch-all")


# --------------------------------------------------------------------------- snapshot


def snapshot(policy: Policy, *, travel_limit_s: float) -> dict[str, Any]:
    """The JSON-able policy stored on a call when it opens, every time made concrete.

    ``travel_limit_s`` is kept alongside for the record: it says which service circle
    the supervisor alert was measured against.
    """
    if travel_limit_s < 0:
        raise ValueError("travel_limit_s must not be negative")
    steps: list[dict[str, Any]] = []
    for step in policy.steps:
        d: dict[str, Any] = {
            "action": step.action.value,
            "after_s": step.after_s if step.after_s is not None else float(travel_limit_s),
            "until": step.until,
        }
        if step.repeat_every_s is not None:
            d["repeat_every_s"] = step.repeat_every_s
            d["max_repeats"] = step.max_repeats
        if step.paging is not None:
            d["paging"] = step.paging.model_dump(mode="json")
        if step.contacts is not None:
            d["contacts"] = step.contacts.model_dump(mode="json")
        steps.append(d)
    body: dict[str, Any] = {
        "name": policy.name,
        "match": policy.match.model_dump(mode="json", exclude_none=True),
        "steps": steps,
    }
    body["format"] = SNAPSHOT_FORMAT
    body["travel_limit_s"] = float(travel_limit_s)
    return body


def from_snapshot(d: Mapping[str, Any]) -> Policy:
    """Rebuild the policy of a running call. Raises ValueError on a snapshot this code
    cannot honour, because guessing the rules of a live emergency is worse than failing
    loudly to the watchdog.

    Calls share a handful of snapshots (one per policy and travel limit), and each is
    rebuilt for every call opened and every timer fired: the rebuilt (frozen) policy is
    kept by the snapshot's JSON text, 13 µs to write against 33 µs to validate. Equal
    snapshots whose keys come in another order are merely validated again."""
    try:
        key = json.dumps(d, separators=(",", ":"))
    except (TypeError, ValueError):
        return _rebuild(d)
    return _rebuild_cached(key)


@functools.lru_cache(maxsize=256)
def _rebuild_cached(text: str) -> Policy:
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError("an escalation snapshot is a mapping")
    return _rebuild(loaded)


def _rebuild(d: Mapping[str, Any]) -> Policy:
    body = dict(d)
    fmt = body.pop("format", None)
    if fmt != SNAPSHOT_FORMAT:
        raise ValueError(f"unsupported escalation snapshot format {fmt!r}")
    body.pop("travel_limit_s", None)
    policy = Policy.model_validate(body)
    if any(s.after_s is None for s in policy.steps):
        raise ValueError("snapshot has an unresolved step time (after: travel_limit)")
    return policy


def paging_of(d: Mapping[str, Any]) -> PagingPolicy | None:
    """The paging policy of a running call's snapshot (its first page_station step that is
    not a ``via`` round of its own, else its first), if any: what a decline passes on with."""
    found = [
        PagingPolicy.model_validate(step.get("paging") or {})
        for step in d.get("steps") or ()
        if isinstance(step, Mapping) and step.get("action") == "page_station"
    ]
    return next((p for p in found if not p.via), found[0] if found else None)


# --------------------------------------------------------------------------- timers


@dataclass(frozen=True, slots=True)
class Progress:
    """What has happened on the call so far, as the shell read it under its row lock."""

    acknowledged: bool
    on_scene: bool
    closed: bool
    escalation_level: int


@dataclass(frozen=True, slots=True)
class PlannedTimer:
    step: int
    action: str
    due_at: datetime
    repeat: int


@dataclass(frozen=True, slots=True)
class TimerDecision:
    """``fire``: do the step's action now. ``next``: the timer to store for the next
    repetition (None when the step is done). A stale timer neither fires nor repeats."""

    fire: bool
    stale_reason: str | None
    next: PlannedTimer | None


def _after_s(step: Step) -> float:
    if step.after_s is None:
        raise ValueError("policy has an unresolved step time; pass it through snapshot() first")
    return step.after_s


def initial_timers(snap: Policy, opened_at: datetime) -> list[PlannedTimer]:
    """Every step's first timer, soonest first (step order breaks ties, so alert comes
    before remind, and escalate_county before notify_contacts at the same second)."""
    timers = [
        PlannedTimer(i, step.action, opened_at + timedelta(seconds=_after_s(step)), 0)
        for i, step in enumerate(snap.steps)
    ]
    return sorted(timers, key=lambda t: (t.due_at, t.step))


def _until_holds(until: str, progress: Progress) -> str | None:
    if progress.closed:
        return "CALL_CLOSED"
    need = _UNTIL_ORDER[until]
    if progress.on_scene and need <= _UNTIL_ORDER["on_scene"]:
        return "ALREADY_ON_SCENE"
    if progress.acknowledged and need <= _UNTIL_ORDER["acknowledged"]:
        return "ALREADY_ACKNOWLEDGED"
    return None


def on_timer_due(snap: Policy, step: int, repeat: int, due_at: datetime, progress: Progress) -> TimerDecision:
    """Whether a due timer still means anything, and its next repetition.

    Checked against the call as it is now, not as it was when the timer was made, so a
    timer that lost a race with an acknowledgement is recorded as stale instead of paging
    someone who already answered. Repeats are scheduled from ``due_at``, not from when
    the timer actually ran, so a slow sweep does not make reminders drift later and later.
    """
    if not 0 <= step < len(snap.steps):
        return TimerDecision(False, "UNKNOWN_STEP", None)
    s = snap.steps[step]
    stale = _until_holds(s.until, progress)
    if stale is None and progress.escalation_level >= ESCALATION_LEVEL.get(s.action, 99):
        stale = "LEVEL_ALREADY_REACHED"
    if stale is None and repeat > (s.max_repeats if s.repeat_every_s is not None else 0):
        stale = "REPEATS_EXHAUSTED"
    if stale is not None:
        return TimerDecision(False, stale, None)
    nxt = None
    if s.repeat_every_s is not None and repeat < s.max_repeats:
        nxt = PlannedTimer(step, s.action, due_at + timedelta(seconds=s.repeat_every_s), repeat + 1)
    return TimerDecision(True, None, nxt)


# A call the instant it opens: nobody has acknowledged it, nobody is there, own station.
OPENING = Progress(acknowledged=False, on_scene=False, closed=False, escalation_level=0)


@dataclass(frozen=True, slots=True)
class Opening:
    """A new call's escalation at the instant it opens. ``fire``: its opening step (the
    policy's first, when due at that instant) with its decision, fired by the transaction
    that opens the call, so no timer pass is needed for it (its ``next`` repetition is
    stored once the step has run). ``timers``: every other step's first timer, to store."""

    fire: tuple[tuple[PlannedTimer, TimerDecision], ...]
    timers: tuple[PlannedTimer, ...]


def opening(snap: Policy, opened_at: datetime, progress: Progress = OPENING) -> Opening:
    """Split a new call's first timers into its opening step (step 0, when due the instant
    the call opens: fired at once, as :func:`on_timer_due` decides for a call that has
    just opened at ``progress``' level) and the ones to store for later.

    Only step 0: it is what the station hears the moment the call exists (every policy
    in config/escalation.yaml starts with alert_station). Later steps also due at once
    (the emergency policies' first page_station round) stay timers: paging reads the
    station's roster and writes pages one call at a time, work that would hold back the
    intake's commit, and with it every console, by a few milliseconds a call. A step 0
    that would not fire is stored like any other step, so the timer loop records why."""
    fire: list[tuple[PlannedTimer, TimerDecision]] = []
    later: list[PlannedTimer] = []
    for planned in initial_timers(snap, opened_at):
        if planned.step == 0 and planned.due_at <= opened_at:
            decision = on_timer_due(snap, planned.step, planned.repeat, planned.due_at, progress)
            if decision.fire:
                fire.append((planned, decision))
                continue
        later.append(planned)
    return Opening(fire=tuple(fire), timers=tuple(later))


def cancelled_by(progress_change: ProgressChange, snap: Policy) -> set[int]:
    """Steps whose pending timers stop the moment the call makes this progress, so the
    shell can cancel them in the same transaction instead of waiting to find them stale."""
    reached = _UNTIL_ORDER[progress_change]
    return {i for i, s in enumerate(snap.steps) if _UNTIL_ORDER[s.until] <= reached}
