"""The dispatch files, read and validated: config/dispatch.yaml (routing, priority,
calls, mass offline) and config/escalation.yaml (the escalation policies). Unknown keys
are errors, and every error names the file and the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.yamlfile import load_yaml_model
from dispatcher.calls.dispatch_config import DispatchConfig, DispatchConfigError
from dispatcher.calls.escalation import EscalationConfigError, PolicySet

__all__ = ["DispatchConfig", "DispatchConfigError", "load_dispatch_config", "load_policies"]


def load_dispatch_config(path: Path) -> DispatchConfig:
    """Read and validate the dispatch file, or raise DispatchConfigError naming the key.

    Unknown keys are errors: a misspelt ``urban_limt_min`` silently ignored would leave
    the service circle at a value nobody chose.
    """
    return load_yaml_model(path, DispatchConfig, DispatchConfigError)


def _where(data: Any, loc: tuple[int | str, ...]) -> str:
    """Error location with policy names, not bare indexes: ``policies[trouble].steps[2].afte``."""
    parts: list[str] = []
    node: Any = data
    for part in loc:
        if isinstance(part, int) and parts:
            label = str(part)
            if isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
                if parts[-1] == "policies" and isinstance(node, dict) and "name" in node:
                    label = str(node["name"])
            else:
                node = None
            parts[-1] += f"[{label}]"
        else:
            node = node.get(part) if isinstance(node, dict) else None
            parts.append(str(part))
    return ".".join(parts) or "(top level)"


def load_policies(path: Path) -> PolicySet:
    """Read and validate the policies, or raise EscalationConfigError naming the bad key.

    Unknown keys are errors: a misspelt ``repeat_evry_s`` silently ignored would mean a
    reminder that never repeats, found out on a night nobody answers.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EscalationConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise EscalationConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise EscalationConfigError(f"{path}: must hold a mapping with key 'policies'")
    # Top-level "x-" keys hold YAML anchors shared between policies (the compose-file
    # convention); they are not settings, so they are not "unknown keys" either.
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    try:
        return PolicySet.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            key = _where(data, tuple(err.get("loc", ())))
            if err.get("type") == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            else:
                msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
                problems.append(f"{key!r}: {msg}")
        raise EscalationConfigError(f"{path}: " + "; ".join(problems)) from exc
