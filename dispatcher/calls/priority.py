"""Which events open calls, how urgent a call is, and which events belong to an open call.

Pure decisions the dispatcher shell calls for every stored event. Priority runs from P1
(send someone now) to P4 (device trouble, handle in working hours). The rules are few
on purpose: an operator must be able to predict the priority from the reason codes on
the screen, and a supervisor must be able to explain it afterwards.

The one invariant that matters more than any threshold: an emergency is never ranked
below an urgent call, and an urgent call never below device trouble, whatever the
resident's profile. A flat battery must not queue ahead of a fall.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_gateway.protocol import RESTORES, EventClass, is_night

__all__ = [
    "CALL_CLASSES",
    "PRIORITIES",
    "REASONS",
    "CallsConfig",
    "PriorityConfig",
    "assess_priority",
    "call_class_after_join",
    "joins_call",
    "opens_call",
    "priority_rank",
    "restore_clears",
]

Priority = Literal["P1", "P2", "P3", "P4"]
PRIORITIES: tuple[Priority, ...] = ("P1", "P2", "P3", "P4")
_PRIORITY_RANK: dict[str, int] = {p: i for i, p in enumerate(PRIORITIES)}

# Strongest first; also the order in which a joined call's class can only go up.
CALL_CLASSES: tuple[str, ...] = (
    EventClass.emergency.value,
    EventClass.urgent.value,
    EventClass.trouble.value,
)
_CLASS_RANK = {c: i for i, c in enumerate(CALL_CLASSES)}

# Emergencies and urgent calls are about the person; trouble is about a device. The two
# families never share a call, so closing "battery replaced" can never close a fall.
_ALARM_FAMILY = frozenset({EventClass.emergency.value, EventClass.urgent.value})

REASONS: dict[str, str] = {
    "EMERGENCY_EVENT": "An emergency event (SOS, fall, vital signs, smoke, gas, water) opened it.",
    "LIFE_THREAT_TYPE": "The event type can mean danger to life within minutes.",
    "SMOKE_GAS_HAZARD": "Smoke or gas: a danger to the resident and to the neighbours.",
    "PROPERTY_HAZARD": "The event threatens the home more than the person (e.g. a water leak).",
    "URGENT_EVENT": "An urgent event (no movement, not back in bed at night) opened it.",
    "TROUBLE_ONLY": "Device trouble only (battery, offline, power, tamper): nobody reported hurt.",
    **{f"CAPACITY_LEVEL_{n}": f"Resident assessed at GB/T 42195-2022 capacity level {n}." for n in range(5)},
    "CAPACITY_UNASSESSED": "The resident has no capacity assessment; doubt counts as frailty.",
    "LIVING_ALONE": "The resident lives alone: nobody else in the home can help.",
    "NIGHT_TIME": "At night nobody is likely to notice, and help is thinner.",
    "REPEATED_CALLS": "This home already had several calls in the last 24 hours.",
    "RAISED_TO_P1": "Life-threatening type with at least one raising factor.",
    "RAISED_TO_P2": "Raised one level by the raising factors listed.",
}


class PriorityConfig(BaseModel):
    """Thresholds of the priority rules (config/dispatch.yaml, key ``priority``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Level 3 (severe loss) and above cannot get up or call for help on their own.
    capacity_threshold: int = Field(default=3, ge=0, le=4)
    # An unassessed resident could be anyone, so doubt errs towards a faster answer.
    unassessed_raises: bool = True
    # Calls for the same home in the 24 h before this one that count as "repeated".
    repeated_calls_threshold: int = Field(default=2, ge=1)
    night_start_hour: int = Field(default=22, ge=0, le=23)
    night_end_hour: int = Field(default=6, ge=0, le=23)
    # Emergency types that become P1 with any one raising factor.
    life_threat_types: frozenset[str] = frozenset({"sos", "fall", "vital_alert", "smoke", "gas"})
    # Other emergency types (water_leak, vendor types) need this many factors for P1.
    other_emergency_p1_factors: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _night_not_empty(self) -> PriorityConfig:
        if self.night_start_hour == self.night_end_hour:
            raise ValueError("night_start_hour and night_end_hour must differ")
        return self

    def is_night(self, local_hour: int) -> bool:
        """The shell knows the station's timezone; the hours live here with the rules."""
        return is_night(local_hour, self.night_start_hour, self.night_end_hour)


class CallsConfig(BaseModel):
    """How events group into calls (config/dispatch.yaml, key ``calls``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Counted from the call's latest event, so a resident pressing SOS again and again
    # keeps one call open rather than opening one per press.
    join_window_s: float = Field(default=600.0, gt=0)


def opens_call(event_class: str) -> bool:
    """info, test and cancel are recorded but never page anyone."""
    return event_class in _CLASS_RANK


def priority_rank(priority: str) -> int:
    """0 for P1 … 3 for P4: lower is more urgent, so sorting a queue puts P1 first."""
    return _PRIORITY_RANK[priority]


def assess_priority(
    *,
    event_class: str,
    event_type: str,
    capacity_level: int | None,
    living_alone: bool,
    night: bool,
    recent_calls_24h: int,
    cfg: PriorityConfig,
) -> tuple[str, tuple[str, ...]]:
    """Priority and the reasons for it.

    Emergencies are P1 or P2, urgent calls P2 or P3, trouble always P4: the bands never
    overlap downwards, so profile factors reorder calls within a class but never across.
    Raises ValueError for classes that do not open calls, because a priority on an info
    event would be a bug in the caller, not a decision.
    """
    if not opens_call(event_class):
        raise ValueError(f"event class {event_class!r} does not open calls")
    if event_class == EventClass.trouble:
        return "P4", ("TROUBLE_ONLY",)

    factors: list[str] = []
    if capacity_level is None:
        if cfg.unassessed_raises:
            factors.append("CAPACITY_UNASSESSED")
    elif capacity_level >= cfg.capacity_threshold:
        factors.append(f"CAPACITY_LEVEL_{min(max(capacity_level, 0), 4)}")
    if living_alone:
        factors.append("LIVING_ALONE")
    if night:
        factors.append("NIGHT_TIME")
    if recent_calls_24h >= cfg.repeated_calls_threshold:
        factors.append("REPEATED_CALLS")

    if event_class == EventClass.urgent:
        if factors:
            return "P2", ("URGENT_EVENT", *factors, "RAISED_TO_P2")
        return "P3", ("URGENT_EVENT",)

    reasons = ["EMERGENCY_EVENT"]
    if event_type in cfg.life_threat_types:
        reasons.append("LIFE_THREAT_TYPE")
        needed = 1
    else:
        reasons.append("PROPERTY_HAZARD")
        needed = cfg.other_emergency_p1_factors
    if event_type in ("smoke", "gas"):
        reasons.append("SMOKE_GAS_HAZARD")
    reasons.extend(factors)
    if len(factors) >= needed:
        return "P1", (*reasons, "RAISED_TO_P1")
    return "P2", tuple(reasons)


def joins_call(
    *,
    event_class: str,
    event_type: str,
    call_event_class: str,
    seconds_since_last_event: float,
    window_s: float,
) -> bool:
    """Whether a new event of a home belongs to the home's open call.

    One incident, one call: an SOS pressed five times, a fall followed by an SOS, smoke
    seen by two sensors. Emergency and urgent events share a call (the class is raised
    by :func:`call_class_after_join`); trouble only joins trouble, so a device fault never
    hides inside, or closes with, a call about the person. Restores never join: they
    clear trouble (:func:`restore_clears`). A negative gap (events stored out of order)
    counts as zero.
    """
    if not opens_call(event_class) or not opens_call(call_event_class):
        return False
    if event_type in RESTORES:
        return False
    if max(seconds_since_last_event, 0.0) > window_s:
        return False
    alarm_new = event_class in _ALARM_FAMILY
    alarm_call = call_event_class in _ALARM_FAMILY
    return alarm_new == alarm_call


def call_class_after_join(current: str, new: str) -> str:
    """A call's class only goes up (emergency > urgent > trouble): an urgent call that
    turns into a fall is an emergency from then on, and stays one."""
    for c in (current, new):
        if c not in _CLASS_RANK:
            raise ValueError(f"event class {c!r} does not open calls")
    return min(current, new, key=_CLASS_RANK.__getitem__)


def restore_clears(restore_type: str) -> str | None:
    """The trouble type a restore event clears (online → offline, power_restored →
    power_loss), or None if the type is not a restore."""
    return RESTORES.get(restore_type)
