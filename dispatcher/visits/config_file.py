"""Reading ``config/visits.yaml`` (the model: ``dispatcher.visits.rules.VisitRules``)."""

from __future__ import annotations

from pathlib import Path

from config.settings import CONFIG_DIR
from config.yamlfile import load_yaml_model
from dispatcher.visits.rules import VisitRules

DEFAULT_VISITS_FILE = CONFIG_DIR / "visits.yaml"


class VisitsConfigError(ValueError):
    """The visits file is missing, not YAML, or breaks a rule; the message names the key."""


def load_visit_rules(path: Path = DEFAULT_VISITS_FILE) -> VisitRules:
    return load_yaml_model(path, VisitRules, VisitsConfigError)
