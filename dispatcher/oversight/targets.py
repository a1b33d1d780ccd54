"""Oversight targets (config/oversight.yaml, read by dispatcher/oversight/targets_file.py)
as a validated, frozen model.

The targets are what supervisors are graded against, so a misspelt key must stop the
command rather than leave a target at a value nobody chose: unknown keys are errors and
the message names the file and the key.
"""

from __future__ import annotations

from datetime import time

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from device_gateway.kinds import DeviceKind

__all__ = [
    "AnswerTarget",
    "ArrivalTarget",
    "DeviceTargets",
    "ReviewTargets",
    "Shift",
    "Targets",
    "TargetsError",
    "TroubleTarget",
]

# The protocol's call classes (docs/protocol.md): answer and arrival targets are about
# people, so by default only emergency and urgent calls count toward them.
CALL_CLASSES: tuple[str, ...] = ("emergency", "urgent", "trouble")
# Device kinds that send the weekly `test` call (buttons and pull cords are `button`,
# and the home-hazard detectors); hubs, watches, radars, mattresses and door contacts
# never do, so they cannot be "untested".
TESTING_KINDS: tuple[str, ...] = ("button", "smoke", "gas", "water")
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class AnswerTarget(BaseModel):
    """At least ``min_share`` of calls acknowledged within ``within_s`` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    within_s: float = Field(gt=0)
    min_share: float = Field(gt=0, le=1)


class ArrivalTarget(BaseModel):
    """A responder on scene within the service circle, by the home's area."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    urban_min: float = Field(default=15.0, gt=0)
    rural_min: float = Field(default=30.0, gt=0)
    min_share: float = Field(default=0.95, gt=0, le=1)

    def limit_s(self, area: str) -> float:
        return (self.rural_min if area == "rural" else self.urban_min) * 60.0


class ReviewTargets(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    answer_over_s: float = Field(default=180.0, gt=0)


class DeviceTargets(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    test_every_days: int = Field(default=7, ge=1)
    low_battery_pct: float = Field(default=20.0, ge=0, le=100)
    # only these kinds send test calls, so only they can be overdue for one
    tested_kinds: tuple[str, ...] = TESTING_KINDS

    @field_validator("tested_kinds")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = {k.value for k in DeviceKind}
        bad = sorted(set(value) - known)
        if bad:
            raise ValueError(f"unknown device kind(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        return value


class TroubleTarget(BaseModel):
    """Device trouble (low battery, offline, power, tamper) is handled in working hours:
    at least ``min_share`` acknowledged within ``acknowledge_within_h`` working hours,
    counting only ``start``–``end`` local time on ``days``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    acknowledge_within_h: float = Field(default=4.0, gt=0, le=24 * 31)
    start: time = time(8)
    end: time = time(18)
    days: tuple[str, ...] = WEEKDAYS
    min_share: float = Field(default=0.95, gt=0, le=1)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted(cls, value: object) -> object:
        if isinstance(value, int | float):
            raise ValueError('write times of day in quotes, like "08:00"')
        return value

    @field_validator("days")
    @classmethod
    def _weekdays(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [d for d in value if d not in WEEKDAYS]
        if bad or not value:
            raise ValueError(f"days must be some of {', '.join(WEEKDAYS)}, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _day_has_hours(self) -> TroubleTarget:
        if self.end <= self.start:
            raise ValueError(f"working hours end ({self.end}) must be after they start ({self.start})")
        return self

    @property
    def weekdays(self) -> frozenset[int]:
        """The working days as Python weekday numbers (Monday 0)."""
        return frozenset(WEEKDAYS.index(d) for d in self.days)


class Shift(BaseModel):
    """A named shift of the roster, in each station's local time; ``end`` before
    ``start`` runs past midnight (20:00 → 08:00)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    start: time
    end: time

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted 08:00 as the number 480 (base 60); pydantic would
        # take that as 00:08. Refuse numbers instead of guessing.
        if isinstance(value, int | float):
            raise ValueError('write times of day in quotes, like "08:00"')
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Shift:
        if self.start == self.end:
            raise ValueError(f"shift {self.name!r} starts and ends at {self.start}: give it some hours")
        return self

    def holds(self, local: time) -> bool:
        """Whether a local time of day lies in the shift (start included, end not)."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    @property
    def hours(self) -> str:
        return f"{self.start:%H:%M}–{self.end:%H:%M}"


def _default_shifts() -> tuple[Shift, ...]:
    return (Shift(name="day", start=time(8), end=time(20)), Shift(name="night", start=time(20), end=time(8)))


def _default_answer() -> tuple[AnswerTarget, ...]:
    return (AnswerTarget(within_s=60, min_share=0.975), AnswerTarget(within_s=180, min_share=0.99))


class Targets(BaseModel):
    """The whole of config/oversight.yaml; the defaults equal the shipped file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer: tuple[AnswerTarget, ...] = Field(default_factory=_default_answer)
    # which call classes the answer, arrival and review targets grade
    answer_classes: tuple[str, ...] = ("emergency", "urgent")
    trouble: TroubleTarget = TroubleTarget()
    arrival: ArrivalTarget = ArrivalTarget()
    review: ReviewTargets = ReviewTargets()
    devices: DeviceTargets = DeviceTargets()
    shifts: tuple[Shift, ...] = Field(default_factory=_default_shifts)

    @field_validator("shifts")
    @classmethod
    def _unique_shifts(cls, value: tuple[Shift, ...]) -> tuple[Shift, ...]:
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError("two shifts have the same name")
        return value

    @field_validator("answer_classes")
    @classmethod
    def _classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in value if c not in CALL_CLASSES]
        if bad or not value:
            raise ValueError(f"answer_classes must be some of {', '.join(CALL_CLASSES)}, got {list(value)}")
        return value

    def shift(self, name: str) -> Shift:
        for s in self.shifts:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.shifts) or "none"
        raise ValueError(f"unknown shift {name!r}; config/oversight.yaml defines: {known}")

    def shift_at(self, local: time) -> Shift | None:
        """The first shift (in file order) that holds this local time of day."""
        return next((s for s in self.shifts if s.holds(local)), None)

    @field_validator("answer")
    @classmethod
    def _sorted_unique(cls, value: tuple[AnswerTarget, ...]) -> tuple[AnswerTarget, ...]:
        # Columns are named after the seconds (answered_within_60s): two targets with
        # the same time would write one column twice.
        seconds = [t.within_s for t in value]
        if len(set(seconds)) != len(seconds):
            raise ValueError("two answer targets have the same within_s")
        return tuple(sorted(value, key=lambda t: t.within_s))


class TargetsError(ValueError):
    """config/oversight.yaml cannot be used; the message names the file and the bad key."""
