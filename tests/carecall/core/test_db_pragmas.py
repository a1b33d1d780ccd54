"""SQLite durability: an acked event must survive a power cut (issue 15), so every
connection of the app's engine runs ``synchronous=FULL`` (2), in WAL mode."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from carecall.shell.runtime import open_core
from config.settings import load_settings

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


async def test_app_engine_runs_sqlite_with_full_sync(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'durable.db'}")
    core = await open_core(settings, migrate=False)
    try:
        # two connections at once: the pragma is set on every new connection, not once
        async with core.engine.connect() as a, core.engine.connect() as b:
            for conn in (a, b):
                assert (await conn.execute(text("PRAGMA synchronous"))).scalar_one() == FULL
                assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
                assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
    finally:
        await core.close()
