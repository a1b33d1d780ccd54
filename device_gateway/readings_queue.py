"""The readings' queue: the telemetry connection's incoming messages, merged per device
and shed past its bounds as device_gateway/shedding.py decides, every one counted.

aiomqtt constructs its queue itself (``queue_type(maxsize=…)``), so ``readings_queue``
returns a class bound to the gateway's settings and counters.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

import aiomqtt

from carecall.core import metrics as m
from device_gateway.mqtt import device_key
from device_gateway.shedding import Admit, admit_reading, merge_readings

__all__ = ["ShedCounts", "readings_queue"]


@dataclass(slots=True)
class ShedCounts:
    """Readings merged and dropped by one gateway copy, and its queue's depth now."""

    merged: int = 0
    dropped: int = 0
    queued: int = 0


def readings_queue(
    *, shed_above: int, drop_above: int, max_bytes: int, counts: ShedCounts
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """The queue class of a telemetry connection with these bounds, counting into ``counts``."""
    if not 0 < shed_above <= drop_above:
        raise ValueError(f"need 0 < shed_above <= drop_above, got {shed_above}, {drop_above}")
    merged_total = m.READINGS_SHED.labels("merged")
    dropped_total = m.READINGS_SHED.labels("dropped")

    class ReadingsQueue(asyncio.Queue[aiomqtt.Message]):
        """FIFO of readings, one slot each; past the bounds, merged per device or dropped."""

        def _init(self, maxsize: int) -> None:
            # a slot is a one-item list, so a merge replaces its message in place
            self._slots: collections.deque[list[aiomqtt.Message]] = collections.deque()
            self._latest: dict[str, list[aiomqtt.Message]] = {}  # device → its newest slot

        def qsize(self) -> int:
            return len(self._slots)

        def empty(self) -> bool:
            return not self._slots

        def _put(self, item: aiomqtt.Message) -> None:
            topic = item.topic.value
            if not topic.endswith("/telemetry"):
                # Not a reading: in the all lane the five-level filter also brings copies
                # of events and status (the intake leaves them to the main connection) and
                # unknown channels (counted as bad_topic). Never merged nor counted as shed.
                self._slots.append([item])
                counts.queued = len(self._slots)
                return
            key = device_key(topic)
            slot = self._latest.get(key)
            queued = len(self._slots)
            action = admit_reading(
                queued, shed_above=shed_above, drop_above=drop_above, device_waiting=slot is not None
            )
            if action is Admit.merge and slot is not None:
                old, new = slot[0].payload, item.payload
                merged = (
                    merge_readings(old, new, max_bytes)
                    if isinstance(old, bytes) and isinstance(new, bytes)
                    else None
                )
                if merged is not None:
                    slot[0] = aiomqtt.Message(
                        item.topic, merged, item.qos, item.retain, item.mid, item.properties
                    )
                    counts.merged += 1
                    merged_total.inc()
                    return
                # an odd reading goes through the full parser on its own
                action = admit_reading(
                    queued, shed_above=shed_above, drop_above=drop_above, device_waiting=False
                )
            if action is Admit.drop:
                counts.dropped += 1
                dropped_total.inc()
                return
            new_slot = [item]
            self._slots.append(new_slot)
            self._latest[key] = new_slot
            counts.queued = len(self._slots)

        def _get(self) -> aiomqtt.Message:
            slot = self._slots.popleft()
            item = slot[0]
            key = device_key(item.topic.value)
            if self._latest.get(key) is slot:  # (a non-reading's slot is never there)
                del self._latest[key]
            counts.queued = len(self._slots)
            return item

    return ReadingsQueue
