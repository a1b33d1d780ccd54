"""How the simulated staff handle one call (carecall/shell/sim_operators.py acts on it).

``plan_call`` is pure: given a call's facts and a random stream it returns when the
operator answers, whether a responder is sent, when they set off and arrive, and how the
call ends. The stream is seeded by the call id, so every copy of the simulator plans the
same call the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from carecall.shell.sim_call_facts import CallFacts

__all__ = ["DEFAULT_BEHAVIOUR", "Action", "Answer", "Behaviour", "Plan", "Step", "plan_call"]

Action = Literal["acknowledge", "dispatch", "en-route", "arrive", "resolve", "cancel"]
Answer = Literal["fast", "slow", "unanswered"]


@dataclass(frozen=True)
class Step:
    at_s: float  # seconds after the call's start (its first event_received)
    action: Action
    outcome: str | None = None


@dataclass(frozen=True)
class Plan:
    answer: Answer
    steps: tuple[Step, ...]

    @property
    def outcome(self) -> str | None:
        return self.steps[-1].outcome if self.steps else None


@dataclass(frozen=True)
class Behaviour:
    """The shares and ranges of the simulated staff. Defaults: a well-run county that still
    misses now and then, so the compliance figures are not trivially 100 %."""

    answer_fast: float = 0.88  # answered within 60 s
    answer_slow: float = 0.08  # answered in 60–180 s; the rest are left to escalate
    false_alarm_on_phone: float = 0.12  # closed after talking to the resident, nobody sent
    late_arrival: float = 0.07  # responder arrives after the service circle
    no_access: float = 0.04  # responder cannot get in
    false_alarm_on_site: float = 0.08
    hospital: float = 0.15
    trouble_dispatch: float = 0.3  # device trouble: someone goes to fix it, else closed by phone


DEFAULT_BEHAVIOUR = Behaviour()


def plan_call(facts: CallFacts, rng: random.Random, b: Behaviour = DEFAULT_BEHAVIOUR) -> Plan:
    """When and how the simulated staff handle one call. Pure: same facts and stream, same plan."""
    r = rng.random()
    if r < b.answer_fast:
        answer: Answer = "fast"
        t = rng.triangular(4.0, 59.0, 14.0)
    elif r < b.answer_fast + b.answer_slow:
        answer = "slow"
        t = rng.uniform(61.0, 178.0)
    else:
        answer = "unanswered"  # nobody at the station: the timers escalate it; the county answers
        up = facts.county_after_s or facts.street_after_s or 180.0
        t = max(up, 181.0) + rng.uniform(15.0, 240.0)
    steps: list[Step] = [Step(round(t, 3), "acknowledge")]

    send = rng.random() >= b.false_alarm_on_phone
    if facts.event_class == "trouble":
        send = rng.random() < b.trouble_dispatch
    if not send:
        t += rng.uniform(30.0, 300.0)
        if facts.event_class == "trouble":
            steps.append(Step(round(t, 3), "resolve", "other"))
        else:
            steps.append(Step(round(t, 3), "cancel", "false_alarm"))
        return Plan(answer, tuple(steps))

    t += rng.triangular(15.0, 180.0, 40.0)
    steps.append(Step(round(t, 3), "dispatch"))
    t += rng.uniform(20.0, 120.0)
    steps.append(Step(round(t, 3), "en-route"))
    limit = facts.travel_limit_s if facts.travel_limit_s > 0 else (1800.0 if facts.area == "rural" else 900.0)
    # travel counted from the call's start, as the arrival target is
    if rng.random() < b.late_arrival:
        arrive_at = limit * rng.uniform(1.03, 1.8)
    else:
        arrive_at = limit * rng.triangular(0.3, 0.97, 0.55)
    t = max(t + 60.0, arrive_at)
    steps.append(Step(round(t, 3), "arrive"))

    o = rng.random()
    if facts.event_class == "trouble":
        outcome = "other"
    elif o < b.no_access:
        outcome = "no_access"
    elif o < b.no_access + b.false_alarm_on_site:
        outcome = "false_alarm"
    elif o < b.no_access + b.false_alarm_on_site + b.hospital:
        outcome = "taken_to_hospital"
    else:
        outcome = "helped_on_site"
    t += rng.triangular(120.0, 2700.0, 600.0) if outcome != "no_access" else rng.uniform(300.0, 1200.0)
    steps.append(Step(round(t, 3), "resolve", outcome))
    return Plan(answer, tuple(steps))
