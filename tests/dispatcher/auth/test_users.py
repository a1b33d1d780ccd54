"""Creating logins and the first admin."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.auth.models import Role, User
from dispatcher.auth.passwords import verify_password
from dispatcher.auth.users import create_user, ensure_admin
from tests.conftest import add_small_registry

Maker = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


@pytest.mark.usefixtures("cheap_hashing")
async def test_ensure_admin_creates_once(maker: Maker) -> None:
    password = await ensure_admin(maker, password=None, now=NOW)
    assert password is not None and len(password) >= 12
    assert await ensure_admin(maker, password="another-password", now=NOW) is None
    async with maker() as s:
        users = (await s.scalars(select(User))).all()
    assert [(u.username, u.role, u.station_id) for u in users] == [("admin", "admin", None)]
    assert verify_password(users[0].password_hash, password)[0]


@pytest.mark.usefixtures("cheap_hashing")
async def test_ensure_admin_uses_given_password(maker: Maker) -> None:
    assert await ensure_admin(maker, password="from-the-env-1", now=NOW) == "from-the-env-1"
    with pytest.raises(ValueError, match="at least 8"):
        await ensure_admin(maker, password="short", now=NOW)


@pytest.mark.usefixtures("cheap_hashing")
async def test_create_user_checks_input(maker: Maker) -> None:
    await add_small_registry(maker, {})
    async with maker() as s, s.begin():
        with pytest.raises(ValueError, match="needs station_id"):
            await create_user(
                s,
                username="op",
                password="password-1",
                role="operator",
                station_id=None,
                display_name="",
                now=NOW,
            )
        with pytest.raises(ValueError, match="unknown station"):
            await create_user(
                s,
                username="op",
                password="password-1",
                role="operator",
                station_id="nope",
                display_name="",
                now=NOW,
            )
        with pytest.raises(ValueError, match="unknown role"):
            await create_user(
                s,
                username="op",
                password="password-1",
                role="root",
                station_id="cm1",
                display_name="",
                now=NOW,
            )
        await create_user(
            s,
            username="王芳",
            password="password-1",
            role=Role.operator,
            station_id="cm1",
            display_name="王芳",
            now=NOW,
        )
        with pytest.raises(ValueError, match="taken"):
            await create_user(
                s,
                username="王芳",
                password="password-1",
                role=Role.operator,
                station_id="cm1",
                display_name="",
                now=NOW,
            )
        assert await s.scalar(select(func.count()).select_from(User)) == 1
