"""What a simulated device measures: the resident in the bed and the device's own battery.

Stable per device, so a resident's vital signs look like one person's: a resting heart
and breathing rate, whether they nap after lunch, the hub's radio signal, a battery that
drains by kind. Readings follow the time of day (``Scenario.night``) and recent events (a
bed exit keeps the mattress empty for a while). Everything random comes from the streams
the device hands in, so a seed reproduces a resident.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from device_gateway.kinds import DeviceKind
from simulators.scenario import Scenario

# Roughly Tanghe County seat: where watches report themselves when they know their position.
HOME_AREA = (32.689, 112.838)

BATTERY_KINDS = frozenset(
    {DeviceKind.button, DeviceKind.smoke, DeviceKind.gas, DeviceKind.water, DeviceKind.door}
)
# Percent per simulated day: a watch needs a nightly charge, a button lasts years.
BATTERY_DRAIN_PER_DAY: dict[str, float] = {
    DeviceKind.watch: 15.0,
    **dict.fromkeys(BATTERY_KINDS, 0.03),
}

Metric = int | float | str | bool

# What a resident asks for with the service button (docs/protocol.md service_request),
# by weight: meals most, then cleaning, shopping and medical escorts.
SERVICE_KIND_WEIGHTS: dict[str, float] = {
    "meal": 30.0,
    "cleaning": 16.0,
    "medical": 10.0,
    "shopping": 10.0,
    "repair": 8.0,
    "bathing": 8.0,
    "chat": 8.0,
    "mobility": 6.0,
    "other": 4.0,
}


class Body:
    """The resident and the device's physical state; ``rng`` shapes readings, ``event_rng``
    the contents of events (separate streams: event contents stay reproducible however
    often telemetry fires)."""

    def __init__(
        self, kind: str, scenario: Scenario, rng: random.Random, event_rng: random.Random, now: datetime
    ) -> None:
        self.kind = kind
        self._scenario = scenario
        self._tz = ZoneInfo(scenario.timezone)
        self._rng = rng
        self._event_rng = event_rng
        self._base_hr = rng.randint(62, 78)
        self._base_rr = rng.randint(13, 17)
        self._naps = rng.random() < 0.4
        self._rssi = rng.randint(-78, -55)
        self._battery = 100.0 if kind == DeviceKind.hub else rng.uniform(55.0, 100.0)
        self._battery_at = now
        self._out_of_bed_until: datetime | None = None

    def event_data(self, event_type: str, now: datetime) -> dict[str, Any]:
        """Type-specific fields a real device of this kind would send."""
        kind = self.kind
        if event_type in ("sos", "fall") and kind == DeviceKind.watch:
            if self._event_rng.random() < 0.5:  # outside, GPS fix: dispatch goes where the resident is
                lat = HOME_AREA[0] + self._event_rng.uniform(-0.03, 0.03)
                lon = HOME_AREA[1] + self._event_rng.uniform(-0.03, 0.03)
                loc = {"lat": round(lat, 5), "lon": round(lon, 5), "accuracy_m": 15}
                return {"location": loc}
            return {}
        if event_type == "vital_alert":
            high = self._event_rng.random() < 0.7
            hr = self._event_rng.randint(125, 150) if high else self._event_rng.randint(35, 45)
            return {
                "hr": hr,
                "rr": self._event_rng.randint(24, 32) if high else self._event_rng.randint(5, 8),
            }
        if event_type == "inactivity":
            return {"minutes": self._event_rng.randint(120, 480)}
        if event_type == "service_request":
            kinds = sorted(SERVICE_KIND_WEIGHTS)
            return {"kind": self._event_rng.choices(kinds, [SERVICE_KIND_WEIGHTS[k] for k in kinds])[0]}
        if event_type == "bed_exit":
            night = self.is_night(now)
            returned = not (night and self._event_rng.random() < self._scenario.bed_exit_not_returned)
            minutes = self._event_rng.uniform(3, 10) if returned else self._event_rng.uniform(30, 60)
            self._out_of_bed_until = now + timedelta(minutes=minutes)
            return {"returned": returned}
        if event_type == "low_battery":
            self._battery = min(self.battery(now), self._event_rng.uniform(8.0, 15.0))
            return {"battery_pct": round(self._battery)}
        return {}

    def metrics(self, now: datetime) -> dict[str, Metric]:
        """Current readings, shaped by kind, time of day and recent events."""
        night = self.is_night(now)
        kind = self.kind
        gauss = self._rng.gauss
        if kind == DeviceKind.mattress:
            in_bed = self._in_bed(now, night)
            out: dict[str, Metric] = {"presence": "in_bed" if in_bed else "out_of_bed"}
            if in_bed:
                out["hr"] = round(self._base_hr - (6 if night else 0) + gauss(0, 2.5))
                out["rr"] = round(self._base_rr - (1 if night else 0) + gauss(0, 1.0))
                out["motion"] = max(0, round(gauss(1 if night else 3, 1)))
            else:
                out["motion"] = 0
            return out
        if kind == DeviceKind.radar:
            present = self._rng.random() < (0.98 if night else 0.85)
            motion = max(0, round(gauss(1 if night else 5, 1.5))) if present else 0
            return {"presence": "present" if present else "absent", "motion": motion}
        if kind == DeviceKind.watch:
            hr = round(self._base_hr - (5 if night else 0) + gauss(2, 4))
            return {"hr": hr, "battery_pct": round(self.battery(now))}
        if kind == DeviceKind.hub:
            return {"rssi_dbm": round(self._rssi + gauss(0, 3)), "battery_pct": 100}
        return {"battery_pct": round(self.battery(now))}

    def is_night(self, now: datetime) -> bool:
        if not self._scenario.day_night_rhythm:
            return False
        return self._scenario.night.contains(now.astimezone(self._tz).hour)

    def _in_bed(self, now: datetime, night: bool) -> bool:
        if self._out_of_bed_until is not None and now < self._out_of_bed_until:
            return False
        if night or not self._scenario.day_night_rhythm:
            return True
        hour = now.astimezone(self._tz).hour
        return self._naps and 13 <= hour < 15

    def battery(self, now: datetime) -> float:
        """Percent left at ``now``, drained since the last look (a watch goes back on its
        charger below 10 %)."""
        days = (now - self._battery_at).total_seconds() / 86_400.0
        self._battery_at = now
        self._battery = max(0.0, self._battery - BATTERY_DRAIN_PER_DAY.get(self.kind, 0.0) * days)
        if self.kind == DeviceKind.watch and self._battery < 10.0:
            self._battery = 100.0  # back on its charger
        return self._battery
