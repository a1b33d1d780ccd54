"""Small JSON files the shell keeps beside a run, written privately and atomically.

The demo's device secrets (``carecall-demo-secrets.json``: device id → secret), the
fleet's (``carecall-fleet-PREFIX-secrets.json``, written by ``fleet_registry``) and the
registry heartbeats a demo history run saved (``demo_history``) are live credentials or
state a killed run must find intact: mode 0600, replaced in one rename, never half written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_private_json(path: Path, data: Any, *, indent: int) -> None:
    """``data`` as JSON (keys sorted) at ``path``, mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=indent, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_secrets(path: Path) -> dict[str, str]:
    """A ``{str: str}`` map; empty when the file is absent, unreadable or not a map."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_secrets(path: Path, secrets_: dict[str, str]) -> None:
    write_private_json(path, secrets_, indent=1)
