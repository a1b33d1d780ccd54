"""Console logins over HTTP (admins only): ``/api/v1/users``.

Every user but an admin needs a station (it defines their scope); the last active admin
can be neither disabled, demoted nor deleted, so the county is never locked out.
"""

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Response
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.auth.models import Role
from dispatcher.auth.passwords import hash_password
from dispatcher.auth.users import DuplicateUsername, UserOut, create_user, revoke_all_tokens
from dispatcher.registry import records
from dispatcher.registry.crud import (
    ADMIN,
    Limit,
    Maker,
    Offset,
    StationFilter,
    conflict,
    invalid,
    not_found,
    transaction,
)
from dispatcher.registry.payloads import Page, UserCreate, UserPatch
from dispatcher.registry.records import Kind

LAST_ADMIN = "this is the last active admin; make another admin first"


async def _check_refs(s: AsyncSession, role: Role, station_id: str | None, staff_id: str | None) -> None:
    if station_id is None and role is not Role.admin:
        raise invalid("station_id", f"a {role.value} needs station_id (it defines their scope)")
    if station_id is not None:
        await records.require(s, kind=Kind.stations, ident=station_id, field="station_id", what="station")
    if staff_id is not None:
        await records.require(s, kind=Kind.staff, ident=staff_id, field="staff_id", what="staff member")


async def _patch_user(maker: Maker, user_id: int, patch: UserPatch) -> UserOut:
    changes = patch.model_dump(exclude_unset=True)
    for name in ("password", "role", "active", "locale", "display_name"):
        if name in changes and changes[name] is None:
            raise invalid(name, f"{name} cannot be null")
    async with transaction(maker) as s:
        user = await records.get_user(s, user_id=user_id)
        if user is None:
            raise not_found("user", user_id)
        role = Role(changes.get("role", user.role))
        await _check_refs(
            s, role, changes.get("station_id", user.station_id), changes.get("staff_id", user.staff_id)
        )
        was_admin = user.role == Role.admin.value and user.active
        if was_admin and (role is not Role.admin or not changes.get("active", user.active)):
            if not await records.other_active_admins(s, user_id=user.id):
                raise conflict(LAST_ADMIN)
        if "password" in changes:
            user.password_hash = await asyncio.to_thread(hash_password, changes.pop("password"))
            await revoke_all_tokens(s, user_id=user.id)  # a new password ends every older token
        changes["role"] = role.value
        await records.update_record(s, record=user, values=changes)
        return UserOut.model_validate(user)


def users_router(maker: Maker) -> APIRouter:
    users = APIRouter(prefix="/users", tags=["users"], dependencies=[Depends(ADMIN)])

    @users.get("", response_model=Page[UserOut])
    async def list_users(
        limit: Limit = 100, offset: Offset = 0, station_id: StationFilter = None
    ) -> Page[UserOut]:
        async with maker() as s:
            rows, total = await records.list_users(s, station_id=station_id, limit=limit, offset=offset)
            return Page[UserOut](
                items=[UserOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
            )

    @users.get("/{user_id}", response_model=UserOut)
    async def get_user(user_id: int) -> UserOut:
        async with maker() as s:
            user = await records.get_user(s, user_id=user_id)
        if user is None:
            raise not_found("user", user_id)
        return UserOut.model_validate(user)

    @users.post("", response_model=UserOut, status_code=201)
    async def add_user(body: UserCreate) -> UserOut:
        async with transaction(maker) as s:
            await _check_refs(s, body.role, body.station_id, body.staff_id)
            try:
                user = await create_user(
                    s,
                    username=body.username,
                    password=body.password,
                    role=body.role,
                    station_id=body.station_id,
                    display_name=body.display_name,
                    staff_id=body.staff_id,
                    now=datetime.now(UTC),
                )
            except DuplicateUsername as exc:
                raise conflict(str(exc)) from None
            except ValueError as exc:
                raise invalid(None, str(exc)) from None
            if body.locale is not None:
                await records.update_record(s, record=user, values={"locale": body.locale})
            return UserOut.model_validate(user)

    @users.patch("/{user_id}", response_model=UserOut)
    async def patch_user(user_id: int, patch: UserPatch) -> UserOut:
        return await _patch_user(maker, user_id, patch)

    @users.delete("/{user_id}", status_code=204)
    async def delete_user(user_id: int) -> Response:
        """Deleting a login never touches the audit log (it names actors as text)."""
        async with transaction(maker) as s:
            user = await records.get_user(s, user_id=user_id)
            if user is None:
                raise not_found("user", user_id)
            if (
                user.role == Role.admin.value
                and user.active
                and not await records.other_active_admins(s, user_id=user.id)
            ):
                raise conflict(LAST_ADMIN)
            await records.delete_user(s, user=user)
        return Response(status_code=204)

    return users
