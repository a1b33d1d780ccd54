"""Platform → device acks (docs/protocol.md "Ack"): the states, the rejection reasons and
the one encoder.

Every sender of an ack (the gateway, the dispatcher's outbox, test doubles of the
platform) builds its payload with :func:`ack_payload`, so a device library sees one
byte-for-byte shape whoever answered it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class AckState(StrEnum):
    received = "received"
    assigned = "assigned"
    en_route = "en_route"
    on_scene = "on_scene"
    resolved = "resolved"
    rejected = "rejected"


class Reason(StrEnum):
    """Why a message was rejected; counted per device and reason, and sent in the ack."""

    too_large = "too_large"
    not_utf8 = "not_utf8"
    not_json = "not_json"
    too_deep = "too_deep"
    not_object = "not_object"
    missing_field = "missing_field"
    wrong_type = "wrong_type"
    bad_value = "bad_value"
    bad_topic = "bad_topic"
    unknown_device = "unknown_device"
    disabled_device = "disabled_device"


class AckMessage(BaseModel):
    """Progress of one event, platform → device on carecall/v1/devices/{id}/ack.

    The device stops resending on "received" and turns later states into a light or a
    spoken line for the resident.
    """

    model_config = ConfigDict(extra="allow", frozen=True, title="CareCall v1 ack")
    # Strict like the published schema: a device library is entitled to expect exactly it.
    event_id: StrictStr = Field(
        description=("The id of the event this is about; empty when a rejected message had no readable id.")
    )
    state: AckState = Field(description="received, assigned, en_route, on_scene, resolved, rejected")
    ts: StrictInt = Field(description="When the platform sent this, epoch milliseconds.")
    reason: StrictStr | None = Field(
        default=None,
        description=(
            "With state rejected: starts with the reason code (see examples), optionally "
            "followed by ': ' and a human-readable detail."
        ),
        examples=[r.value for r in Reason],
    )


def ack_payload(event_id: str, state: AckState, ts_ms: int, reason: str | None = None) -> bytes:
    body: dict[str, Any] = {"event_id": event_id, "state": state.value, "ts": ts_ms}
    if reason is not None:
        body["reason"] = reason
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
