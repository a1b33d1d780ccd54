"""The migrations and the models describe the same schema, on the backend chosen with --db.

Alembic's autogenerate compares the upgraded database with every domain's tables
(registered through carecall.shell.schema); any difference — a column a model has and no
migration adds, a type, an index — is a migration someone forgot.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from carecall.core.db import Base, is_sqlite, make_engine
from carecall.shell.schema import MODEL_MODULES, import_all_models


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "render_as_batch": is_sqlite(str(connection.engine.url))}
    )
    return list(compare_metadata(context, Base.metadata))


async def test_every_model_module_is_listed_and_the_migrations_build_exactly_the_models(db_url: str) -> None:
    import_all_models()
    assert len(MODEL_MODULES) == len(set(MODEL_MODULES))
    assert len(Base.metadata.tables) >= 25  # the comparison below would pass on an empty list
    engine = make_engine(db_url)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(_diff)
    finally:
        await engine.dispose()
    ignored = {"alembic_version"}
    real = [d for d in diff if not (d[0] == "remove_table" and d[1].name in ignored)]
    assert real == []
