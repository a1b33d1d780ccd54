"""Constants shared by the registry tests (conftest modules should not be imported)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

Maker = async_sessionmaker[AsyncSession]
