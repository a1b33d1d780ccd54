"""What a simulated county does over time, as a small YAML file a person can read and tune.

Scenarios are data, not code, so a demo, a load test and a regression test can share the same
device simulator and differ only in numbers. The model is strict (unknown keys are errors)
because a misspelt rate would otherwise silently become zero and a load test would measure
nothing while looking green.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from config.types import TimeZoneName
from device_gateway.kinds import DeviceKind
from device_gateway.protocol import V1_TYPES

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

SECONDS_PER_DAY = 86_400.0

# Which device kinds plausibly raise each event type. Bursts and scripted events use it to
# pick a sender when the scenario does not name one, so a storm of smoke alarms comes from
# smoke detectors (or a hub's smoke sensor), never from a wrist watch.
EMITTERS: dict[str, tuple[DeviceKind, ...]] = {
    "sos": (DeviceKind.button, DeviceKind.watch, DeviceKind.hub),
    "fall": (DeviceKind.radar, DeviceKind.watch),
    "vital_alert": (DeviceKind.mattress, DeviceKind.watch),
    "smoke": (DeviceKind.smoke, DeviceKind.hub),
    "gas": (DeviceKind.gas, DeviceKind.hub),
    "water_leak": (DeviceKind.water, DeviceKind.hub),
    "inactivity": (DeviceKind.radar, DeviceKind.hub),
    "bed_exit": (DeviceKind.mattress,),
    "door_open": (DeviceKind.door, DeviceKind.hub),
    "cancel": (DeviceKind.button, DeviceKind.watch),
    "test": (DeviceKind.button,),
    "low_battery": (
        DeviceKind.button,
        DeviceKind.watch,
        DeviceKind.smoke,
        DeviceKind.gas,
        DeviceKind.water,
        DeviceKind.door,
    ),
    "tamper": (DeviceKind.hub, DeviceKind.door),
    "power_loss": (DeviceKind.hub,),
    "power_restored": (DeviceKind.hub,),
    # the service button (服务键) of a hub's panel or a one-key button: everyday help
    "service_request": (DeviceKind.hub, DeviceKind.button),
}

NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Hour = Annotated[int, Field(ge=0, le=23)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_kind(kind: str) -> str:
    if kind not in {k.value for k in DeviceKind}:
        known = ", ".join(k.value for k in DeviceKind)
        raise ValueError(f"unknown device kind {kind!r} (known: {known})")
    return kind


def _check_type(event_type: str) -> str:
    if event_type not in V1_TYPES:
        raise ValueError(f"unknown event type {event_type!r} (v1 types: {', '.join(sorted(V1_TYPES))})")
    return event_type


class Backoff(_Strict):
    """Exponential backoff; the same shape serves event resends and reconnects."""

    initial_s: Positive = 5.0
    factor: Annotated[float, Field(ge=1)] = 2.0
    max_s: Positive = 60.0

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> Backoff:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be at least initial_s")
        return self


class Night(_Strict):
    """Local hours counted as night; the platform's own default is 22:00-06:00."""

    start_hour: Hour = 22
    end_hour: Hour = 6

    def contains(self, hour: int) -> bool:
        if self.start_hour <= self.end_hour:
            return self.start_hour <= hour < self.end_hour
        return hour >= self.start_hour or hour < self.end_hour


class Offline(_Strict):
    """Devices that go quiet now and then (flat battery, unplugged hub, lost SIM signal).

    ``probability_per_day`` is the chance that a given device drops at least once in a
    simulated day; drops then last between ``min_s`` and ``max_s`` simulated seconds. The
    drop is abrupt (no MQTT DISCONNECT) so the platform sees the will message, as it would
    from a real device losing power.
    """

    probability_per_day: Annotated[float, Field(ge=0, lt=1)] = 0.0
    min_s: Positive = 600.0
    max_s: Positive = 3600.0

    @model_validator(mode="after")
    def _range(self) -> Offline:
        if self.max_s < self.min_s:
            raise ValueError("max_s must be at least min_s")
        return self

    @property
    def rate_per_s(self) -> float:
        """Poisson rate equivalent to the daily probability."""
        return -math.log1p(-self.probability_per_day) / SECONDS_PER_DAY


class Telemetry(_Strict):
    """Heartbeat telemetry.

    Intervals come from each device's registry entry (``DeviceSpec.heartbeat_s``) because
    the platform supervises against that number; ``heartbeat_s`` here only overrides it per
    kind, for load tests that want more traffic than the registry would produce.
    """

    heartbeat_s: dict[str, Positive] = Field(default_factory=dict)
    jitter: Annotated[float, Field(ge=0, lt=1)] = 0.1
    qos: Annotated[int, Field(ge=0, le=1)] = 0

    @field_validator("heartbeat_s")
    @classmethod
    def _kinds(cls, value: dict[str, float]) -> dict[str, float]:
        for kind in value:
            _check_kind(kind)
        return value


class Burst(_Strict):
    """A bounded storm: ``total`` extra events spread over a window, types drawn by weight."""

    start_s: NonNegative = 60.0
    duration_s: Positive = 300.0
    total: Annotated[int, Field(ge=0, le=1_000_000)] = 100
    types: dict[str, Positive] = Field(default_factory=lambda: {"sos": 1.0})

    @field_validator("types")
    @classmethod
    def _types(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("needs at least one event type")
        for event_type in value:
            _check_type(event_type)
        return value


class Scripted(_Strict):
    """One event at a fixed simulated time, for stories a demo must always tell."""

    at_s: NonNegative
    type: str
    kind: str | None = None
    device_index: Annotated[int, Field(ge=0)] = 0
    sensor: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _check_type(value)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str | None) -> str | None:
        return None if value is None else _check_kind(value)


class _Pick(_Strict):
    """Which device a per-device behaviour applies to: the ``device_index``-th (by id) of ``kind``."""

    kind: str | None = None
    device_index: Annotated[int, Field(ge=0)] = 0

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str | None) -> str | None:
        return None if value is None else _check_kind(value)


class PowerCut(_Strict):
    """Many devices lose power at the same moment and come back together.

    At ``at_s`` up to ``devices`` devices (all of them when the county is smaller; only
    those of ``kinds`` when given) drop abruptly, so the broker fires every will at once;
    ``duration_s`` later they all reconnect and resend what they were holding.
    """

    at_s: NonNegative = 60.0
    duration_s: Positive = 600.0
    devices: Annotated[int, Field(ge=1, le=1_000_000)] = 2000
    kinds: list[str] | None = None

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for kind in value:
                _check_kind(kind)
        return value


class Flapping(_Pick):
    """A device that drops every ``period_s`` and is back ``down_s`` later (a loose plug).

    Bounded by ``max_drops`` and by the run's end.
    """

    start_s: NonNegative = 60.0
    period_s: Positive = 180.0
    down_s: Positive = 30.0
    max_drops: Annotated[int, Field(ge=1, le=100_000)] = 1000

    @model_validator(mode="after")
    def _down_within_period(self) -> Flapping:
        if self.down_s >= self.period_s:
            raise ValueError("down_s must be shorter than period_s")
        return self


class ResendForever(_Pick):
    """A device whose firmware ignores ``received`` and resends one event over and over.

    It raises ``type`` at ``at_s`` and sends the same bytes every ``interval_s`` simulated
    seconds (the scenario's resend backoff when null) until ``max_sends`` copies or the end
    of the run, whichever comes first. The platform must store it once and ack every copy.
    """

    at_s: NonNegative = 10.0
    type: str = "sos"
    sensor: str | None = None
    interval_s: Positive | None = 30.0
    max_sends: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _check_type(value)


class Scenario(_Strict):
    """A whole simulated run. Every field has a default, so ``Scenario()`` means heartbeats only."""

    name: str = "custom"
    description: str = ""
    duration_s: Positive | None = Field(default=None, description="simulated seconds; null = until stopped")
    timezone: TimeZoneName = "Asia/Shanghai"
    day_night_rhythm: bool = True
    night: Night = Field(default_factory=Night)
    # events per device per simulated day, by device kind then event type
    rates: dict[str, dict[str, NonNegative]] = Field(default_factory=dict)
    # multiplier applied to a type's rate at night when the rhythm is on (day rate unchanged)
    night_factor: dict[str, NonNegative] = Field(default_factory=dict)
    # share of bed exits at night where the resident does not get back in time
    bed_exit_not_returned: Annotated[float, Field(ge=0, le=1)] = 0.15
    offline: Offline = Field(default_factory=Offline)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    resend: Backoff = Field(default_factory=Backoff)
    reconnect: Backoff = Field(default_factory=lambda: Backoff(initial_s=1.0, max_s=60.0))
    burst: Burst | None = None
    scripted: list[Scripted] = Field(default_factory=list)
    # Optional fault stories (absent = none): a mass power cut, flapping devices, and
    # devices that resend an event forever.
    power_cut: PowerCut | None = None
    flapping: list[Flapping] = Field(default_factory=list)
    resend_forever: list[ResendForever] = Field(default_factory=list)

    @field_validator("rates")
    @classmethod
    def _rates(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for kind, per_type in value.items():
            _check_kind(kind)
            for event_type in per_type:
                try:
                    _check_type(event_type)
                except ValueError as exc:
                    raise ValueError(f"rates.{kind}: {exc}") from None
        return value

    @field_validator("night_factor")
    @classmethod
    def _night_factor(cls, value: dict[str, float]) -> dict[str, float]:
        for event_type in value:
            _check_type(event_type)
        return value

    def rate_per_s(self, kind: str, event_type: str, *, night: bool) -> float:
        """Events per device per simulated second at this moment of the day."""
        per_day = self.rates.get(kind, {}).get(event_type, 0.0)
        if night and self.day_night_rhythm:
            per_day *= self.night_factor.get(event_type, 1.0)
        return per_day / SECONDS_PER_DAY

    def peak_rate_per_s(self, kind: str) -> float:
        """Upper bound of a kind's total rate over the day (the envelope for thinning)."""
        total = 0.0
        for event_type in self.rates.get(kind, {}):
            day = self.rate_per_s(kind, event_type, night=False)
            total += max(day, self.rate_per_s(kind, event_type, night=True))
        return total

    def heartbeat_for(self, kind: str, registry_s: int) -> float:
        return self.telemetry.heartbeat_s.get(kind, float(registry_s))


class ScenarioError(ValueError):
    """A scenario file is missing or invalid; the message names the file and the key."""


def scenario_path(path_or_name: str | Path) -> Path:
    """A bare name (``normal``) means the scenario shipped in simulators/scenarios."""
    text = str(path_or_name)
    if isinstance(path_or_name, str) and "/" not in text and "\\" not in text:
        stem = text.removesuffix(".yaml").removesuffix(".yml")
        shipped = SCENARIO_DIR / f"{stem}.yaml"
        if shipped.is_file() or not Path(text).exists():
            return shipped
    return Path(path_or_name)


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Read and validate a scenario; raises ScenarioError with one line naming the bad key."""
    path = scenario_path(path_or_name)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
        raise ScenarioError(f"no scenario {str(path_or_name)!r} (shipped: {shipped})") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: a scenario must be a mapping of keys")
    raw.setdefault("name", path.stem)
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(f"{path}: {_describe(exc)}") from exc


def _describe(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    key = ".".join(str(p) for p in err.get("loc", ())) or "scenario"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return f"unknown key {key!r}"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"bad value for {key!r}: {msg}{tail}"
