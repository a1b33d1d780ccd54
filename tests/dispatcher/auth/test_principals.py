"""Scopes: the station subtree a login may see."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.auth.models import Role, User
from dispatcher.auth.principals import Principal, in_scope, load_principal
from dispatcher.auth.users import create_user
from tests.conftest import add_small_registry

Maker = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


@pytest.mark.usefixtures("cheap_hashing")
async def test_scope_is_the_station_subtree(maker: Maker) -> None:
    await add_small_registry(maker, {})
    async with maker() as s, s.begin():
        ids = {}
        for name, role, station in (
            ("adm", Role.admin, None),
            ("cty", Role.supervisor, "county"),
            ("str", Role.supervisor, "st1"),
            ("com", Role.operator, "cm1"),
        ):
            user = await create_user(
                s,
                username=name,
                password="password-1",
                role=role,
                station_id=station,
                display_name=name,
                now=NOW,
            )
            ids[name] = user.id
        scopes = {name: (await load_principal(s, user_id=uid)) for name, uid in ids.items()}
        assert all(isinstance(p, Principal) for p in scopes.values())
        assert {n: p.scope if p else "missing" for n, p in scopes.items()} == {
            "adm": None,
            "cty": None,
            "str": frozenset({"st1", "cm1"}),
            "com": frozenset({"cm1"}),
        }
        com = scopes["com"]
        assert com is not None and in_scope(com, "cm1") and not in_scope(com, "st1")
        assert not in_scope(com, None)
        (await s.get(User, ids["com"])).active = False  # type: ignore[union-attr]
        await s.flush()
        assert await load_principal(s, user_id=ids["com"]) is None
        assert await load_principal(s, user_id=9999) is None
