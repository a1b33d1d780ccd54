"""JSON Schemas of the v1 payloads, generated from the models in ``protocol``.

Device makers validate against docs/schemas/*.schema.json; generating them from the same
models the gateway parses with means the published contract cannot drift from what the
platform accepts (a test compares the committed files with a fresh run).

Regenerate with ``python -m device_gateway.schemas [out_dir]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from device_gateway.protocol import (
    AckMessage,
    ConfigMessage,
    EventMessage,
    StatusMessage,
    TelemetryMessage,
)

__all__ = ["DIALECT", "MODELS", "SCHEMA_DIR", "json_schemas", "render", "write_schemas"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"

# File stem → model. The stems are part of the published docs; keep them stable.
MODELS: dict[str, type[BaseModel]] = {
    "event": EventMessage,
    "telemetry": TelemetryMessage,
    "status": StatusMessage,
    "ack": AckMessage,
    "config": ConfigMessage,
}

_TOPIC_SUFFIX = {
    "event": "events",
    "telemetry": "telemetry",
    "status": "status",
    "ack": "ack",
    "config": "config",
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """Schema per payload kind, keyed like the file stems.

    ``$schema`` is stated because pydantic emits draft 2020-12 keywords ($defs) that
    older validators would silently ignore; ``$comment`` names the topic because a
    schema file is often read far away from docs/protocol.md.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, model in MODELS.items():
        schema = model.model_json_schema(mode="validation")
        out[name] = {
            "$schema": DIALECT,
            "$comment": f"Payload of carecall/v1/devices/{{device_id}}/{_TOPIC_SUFFIX[name]}",
            **schema,
        }
    return out


def render(schema: dict[str, Any]) -> str:
    """Stable text (sorted keys, fixed indent, final newline) so diffs show real changes."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    """Write ``{name}.schema.json`` for every payload; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, schema in json_schemas().items():
        path = out_dir / f"{name}.schema.json"
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
