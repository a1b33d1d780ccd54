"""The embedded broker's broadcast queue: alarms before readings (issue 15).

amqtt keeps one FIFO of every message to deliver. In the one-process target the broker
shares a core with the gateway and the dispatcher; when it falls behind, an SOS (and its
``received`` ack on the way back) waited behind every reading queued before it.
``AlarmsFirstQueue`` hands out events, status, acks and configs before readings
(``…/telemetry``), each kind in arrival order; the readings themselves are merged and
shed, counted, by the gateway's readings queue (device_gateway/readings_queue.py). MQTT
orders messages per topic, and no topic's messages change order here.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Final

__all__ = ["DELIVERY_BATCH", "AlarmsFirstQueue"]

# messages of one client handled in one turn of its connection loop
DELIVERY_BATCH: Final = 32


class AlarmsFirstQueue(asyncio.Queue[dict[str, Any]]):
    """amqtt's broadcasts (dicts with a ``topic``): every one but readings first."""

    def _init(self, maxsize: int) -> None:
        self._urgent: collections.deque[dict[str, Any]] = collections.deque()
        self._bulk: collections.deque[dict[str, Any]] = collections.deque()

    def qsize(self) -> int:
        return len(self._urgent) + len(self._bulk)

    def empty(self) -> bool:
        return not (self._urgent or self._bulk)

    def _put(self, item: dict[str, Any]) -> None:
        topic = item.get("topic")
        if isinstance(topic, str) and topic.endswith("/telemetry"):
            self._bulk.append(item)
        else:
            self._urgent.append(item)

    def _get(self) -> dict[str, Any]:
        return self._urgent.popleft() if self._urgent else self._bulk.popleft()
