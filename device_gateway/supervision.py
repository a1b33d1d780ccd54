"""Device liveness (docs/protocol.md "Supervision"): offline once, online once, in turn.

Every uplink message proves the device is alive; there is no heartbeat topic. A device
silent for ``intervals`` heartbeat intervals (default 3), or whose MQTT will
(``{"state":"offline"}`` on ``status``) arrives, is offline: one ``offline`` trouble event
for its station, cleared by one ``online`` event when it is heard again. Silence matters
because a dead hub is a bed with no emergency call at all (the platform must
notice silence, not only wait for a button).

Pure functions: the gateway shell keeps a :class:`Liveness` per device, feeds it uplinks
and wills as they arrive (``at`` = the platform's receive time: device clocks may be
wrong) and runs :func:`sweep` every few seconds. Event ids come from when the outage
began, and a silence-caused outage begins at ``last_seen + intervals * heartbeat_s``, not
at the moment some copy happened to sweep, so every gateway copy computes the same id
and the store (which dedups on ``(device, id)``) keeps one call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

SupervisionType = Literal["offline", "online"]


@dataclass(frozen=True, slots=True)
class Liveness:
    """What the platform knows of one device's connection.

    ``offline_since`` is set exactly when the device is offline: the moment its will
    arrived, or the end of its allowed silence.
    """

    device_id: str
    online: bool
    last_seen: datetime | None
    offline_since: datetime | None

    def __post_init__(self) -> None:
        if self.online and self.offline_since is not None:
            raise ValueError("an online device has no offline_since")
        if not self.online and self.offline_since is None:
            raise ValueError("an offline device needs offline_since")


@dataclass(frozen=True, slots=True)
class SupervisionEvent:
    """A trouble event the platform raises for a device (types in protocol.DEFAULT_CLASS)."""

    event_id: str
    type: SupervisionType
    data: dict[str, Any]
    at: datetime


def _ms(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("times must be timezone-aware (a naive time means something else on every host)")
    return round(at.timestamp() * 1000)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat(timespec="milliseconds")


def start_watching(device_id: str, since: datetime) -> Liveness:
    """A device the platform starts supervising with no uplink on record.

    It counts as seen at ``since`` (its registration, or the gateway's start), so a device
    that never connects still goes offline after ``intervals`` heartbeats instead of
    staying invisible forever.
    """
    _ms(since)
    return Liveness(device_id=device_id, online=True, last_seen=since, offline_since=None)


def is_overdue(last_seen: datetime | None, heartbeat_s: int, intervals: int, now: datetime) -> bool:
    """True once the device has been silent for ``intervals`` full heartbeat intervals.

    Three intervals, not one, because a single lost QoS 0 message or a slow radio must not
    call a station; at exactly ``intervals * heartbeat_s`` of silence the device is
    overdue. Never seen (``None``) is not overdue here: there is no start to measure from
    (see :func:`start_watching`).
    """
    if heartbeat_s <= 0:
        raise ValueError(f"heartbeat_s must be positive, got {heartbeat_s}")
    if intervals < 1:
        raise ValueError(f"intervals must be at least 1, got {intervals}")
    if last_seen is None:
        return False
    return now - last_seen >= timedelta(seconds=heartbeat_s * intervals)


def on_uplink(prev: Liveness, at: datetime) -> tuple[Liveness, SupervisionEvent | None]:
    """Any message from the device (event, telemetry, status online) received at ``at``.

    Returning after an outage yields one ``online`` event with how long it was away. A
    message received before the outage began (processed late, e.g. by another copy)
    predates the outage and does not end it; it only moves ``last_seen``.
    A retained ``status`` message replayed by the broker is not proof of life: the shell
    should not pass it here.
    """
    at_ms = _ms(at)
    last_seen = at if prev.last_seen is None else max(prev.last_seen, at)
    if prev.online or prev.offline_since is None:
        return replace(prev, last_seen=last_seen), None
    since_ms = _ms(prev.offline_since)
    if at_ms <= since_ms:
        return replace(prev, last_seen=last_seen), None
    state = Liveness(prev.device_id, online=True, last_seen=last_seen, offline_since=None)
    event = SupervisionEvent(
        event_id=f"sup-online-{since_ms}",
        type="online",
        data={
            "offline_since": _iso(prev.offline_since),
            "offline_s": (at_ms - since_ms) // 1000,
        },
        at=at,
    )
    return state, event


def on_will(prev: Liveness, at: datetime) -> tuple[Liveness, SupervisionEvent | None]:
    """The device's MQTT will (``{"state":"offline"}``) arrived at ``at``: offline now.

    Raised once: a will for a device already offline changes nothing. A will older than
    the last uplink is stale (the device has reconnected since) and is ignored.
    """
    at_ms = _ms(at)
    if not prev.online or (prev.last_seen is not None and at < prev.last_seen):
        return prev, None
    state = Liveness(prev.device_id, online=False, last_seen=prev.last_seen, offline_since=at)
    event = SupervisionEvent(
        event_id=f"sup-offline-{at_ms}",
        type="offline",
        data={"reason": "will", "last_seen": _iso(prev.last_seen)},
        at=at,
    )
    return state, event


def sweep(
    states: Iterable[tuple[Liveness, int]], intervals: int, now: datetime
) -> list[tuple[Liveness, SupervisionEvent]]:
    """Devices (with their heartbeat in seconds) that have just gone silent, in input order.

    Only online devices can go offline, so sweeping again and again raises nothing new.
    The outage is dated ``last_seen + intervals * heartbeat_s``: deterministic, whatever
    moment the sweep runs.
    """
    _ms(now)
    out: list[tuple[Liveness, SupervisionEvent]] = []
    for live, heartbeat_s in states:
        if not live.online or live.last_seen is None:
            continue
        if not is_overdue(live.last_seen, heartbeat_s, intervals, now):
            continue
        since = live.last_seen + timedelta(seconds=heartbeat_s * intervals)
        state = Liveness(live.device_id, online=False, last_seen=live.last_seen, offline_since=since)
        event = SupervisionEvent(
            event_id=f"sup-offline-{_ms(since)}",
            type="offline",
            data={
                "reason": "silent",
                "last_seen": _iso(live.last_seen),
                "heartbeat_s": heartbeat_s,
                "intervals": intervals,
            },
            at=since,
        )
        out.append((state, event))
    return out


def maintenance_due(
    last_test_at: datetime | None, registered_at: datetime, now: datetime, days: int = 7
) -> bool:
    """True when the device has not sent ``test`` for ``days`` (docs/protocol.md: weekly tests).

    A button that is never pressed may be broken without anyone knowing; the weekly test
    is the only proof it still calls. A device never tested counts from its registration,
    so a new device gets the same grace period instead of being listed on day one.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    since = last_test_at if last_test_at is not None else registered_at
    return now - since >= timedelta(days=days)
