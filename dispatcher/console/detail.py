"""Pure shaping for the console's detail pane: ages, time zones, the service circle's
radius, the vital-sign trend and what a supervisor may see of a resident: functions of
their arguments only (no database, no clock; the caller passes the rows and the time).

Vital-sign trend: the gateway keeps one hr/rr point a minute per device for the last
three hours (``device_state.vitals_trend``); the trend merges those with the hr/rr values
of the home's recent events (``vital_alert`` from a device or the gateway's rules) and the
latest reading.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatcher.auth.privacy import mask_name, mask_number
from dispatcher.calls.routing import RoutingConfig
from dispatcher.console.schemas import ResidentInfo, TrendPoint

DEFAULT_TZ = "Asia/Shanghai"
TREND_WINDOW = timedelta(hours=12)
TREND_MAX_POINTS = 180


def aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or DEFAULT_TZ)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TZ)


def age_on(birth: date, today: date) -> int:
    """Whole years, the way an ID card is read (birthday not yet reached: one less)."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def reach_km(cfg: RoutingConfig, area: str) -> float:
    """The straight-line radius a responder covers within the service circle; the inverse
    of ``routing.travel_minutes``, so the drawn circle matches how calls are routed."""
    speed = cfg.rural_speed_kmh if area == "rural" else cfg.urban_speed_kmh
    return cfg.limit_min(area) * speed / 60.0 / cfg.road_factor


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def redacted(resident: ResidentInfo | None) -> ResidentInfo | None:
    """The resident as a supervisor may see them (dispatcher.auth.privacy): no health
    facts, no way in, no phone of their own (only roles that handle calls ring them)."""
    if resident is None:
        return None
    return resident.model_copy(
        update={
            "name": mask_name(resident.name) or "",
            "conditions": [],
            "notes": "",
            "birth_date": None,
            "phone": "",
            "medications": "",
            "allergies": "",
            "access_notes": "",
            "contacts": [
                c.model_copy(update={"name": mask_name(c.name) or "", "phone": mask_number(c.phone)})
                for c in resident.contacts
            ],
        }
    )


def trend_points(
    events: list[tuple[datetime, dict[str, Any]]],
    latest: list[tuple[datetime | None, dict[str, Any]]],
    history: list[list[float | None]] | None = None,
) -> list[TrendPoint]:
    """hr/rr points in time order from the per-minute history, events' data and the latest
    readings; readings without either value are left out, only the newest
    ``TREND_MAX_POINTS`` kept."""
    pts: list[TrendPoint] = []
    for point in history or []:
        if len(point) == 3 and point[0] is not None and (point[1] is not None or point[2] is not None):
            at = datetime.fromtimestamp(point[0] / 1000, tz=UTC)
            pts.append(TrendPoint(at=at, hr=point[1], rr=point[2], source="telemetry"))
    for at, data in events:
        hr, rr = _num(data.get("hr")), _num(data.get("rr"))
        if hr is not None or rr is not None:
            pts.append(TrendPoint(at=aware(at) or at, hr=hr, rr=rr, source="event"))
    for seen_at, metrics in latest:
        if seen_at is None:
            continue
        at = seen_at
        hr, rr = _num(metrics.get("hr")), _num(metrics.get("rr"))
        if hr is not None or rr is not None:
            pts.append(TrendPoint(at=aware(at) or at, hr=hr, rr=rr, source="latest"))
    pts.sort(key=lambda p: p.at)
    return pts[-TREND_MAX_POINTS:]
