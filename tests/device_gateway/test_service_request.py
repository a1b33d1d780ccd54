"""A device's service button: the gateway stores and acks a service_request like any
event, with its own class (never an emergency), and refuses one without a valid kind."""

from __future__ import annotations

import json
import time
from typing import Any

from device_gateway.protocol import EventClass, Reason, Rejection, classify, parse_event
from tests.device_gateway.test_service import ROOT, device, events, running

__all__ = ["running"]  # the gateway fixture, shared with test_service


def test_service_request_classifies_as_service_not_emergency() -> None:
    assert classify("service_request", {"kind": "meal"}, 3) is EventClass.service


def test_service_request_needs_a_known_kind() -> None:
    base = {"id": "s1", "ts": 1764120600123, "type": "service_request"}
    assert not isinstance(parse_event(json.dumps({**base, "data": {"kind": "bathing"}}).encode()), Rejection)
    for data in ({}, {"kind": "taxi"}, {"kind": 3}):
        result = parse_event(json.dumps({**base, "data": data}).encode())
        assert isinstance(result, Rejection) and result.reason is Reason.bad_value, data
    # other types keep data.kind free
    assert not isinstance(
        parse_event(json.dumps({**base, "type": "sos", "data": {"kind": "x"}}).encode()), Rejection
    )


async def test_gateway_acks_and_stores_a_service_request(running: dict[str, Any]) -> None:
    maker = running["maker"]
    async with device(running["port"], "hub") as c:
        await c.subscribe(f"{ROOT}/hub/ack", qos=1)
        now = int(time.time() * 1000)
        for eid, kind in (("svc-1", "meal"), ("svc-2", "taxi")):
            body = {"id": eid, "ts": now, "type": "service_request", "data": {"kind": kind}}
            await c.publish(f"{ROOT}/hub/events", json.dumps(body), qos=1)
        got: dict[str, str] = {}
        async for m in c.messages:
            ack = json.loads(m.payload)  # type: ignore[arg-type]
            got[ack.get("event_id", "?")] = ack["state"]
            if len(got) == 2:
                break
    assert got["svc-1"] == "received"
    assert "received" not in [v for k, v in got.items() if k != "svc-1"]
    [stored] = await events(maker, device_id="hub")
    assert (stored.event_id, stored.type, stored.event_class) == ("svc-1", "service_request", "service")
    assert stored.data == {"kind": "meal"}
