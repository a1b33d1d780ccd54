"""`carecall audit verify` catches an edited, a deleted and a reordered audit row, naming it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from carecall.shell.cli import app
from dispatcher.audit import service as audit

# SQLite only: the tampering below edits the database file behind the CLI's back with sqlite3.
pytestmark = pytest.mark.sqlite_only

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


@pytest.fixture
async def chain(
    maker: async_sessionmaker[AsyncSession], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    async with maker() as s, s.begin():
        for i in range(6):
            await audit.append(
                s,
                kind="note",
                at=T0 + timedelta(seconds=i),
                actor="user:op",
                call_id=1,
                station_id="cm1",
                detail={"text": f"row {i + 1}"},
            )
    monkeypatch.setenv("CARECALL_DATABASE_URL", sqlite_url)
    return Path(sqlite_url.removeprefix("sqlite:///"))


def verify() -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", "verify"])
    return result.exit_code, result.output


def test_intact_chain_verifies(chain: Path) -> None:
    code, out = verify()
    assert code == 0 and "6 rows verified" in out


def test_edited_row_is_named(chain: Path) -> None:
    with sqlite3.connect(chain) as db:
        db.execute("""UPDATE audit_log SET detail = '{"text": "row three, rewritten"}' WHERE seq = 3""")
    code, out = verify()
    assert code == 1 and "seq 3" in out


def test_edited_actor_is_named(chain: Path) -> None:
    with sqlite3.connect(chain) as db:
        db.execute("UPDATE audit_log SET actor = 'user:someone-else' WHERE seq = 5")
    code, out = verify()
    assert code == 1 and "seq 5" in out


def test_deleted_row_is_named(chain: Path) -> None:
    with sqlite3.connect(chain) as db:
        db.execute("DELETE FROM audit_log WHERE seq = 4")
    code, out = verify()
    assert code == 1 and ("seq 4" in out or "seq 5" in out)


def test_deleted_last_row_is_caught_by_the_head(chain: Path) -> None:
    with sqlite3.connect(chain) as db:
        db.execute("DELETE FROM audit_log WHERE seq = 6")
    code, out = verify()
    assert code == 1 and "BROKEN" in out


def test_reordered_rows_are_named(chain: Path) -> None:
    with sqlite3.connect(chain) as db:
        db.execute("UPDATE audit_log SET seq = -2 WHERE seq = 2")
        db.execute("UPDATE audit_log SET seq = 2 WHERE seq = 3")
        db.execute("UPDATE audit_log SET seq = 3 WHERE seq = -2")
    code, out = verify()
    assert code == 1 and "seq 2" in out
