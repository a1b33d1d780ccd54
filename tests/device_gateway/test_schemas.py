"""The published JSON Schemas: never drifting from the models, and meaning the same thing.

The contract examples are checked against the committed files with jsonschema-rs (draft
2020-12), the validator schemathesis already brings, rather than a home-made one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from device_gateway.protocol import (
    AckMessage,
    ConfigMessage,
    EventMessage,
    Rejection,
    StatusMessage,
    TelemetryMessage,
    parse_event,
    parse_status,
    parse_telemetry,
)
from device_gateway.schemas import DIALECT, MODELS, SCHEMA_DIR, json_schemas, render, write_schemas

EXAMPLES: dict[str, list[bytes]] = {
    "event": [
        b"""{"id": "b1-000412", "ts": 1764120600123, "type": "sos", "sensor": "bedside-button",
 "data": {"location": {"lat": 32.689, "lon": 112.838, "accuracy_m": 15}}}""",
        b'{"id":"w7:1","ts":"2025-11-26T09:30:00+08:00","type":"cancel","data":{"ref":"w7:0"}}',
        b'{"id":"r2.9","ts":1764120600123,"type":"bed_exit","data":{"returned":false}}',
        b'{"id":"s1","ts":1764120600123,"type":"service_request","data":{"kind":"meal"}}',
        b'{"id":"s2","ts":1764120600123,"type":"sos","data":{"kind":"anything"}}',
    ],
    "telemetry": [
        b"""{"ts": 1764120600123, "metrics": {"hr": 68, "rr": 15, "presence": "in_bed",
 "motion": 3, "battery_pct": 81, "rssi_dbm": -70}}""",
        b'{"metrics":{}}',
    ],
    "status": [b'{"state":"online"}', b'{"state":"offline"}'],
    "ack": [
        b'{"event_id": "b1-000412", "state": "received", "ts": 1764120600180}',
        b'{"event_id":"b1-000413","state":"rejected","ts":1764120600180,"reason":"wrong_type"}',
    ],
    "config": [b'{"heartbeat_s": 60}', b"{}"],
}

# Rejected by both the model and the schema (the schema cannot see everything the model
# checks, e.g. calendar dates or NUL, so only structural cases are listed).
COUNTER_EXAMPLES: dict[str, list[bytes]] = {
    "event": [
        b'{"ts":1764120600123,"type":"sos"}',
        b'{"id":"a b","ts":1764120600123,"type":"sos"}',
        b'{"id":"a","ts":true,"type":"sos"}',
        b'{"id":"a","ts":1764120600,"type":"sos"}',
        b'{"id":"a","ts":"2025-11-26T09:30:00","type":"sos"}',
        b'{"id":"a","ts":1764120600123,"type":""}',
        b'{"id":"a","ts":1764120600123,"type":"sos","data":[]}',
        b'{"id":"a","ts":1764120600123,"type":"sos","data":{"location":{"lat":91,"lon":0}}}',
        b'{"id":"a","ts":1764120600123,"type":"sos","data":{"location":{"lat":"1","lon":0}}}',
        b'{"id":"a","ts":1764120600123,"type":"service_request"}',
        b'{"id":"a","ts":1764120600123,"type":"service_request","data":{"kind":"taxi"}}',
    ],
    "telemetry": [
        b'{"ts":1764120600123}',
        b'{"metrics":{"hr":null}}',
        b'{"metrics":{"presence":"' + b"x" * 65 + b'"}}',
    ],
    "status": [b'{"state":"asleep"}', b"{}"],
    "ack": [b'{"event_id":"a","state":"done","ts":1}', b'{"state":"received","ts":1}'],
    "config": [b'{"heartbeat_s":0}', b'{"heartbeat_s":"60"}'],
}

PARSE = {"event": parse_event, "telemetry": parse_telemetry, "status": parse_status}


# --------------------------------------------------------------------------- validator


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Errors of ``instance`` against ``schema`` (JSON Schema draft 2020-12, jsonschema-rs)."""
    validator = jsonschema_rs.Draft202012Validator(schema)
    return [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(instance)]


# --------------------------------------------------------------------------- tests


def test_committed_schemas_match_the_models() -> None:
    """If this fails, run: python -m device_gateway.schemas"""
    for name, schema in json_schemas().items():
        path = SCHEMA_DIR / f"{name}.schema.json"
        assert path.read_text(encoding="utf-8") == render(schema), f"{path} is stale"
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(
        f"{n}.schema.json" for n in MODELS
    )


def test_write_schemas(tmp_path: Path) -> None:
    written = write_schemas(tmp_path / "out")
    assert [p.name for p in written] == [f"{n}.schema.json" for n in MODELS]
    for p in written:
        text = p.read_text(encoding="utf-8")
        assert text.endswith("}\n") and not text.endswith("\n\n")
        doc = json.loads(text)
        assert doc["$schema"] == DIALECT
        assert list(doc) == sorted(doc)
        assert doc["title"] and doc["description"]


def test_every_property_is_described() -> None:
    for name, schema in json_schemas().items():
        for prop, sub in schema["properties"].items():
            assert sub.get("description"), f"{name}.{prop} has no description"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_examples_validate_against_committed_schema_and_model(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    for raw in EXAMPLES[name]:
        assert schema_errors(json.loads(raw), schema) == [], raw
        if name in PARSE:
            assert not isinstance(PARSE[name](raw), Rejection), raw
        else:
            MODELS[name].model_validate_json(raw)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_counter_examples_fail_schema_and_model(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    for raw in COUNTER_EXAMPLES[name]:
        assert schema_errors(json.loads(raw), schema), raw
        if name in PARSE:
            assert isinstance(PARSE[name](raw), Rejection), raw
        else:
            with pytest.raises(ValueError):
                MODELS[name].model_validate_json(raw)


def test_models_are_the_protocol_models() -> None:
    assert MODELS == {
        "event": EventMessage,
        "telemetry": TelemetryMessage,
        "status": StatusMessage,
        "ack": AckMessage,
        "config": ConfigMessage,
    }
