"""Reading the oversight targets file (config/oversight.yaml) into :class:`Targets`."""

from __future__ import annotations

from pathlib import Path

from config.settings import CONFIG_DIR
from config.yamlfile import load_yaml_model
from dispatcher.oversight.targets import Targets, TargetsError

__all__ = ["DEFAULT_TARGETS_FILE", "load_targets"]

DEFAULT_TARGETS_FILE = CONFIG_DIR / "oversight.yaml"


def load_targets(path: Path | None = None) -> Targets:
    """Read and validate the targets file (default: the shipped config/oversight.yaml);
    TargetsError names the file and the bad key."""
    path = path or DEFAULT_TARGETS_FILE
    return load_yaml_model(path, Targets, TargetsError)
