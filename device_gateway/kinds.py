"""The protocol's device kinds and their default heartbeats (docs/protocol.md).

Schema changes go through Alembic (carecall/core/migrations).
"""

from __future__ import annotations

from enum import StrEnum


class DeviceKind(StrEnum):
    hub = "hub"
    button = "button"
    watch = "watch"
    radar = "radar"
    mattress = "mattress"
    smoke = "smoke"
    gas = "gas"
    water = "water"
    door = "door"


# Default heartbeat per kind (seconds): mains-powered hubs/radars report often, battery
# sensors rarely (docs/protocol.md "Supervision").
DEFAULT_HEARTBEAT_S: dict[DeviceKind, int] = {
    DeviceKind.hub: 60,
    DeviceKind.radar: 60,
    DeviceKind.mattress: 60,
    DeviceKind.watch: 300,
    DeviceKind.button: 4 * 3600,
    DeviceKind.smoke: 4 * 3600,
    DeviceKind.gas: 4 * 3600,
    DeviceKind.water: 4 * 3600,
    DeviceKind.door: 4 * 3600,
}
