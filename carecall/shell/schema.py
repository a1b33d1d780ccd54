"""Every domain's tables, registered on the one metadata: the shell knows all rooms.

The foundation's Alembic environment imports no domain; an autogenerate (or a test that
compares the models with the migrations) registers the tables through this list.
"""

from __future__ import annotations

import importlib

from alembic.config import Config

from carecall.core.migrate import alembic_config

MODEL_MODULES: tuple[str, ...] = (
    "device_gateway.models",
    "dispatcher.registry.models",
    "dispatcher.calls.models",
    "dispatcher.incidents.models",
    "dispatcher.audit.models",
    "dispatcher.auth.models",
    "dispatcher.notifications.models",
    "dispatcher.health.models",
    "dispatcher.paging.models",
    "dispatcher.visits.models",
    "dispatcher.orders.models",
)


def import_all_models() -> None:
    """Register every table on ``carecall.core.db.Base.metadata``."""
    for name in MODEL_MODULES:
        importlib.import_module(name)


def alembic_config_with_models(database_url: str) -> Config:
    """An Alembic config whose environment registers every table (for autogenerate)."""
    import_all_models()
    cfg = alembic_config(database_url)
    cfg.attributes["model_modules"] = MODEL_MODULES
    return cfg
