"""Constants and helpers shared by the registry tests (conftest modules should not be imported)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.registry.service import registry_counts

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

Maker = async_sessionmaker[AsyncSession]


def write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_text(text, encoding="utf-8-sig" if bom else "utf-8")
    return path


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def read_xlsx(path: Path) -> list[tuple[Any, ...]]:
    wb = load_workbook(path, read_only=True)
    try:
        return list(wb.worksheets[0].iter_rows(values_only=True))
    finally:
        wb.close()


async def counts(maker: Maker) -> dict[str, int]:
    async with maker() as session:
        return await registry_counts(session)
