"""Loading a YAML policy file into a pydantic model, with errors that name the key.

Unknown keys are errors everywhere: a misspelt key silently ignored would leave a rule,
a limit or a target at a value nobody chose.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def validation_problems(exc: ValidationError) -> str:
    """'unknown key 'a.b''; ''c.d': must be …' — one clause per problem."""
    problems = []
    for err in exc.errors(include_url=False):
        key = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        if err.get("type") == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        else:
            problems.append(f"{key!r}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(problems)


def load_yaml_model(path: Path, model: type[M], error: type[Exception]) -> M:
    """Read ``path`` into ``model``; an empty file gives the model's defaults. Any problem
    raises ``error`` with one message naming the file and what is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{path}: must hold a mapping, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{path}: {validation_problems(exc)}") from exc
