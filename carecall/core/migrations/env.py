"""Alembic environment: runs migrations through the async engine CareCall uses."""

from __future__ import annotations

import asyncio
import importlib

from alembic import context
from sqlalchemy.engine import Connection

from carecall.core.db import Base, is_sqlite, make_engine

config = context.config
# The foundation imports no domain. Upgrades need no models (each revision says what it does);
# an autogenerate does: whoever runs one passes the model modules to register the tables,
# as ``carecall.shell.schema.alembic_config_with_models`` does.
for _module in config.attributes.get("model_modules", ()):
    importlib.import_module(_module)
target_metadata = Base.metadata


def _do_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=is_sqlite(str(connection.engine.url)),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = make_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_do_run)
        await connection.commit()
    await engine.dispose()


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by carecall.core.migrate"
    existing = config.attributes.get("connection")
    if existing is not None:
        _do_run(existing)
        return
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run()
