"""Platform → device messages of the gateway: acks and config, published without waiting.

Nothing waits for a publish: a device resends its event until it is acked ``received``
(docs/protocol.md "Resending events"), so an ack lost with the connection is sent again
on the resend. The payloads come from the protocol's encoders (device_gateway/protocol).
"""

from __future__ import annotations

import aiomqtt
import paho.mqtt.client as paho
import structlog

from carecall.core import metrics as m
from carecall.core.clock import Clock
from device_gateway import protocol as p
from device_gateway.stats import GatewayStats

log = structlog.get_logger("carecall.gateway")


class Downlink:
    def __init__(self, clock: Clock, stats: GatewayStats) -> None:
        self.clock = clock
        self.stats = stats
        self.client: aiomqtt.Client | None = None  # the main connection, while it is up

    def ack(
        self, device_id: str, event_id: str | None, state: p.AckState, *, reason: str | None = None
    ) -> None:
        client = self.client
        if client is None:
            return  # the device resends; it will be acked then
        # event_id "" when a rejected message had no readable id
        payload = p.ack_payload(event_id or "", state, self.clock.now_ms(), reason or None)
        self._spawn(client, p.topic_for(device_id, p.Channel.ack), payload, retain=False)
        m.ACKS.labels(state.value).inc()
        self.stats.acks += 1

    def config(self, device_id: str, heartbeat_s: int) -> None:
        """The device's settings, retained, so a device that reconnects has them at once."""
        client = self.client
        if client is None:
            return
        self._spawn(
            client, p.topic_for(device_id, p.Channel.config), p.config_payload(heartbeat_s), retain=True
        )

    def _spawn(self, client: aiomqtt.Client, topic: str, payload: bytes, *, retain: bool) -> None:
        """Hand the message to the connection (paho) without waiting for its PUBACK.

        Nothing waits for it (see the module docstring), and aiomqtt's ``publish`` costs a
        task per message and a scan of every publish still awaiting its PUBACK: quadratic
        in a storm's acks (12 % of the one-process target's samples in a storm, issue 15).
        paho queues it, sends it on the event loop's socket callbacks, and resends it
        within the session; the device resends its event if the ack is lost."""
        info = client._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            log.debug("gateway.publish_failed", topic=topic, rc=info.rc)
