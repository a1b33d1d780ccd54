"""The gateway's lanes: alarms and readings in processes of their own (issue 15).

One gateway process with both broker connections serves alarms (events, status, wills;
their acks and the devices' config downlink) and readings (telemetry, thousands a second)
on one event loop, so an SOS's commit and ack wait for the loop turns the readings take.
``carecall gateway --lane`` splits them:

- ``all`` (default, and always in the demo): both, as one process, as before;
- ``events``: the alarm lane only. One QoS 1 connection to events and status (and the
  malformed deeper / shallower topics, which are counted as ``bad_topic``); never a
  reading. It runs the supervision sweep (silence → ``offline``).
- ``readings``: telemetry only, on its own connection, with its own event writer for the
  events the rules derive from readings, and the rules' timer tick. Under overload its
  queue merges and sheds readings (device_gateway/shedding.py); alarms are not in it.

Each lane joins a shared-subscription group of its own (``{group}-events``,
``{group}-readings``), so copies of one lane split that lane's messages and a readings
copy is never handed an alarm. Each lane copy has its own name (``gateway-{instance}-
{lane}``), hence its own broker client ids and its own rows in ``broker_outages``.

Everything here is pure: the service (device_gateway/service.py) asks it which
connections to open, with which subscriptions, and which channels to take.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from device_gateway import protocol as p
from device_gateway.mqtt import connections, subscriptions

__all__ = ["Connection", "Lane", "lane_group", "lane_name", "lane_plan", "lane_takes"]


class Lane(StrEnum):
    all = "all"
    events = "events"
    readings = "readings"


@dataclass(frozen=True, slots=True)
class Connection:
    """One broker connection of a lane. The ``primary`` one carries the downlink (acks,
    config), records broker outages and sets ``carecall_gateway_mqtt_connected``."""

    role: str  # "main" (alarms first, UplinkQueue) or "telemetry" (readings, ReadingsQueue)
    subscriptions: tuple[tuple[str, int], ...]
    primary: bool


def lane_group(lane: Lane, group: str | None) -> str | None:
    """The shared-subscription group of a lane's copies (None: plain subscriptions)."""
    if not group:
        return None
    return group if lane is Lane.all else f"{group}-{lane.value}"


def lane_name(instance: str, lane: Lane) -> str:
    """The copy's name: its client ids, the ``gateway`` of its rows, its outages."""
    return f"gateway-{instance}" if lane is Lane.all else f"gateway-{instance}-{lane.value}"


def lane_takes(lane: Lane, channel: p.Channel) -> bool:
    """Whether a lane handles an uplink channel (the others belong to the other lane)."""
    if lane is Lane.all:
        return True
    if lane is Lane.readings:
        return channel is p.Channel.telemetry
    return channel is not p.Channel.telemetry


def lane_plan(
    lane: Lane, *, telemetry_qos: int, shared_group: str | None, by_name: bool = False
) -> list[Connection]:
    """The broker connections of a lane, with subscriptions that never overlap.

    ``all`` is today's layout (device_gateway/mqtt.py ``subscriptions`` and
    ``connections``). ``events`` subscribes to the events and status channels by name,
    so no reading is ever delivered to it; an unknown five-level channel
    (``{root}/bogus``) is then not received by either lane: the broker's rules
    (``carecall broker-config``) refuse it, as with telemetry at QoS 0 in ``all``.
    ``readings`` subscribes to the telemetry channel only, at ``telemetry_qos``.

    ``by_name`` (a broker that refuses unnamed channels: the embedded one) makes ``all``
    the two lanes' subscriptions on its two connections: the readings connection then
    takes readings only, not a QoS 0 copy of every event, ack and config, which the
    one-process broker delivered, and the gateway parsed, only to drop them (issue 15).
    """
    group = lane_group(lane, shared_group)
    if lane is Lane.all and by_name and telemetry_qos == 0:
        return [
            Connection("main", _share(group, _alarm_filters()), True),
            Connection("telemetry", _share(group, [_telemetry_filter(0)]), False),
        ]
    if lane is Lane.all:
        subs = subscriptions(telemetry_qos=telemetry_qos, shared_group=group)
        return [Connection(role, tuple(s), role == "main") for role, s in connections(subs)]
    if lane is Lane.events:
        return [Connection("main", _share(group, _alarm_filters()), True)]
    return [Connection("telemetry", _share(group, [_telemetry_filter(telemetry_qos)]), True)]


def _alarm_filters() -> list[tuple[str, int]]:
    root = p.TOPIC_PREFIX
    return [
        (f"{root}/+/{p.Channel.events.value}", 1),
        (f"{root}/+/{p.Channel.status.value}", 1),
        (f"{root}/+/+/+/#", 1),  # anything deeper, anything shallower: bad_topic
        (f"{root}/+", 1),
    ]


def _telemetry_filter(qos: int) -> tuple[str, int]:
    return (f"{p.TOPIC_PREFIX}/+/{p.Channel.telemetry.value}", qos)


def _share(group: str | None, base: list[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    return tuple((f"$share/{group}/{t}", q) for t, q in base) if group else tuple(base)
