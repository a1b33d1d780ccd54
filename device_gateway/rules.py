"""Alarm rules the platform owns: calls derived from telemetry (docs/protocol.md "Telemetry").

Many devices in a family care bed only report readings: a mattress sends heart and
breathing rate and presence, a radar sends motion, battery sensors send a percentage.
These rules turn those readings into the same calls a smarter device would raise itself
(``vital_alert``, ``bed_exit``, ``inactivity``, ``low_battery``), so "services find
people" does not depend on the device model.

Everything here is pure: the gateway shell keeps one :class:`RuleState` per device (in
memory or in Redis via ``to_dict``/``from_dict``), calls :func:`evaluate` for every
telemetry message, and also from a periodic tick with empty ``metrics`` so the timers
(out of bed, no movement) fire even when the device sends nothing new. The derived events
go through the same store path as device events.

Each episode raises exactly one event, and its id is built from when the episode started
(``rule-vital-hr-{start_ms}``), so two gateway copies that see the same readings compute
the same id and the store, which dedups on ``(device, id)``, keeps one call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.yamlfile import load_yaml_model
from device_gateway.protocol import MetricValue

VitalMetric = Literal["hr", "rr"]
VITAL_METRICS: tuple[VitalMetric, ...] = ("hr", "rr")
CAPACITY_LEVELS = frozenset(range(5))  # GB/T 42195-2022: 0 intact .. 4 complete loss

IN_BED = "in_bed"
NOT_IN_BED = frozenset({"out_of_bed", "absent"})
PRESENCE_VALUES = NOT_IN_BED | {IN_BED}

_STATE_VERSION = 1


class RulesError(Exception):
    """The rules file is unreadable or malformed; the message names the file and the key."""


# --------------------------------------------------------------------------- config


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Band(_Frozen):
    """An inclusive normal range, per minute."""

    min: int = Field(ge=0, le=300)
    max: int = Field(ge=1, le=300)

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class LevelBands(_Frozen):
    hr: Band
    rr: Band


def _default_levels() -> dict[int, LevelBands]:
    # Kept equal to config/rules.yaml (a test checks); rules.yaml says why they widen.
    def lv(hr: tuple[int, int], rr: tuple[int, int]) -> LevelBands:
        return LevelBands(hr=Band(min=hr[0], max=hr[1]), rr=Band(min=rr[0], max=rr[1]))

    return {
        0: lv((50, 110), (10, 24)),
        1: lv((50, 110), (10, 24)),
        2: lv((48, 115), (9, 26)),
        3: lv((45, 120), (8, 28)),
        4: lv((45, 120), (8, 28)),
    }


class VitalsRule(_Frozen):
    """Vital signs out of the resident's range for N readings in a row.

    N > 1 because a single bad reading from a mattress is noise (turning over, sitting on
    the edge, a carer leaning on it); N readings in a row are a signal.
    """

    consecutive_readings: int = Field(default=3, ge=1, le=100)
    levels: dict[int, LevelBands] = Field(default_factory=_default_levels)

    @field_validator("levels")
    @classmethod
    def _all_levels(cls, value: dict[int, LevelBands]) -> dict[int, LevelBands]:
        missing = sorted(CAPACITY_LEVELS - value.keys())
        extra = sorted(value.keys() - CAPACITY_LEVELS)
        if missing or extra:
            raise ValueError(f"needs exactly the capacity levels 0-4 (missing {missing}, unexpected {extra})")
        return value


class BedExitRule(_Frozen):
    """Out of bed at night and not back within ``return_minutes``."""

    return_minutes: int = Field(default=20, ge=1, le=24 * 60)
    night_start_hour: int = Field(default=22, ge=0, le=23)
    night_end_hour: int = Field(default=6, ge=0, le=23)

    @model_validator(mode="after")
    def _window(self) -> BedExitRule:
        if self.night_start_hour == self.night_end_hour:
            raise ValueError("night_start_hour and night_end_hour must differ")
        return self

    def is_night(self, local_hour: int) -> bool:
        """Start inclusive, end exclusive; wraps past midnight when start > end."""
        start, end = self.night_start_hour, self.night_end_hour
        if start > end:
            return local_hour >= start or local_hour < end
        return start <= local_hour < end


class InactivityRule(_Frozen):
    """No movement (motion > 0 or a change of presence) for ``hours``."""

    hours: float = Field(default=4, gt=0, le=72)

    @property
    def minutes(self) -> int:
        return max(1, round(self.hours * 60))


class BatteryRule(_Frozen):
    """Below ``low_pct`` once; re-armed only above ``low_pct + hysteresis_pct``."""

    low_pct: float = Field(default=20, gt=0, lt=100)
    hysteresis_pct: float = Field(default=5, ge=0, le=50)

    @model_validator(mode="after")
    def _headroom(self) -> BatteryRule:
        if self.low_pct + self.hysteresis_pct >= 100:
            raise ValueError("low_pct + hysteresis_pct must stay below 100, or it never re-arms")
        return self


class RulesConfig(_Frozen):
    """The whole rules file (config/rules.yaml). Every section has the documented default."""

    vitals: VitalsRule = Field(default_factory=VitalsRule)
    bed_exit: BedExitRule = Field(default_factory=BedExitRule)
    inactivity: InactivityRule = Field(default_factory=InactivityRule)
    battery: BatteryRule = Field(default_factory=BatteryRule)


def load_rules(path: Path) -> RulesConfig:
    """Read and validate the rules file, or raise RulesError naming the file and bad key(s).

    An empty file gives the defaults; unknown keys are errors, because a misspelt key
    silently ignored would leave a rule at a value nobody chose.
    """
    return load_yaml_model(path, RulesConfig, RulesError)


# --------------------------------------------------------------------------- ranges


@dataclass(frozen=True, slots=True)
class VitalRanges:
    """One resident's normal ranges (inclusive, per minute)."""

    hr_min: int
    hr_max: int
    rr_min: int
    rr_max: int

    def __post_init__(self) -> None:
        if self.hr_min >= self.hr_max:
            raise ValueError(f"hr_min ({self.hr_min}) must be below hr_max ({self.hr_max})")
        if self.rr_min >= self.rr_max:
            raise ValueError(f"rr_min ({self.rr_min}) must be below rr_max ({self.rr_max})")

    def band(self, metric: VitalMetric) -> tuple[int, int]:
        return (self.hr_min, self.hr_max) if metric == "hr" else (self.rr_min, self.rr_max)


def vital_ranges(
    cfg: RulesConfig,
    capacity_level: int | None,
    hr_min: int | None = None,
    hr_max: int | None = None,
    rr_min: int | None = None,
    rr_max: int | None = None,
) -> VitalRanges:
    """The resident's ranges: their own bounds where set, else their capacity level's.

    Each bound is overridden on its own (a doctor may lower only hr_min for a resident on
    beta blockers). An unassessed resident (``None``) gets level 0, the tightest band, so
    doubt errs towards a call. Raises ValueError for a level outside 0-4 or when the
    merged bounds cross (e.g. hr_min 120 over a level default hr_max 110): the registry
    should call this when a resident is saved, so the mistake is caught at entry.
    """
    level = 0 if capacity_level is None else capacity_level
    if level not in CAPACITY_LEVELS:
        raise ValueError(f"capacity_level must be 0-4 (GB/T 42195-2022), got {capacity_level}")
    bands = cfg.vitals.levels[level]
    return VitalRanges(
        hr_min=bands.hr.min if hr_min is None else hr_min,
        hr_max=bands.hr.max if hr_max is None else hr_max,
        rr_min=bands.rr.min if rr_min is None else rr_min,
        rr_max=bands.rr.max if rr_max is None else rr_max,
    )


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class VitalRun:
    """The current run of out-of-range readings of one metric (count 0 = all normal)."""

    count: int = 0
    start_ms: int | None = None  # first out-of-range reading of the run: the episode id
    fired: bool = False


@dataclass(frozen=True, slots=True)
class RuleState:
    """Per-device rule memory: small, immutable, JSON-serialisable.

    Times are epoch milliseconds so the state round-trips through JSON exactly and ids
    derived from it are the same on every gateway copy.
    """

    hr: VitalRun = field(default_factory=VitalRun)
    rr: VitalRun = field(default_factory=VitalRun)
    presence: str | None = None  # last known: in_bed / out_of_bed / absent
    out_since_ms: int | None = None  # left the bed (only after being seen in bed)
    out_at_night: bool = False  # whether that exit happened in night hours
    bed_exit_fired: bool = False
    last_activity_ms: int | None = None  # None = device never reported motion or presence
    inactivity_fired: bool = False
    battery_low_since_ms: int | None = None  # None = armed

    def vital(self, metric: VitalMetric) -> VitalRun:
        return self.hr if metric == "hr" else self.rr

    def to_dict(self) -> dict[str, Any]:
        def run(r: VitalRun) -> dict[str, Any]:
            return {"count": r.count, "start_ms": r.start_ms, "fired": r.fired}

        return {
            "v": _STATE_VERSION,
            "hr": run(self.hr),
            "rr": run(self.rr),
            "presence": self.presence,
            "out_since_ms": self.out_since_ms,
            "out_at_night": self.out_at_night,
            "bed_exit_fired": self.bed_exit_fired,
            "last_activity_ms": self.last_activity_ms,
            "inactivity_fired": self.inactivity_fired,
            "battery_low_since_ms": self.battery_low_since_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleState:
        """Inverse of ``to_dict``. Missing keys take their defaults and unknown keys are
        ignored (a state written by a newer gateway still loads); wrong types raise
        ValueError naming the key, so a corrupt Redis entry is noticed, not half-used."""
        if not isinstance(data, Mapping):
            raise ValueError(f"rule state must be a mapping, not {type(data).__name__}")
        version = data.get("v", _STATE_VERSION)
        if version != _STATE_VERSION:
            raise ValueError(f"rule state version {version!r} is not {_STATE_VERSION}")

        def run(key: str) -> VitalRun:
            raw = data.get(key, {})
            if not isinstance(raw, Mapping):
                raise ValueError(f"rule state {key!r} must be a mapping")
            count = _int(raw, "count", f"{key}.count", 0)
            if count is None or count < 0:
                raise ValueError(f"rule state {key}.count must be a non-negative integer")
            return VitalRun(
                count=count,
                start_ms=_int(raw, "start_ms", f"{key}.start_ms", None),
                fired=_bool(raw, "fired", f"{key}.fired"),
            )

        presence = data.get("presence")
        if presence is not None and presence not in PRESENCE_VALUES:
            raise ValueError(f"rule state 'presence' must be one of {sorted(PRESENCE_VALUES)}")
        return cls(
            hr=run("hr"),
            rr=run("rr"),
            presence=presence,
            out_since_ms=_int(data, "out_since_ms", "out_since_ms", None),
            out_at_night=_bool(data, "out_at_night", "out_at_night"),
            bed_exit_fired=_bool(data, "bed_exit_fired", "bed_exit_fired"),
            last_activity_ms=_int(data, "last_activity_ms", "last_activity_ms", None),
            inactivity_fired=_bool(data, "inactivity_fired", "inactivity_fired"),
            battery_low_since_ms=_int(data, "battery_low_since_ms", "battery_low_since_ms", None),
        )


def _int(data: Mapping[str, Any], key: str, name: str, default: int | None) -> int | None:
    value = data.get(key, default)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"rule state {name!r} must be an integer or null")


def _bool(data: Mapping[str, Any], key: str, name: str) -> bool:
    value = data.get(key, False)
    if isinstance(value, bool):
        return value
    raise ValueError(f"rule state {name!r} must be true or false")


@dataclass(frozen=True, slots=True)
class DerivedEvent:
    """An event the platform raised for a device, stored like the device's own events."""

    event_id: str
    type: str
    data: dict[str, Any]
    at: datetime


# --------------------------------------------------------------------------- evaluation


def _epoch_ms(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("times must be timezone-aware (a naive time means something else on every host)")
    return round(at.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _number(value: MetricValue | None) -> int | float | None:
    """A usable numeric reading, or None (missing, text, boolean, NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _vital(
    metric: VitalMetric,
    run: VitalRun,
    value: int | float,
    ranges: VitalRanges,
    n: int,
    at_ms: int,
    at: datetime,
) -> tuple[VitalRun, DerivedEvent | None]:
    lo, hi = ranges.band(metric)
    if lo <= value <= hi:
        return VitalRun(), None  # back to normal: the episode, if any, is over
    start = run.start_ms if run.count > 0 and run.start_ms is not None else at_ms
    count = min(run.count + 1, n)
    if run.fired or count < n:
        return VitalRun(count, start, run.fired), None
    event = DerivedEvent(
        event_id=f"rule-vital-{metric}-{start}",
        type="vital_alert",
        # data[metric] mirrors device-side vital_alert events (docs/protocol.md: data.hr, data.rr).
        data={"metric": metric, "value": value, "min": lo, "max": hi, "readings": n, metric: value},
        at=at,
    )
    return VitalRun(count, start, True), event


def evaluate(
    cfg: RulesConfig,
    ranges: VitalRanges,
    state: RuleState,
    metrics: Mapping[str, MetricValue],
    at: datetime,
    local_hour: int,
) -> tuple[RuleState, list[DerivedEvent]]:
    """Apply one telemetry message (or a timer tick with empty ``metrics``) to a device.

    ``at`` is when the readings were taken (aware datetime; the shell decides between the
    device clock and the receive time), ``local_hour`` the hour at the home, which decides
    whether a bed exit happened at night. Returns the new state and the events to store,
    in a fixed order (hr, rr, bed_exit, inactivity, low_battery).

    A metric missing from ``metrics`` (or not a usable value) leaves its rule untouched.
    A heart or breathing rate of exactly 0 while the device says nobody is in bed is
    skipped: an empty mattress reports 0, which means "no signal", not "no heartbeat".
    """
    if not 0 <= local_hour <= 23:
        raise ValueError(f"local_hour must be 0-23, got {local_hour}")
    at_ms = _epoch_ms(at)
    events: list[DerivedEvent] = []
    # Presence first: the vitals and the timers below depend on where the resident is.
    pr = _presence(cfg, state, metrics, at_ms, local_hour)
    runs = _vitals(cfg, ranges, state, metrics, pr.presence, at_ms, at, events)
    _not_back_in_bed(cfg, pr, at_ms, at, events)
    last_activity, inactivity_fired = _no_movement(cfg, state, metrics, pr, at_ms, at, events)
    low_since = _battery(cfg, state, metrics, at_ms, at, events)

    new_state = replace(
        state,
        hr=runs["hr"],
        rr=runs["rr"],
        presence=pr.presence,
        out_since_ms=pr.out_since,
        out_at_night=pr.out_at_night,
        bed_exit_fired=pr.bed_fired,
        last_activity_ms=last_activity,
        inactivity_fired=inactivity_fired,
        battery_low_since_ms=low_since,
    )
    return new_state, events


@dataclass(slots=True)
class _Presence:
    """Where the resident is after this message, and whether it showed movement."""

    presence: str | None
    out_since: int | None
    out_at_night: bool
    bed_fired: bool
    moved: bool = False
    observed: bool = False


def _presence(
    cfg: RulesConfig, state: RuleState, metrics: Mapping[str, MetricValue], at_ms: int, local_hour: int
) -> _Presence:
    pr = _Presence(state.presence, state.out_since_ms, state.out_at_night, state.bed_exit_fired)
    reading = metrics.get("presence")
    if isinstance(reading, str) and reading in PRESENCE_VALUES:
        pr.observed = True
        if reading != pr.presence:
            pr.moved = pr.presence is not None  # a change of presence is movement
            if reading == IN_BED:
                pr.out_since, pr.out_at_night, pr.bed_fired = None, False, False
            elif pr.presence == IN_BED:
                # An exit is a transition out of bed; an out-of-bed first reading tells us
                # nothing about when they left, so it starts no episode.
                pr.out_since, pr.out_at_night, pr.bed_fired = at_ms, cfg.bed_exit.is_night(local_hour), False
            pr.presence = reading
    return pr


def _vitals(
    cfg: RulesConfig,
    ranges: VitalRanges,
    state: RuleState,
    metrics: Mapping[str, MetricValue],
    presence: str | None,
    at_ms: int,
    at: datetime,
    events: list[DerivedEvent],
) -> dict[VitalMetric, VitalRun]:
    runs: dict[VitalMetric, VitalRun] = {"hr": state.hr, "rr": state.rr}
    for metric in VITAL_METRICS:
        value = _number(metrics.get(metric))
        if value is None or (value == 0 and presence in NOT_IN_BED):
            continue
        run, event = _vital(metric, runs[metric], value, ranges, cfg.vitals.consecutive_readings, at_ms, at)
        runs[metric] = run
        if event is not None:
            events.append(event)
    return runs


def _not_back_in_bed(
    cfg: RulesConfig, pr: _Presence, at_ms: int, at: datetime, events: list[DerivedEvent]
) -> None:
    if (
        pr.presence in NOT_IN_BED
        and pr.out_since is not None
        and pr.out_at_night
        and not pr.bed_fired
        and at_ms - pr.out_since >= cfg.bed_exit.return_minutes * 60_000
    ):
        pr.bed_fired = True
        events.append(
            DerivedEvent(
                event_id=f"rule-bed-exit-{pr.out_since}",
                type="bed_exit",
                data={
                    "returned": False,
                    "minutes": cfg.bed_exit.return_minutes,
                    "left_at": _iso(pr.out_since),
                },
                at=at,
            )
        )


def _no_movement(
    cfg: RulesConfig,
    state: RuleState,
    metrics: Mapping[str, MetricValue],
    pr: _Presence,
    at_ms: int,
    at: datetime,
    events: list[DerivedEvent],
) -> tuple[int | None, bool]:
    """(last activity, whether inactivity has fired) after this message."""
    observed, moved = pr.observed, pr.moved
    motion = metrics.get("motion")
    if isinstance(motion, bool):
        observed, moved = True, moved or motion
    elif (m := _number(motion)) is not None:
        observed, moved = True, moved or m > 0
    last_activity, inactivity_fired = state.last_activity_ms, state.inactivity_fired
    if moved and (last_activity is None or at_ms > last_activity):
        last_activity, inactivity_fired = at_ms, False
    elif observed and last_activity is None:
        last_activity = at_ms  # first sight of a motion sensor: the clock starts now
    minutes = cfg.inactivity.minutes
    if last_activity is not None and not inactivity_fired and at_ms - last_activity >= minutes * 60_000:
        inactivity_fired = True
        events.append(
            DerivedEvent(
                event_id=f"rule-inactivity-{last_activity}",
                type="inactivity",
                data={"minutes": minutes, "last_activity": _iso(last_activity)},
                at=at,
            )
        )
    return last_activity, inactivity_fired


def _battery(
    cfg: RulesConfig,
    state: RuleState,
    metrics: Mapping[str, MetricValue],
    at_ms: int,
    at: datetime,
    events: list[DerivedEvent],
) -> int | None:
    """When the battery went low (None = armed), with hysteresis."""
    low_since = state.battery_low_since_ms
    battery = _number(metrics.get("battery_pct"))
    if battery is not None:
        if low_since is None and battery < cfg.battery.low_pct:
            low_since = at_ms
            events.append(
                DerivedEvent(
                    event_id=f"rule-battery-{at_ms}",
                    type="low_battery",
                    data={"battery_pct": battery, "threshold_pct": cfg.battery.low_pct},
                    at=at,
                )
            )
        elif low_since is not None and battery > cfg.battery.low_pct + cfg.battery.hysteresis_pct:
            low_since = None
    return low_since
