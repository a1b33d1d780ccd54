"""Console logins: creating them, the first admin, and the per-login security row
(``login_state``: token version, failed sign-ins, lock).

A token carries the user's ``token_version``: a password change or an admin's "revoke
all" bumps it, which ends every older token of that user at once; signing out stores the
token's ``jti`` in ``revoked_tokens`` until it would have expired anyway. Both are read
where every request is authenticated (``dispatcher.auth.principals.authenticate``).
"""

import asyncio
import re
import secrets
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit import service as audit
from dispatcher.auth.models import LoginState, RevokedToken, Role, User
from dispatcher.auth.passwords import check_password, hash_password, verify_password
from dispatcher.auth.registry_tables import staff_exists, staff_station, station_tier

ADMIN_USERNAME = "admin"
# Letters (any script, so 王芳 is a valid login), digits and . _ @ -
USERNAME_RE = re.compile(r"^[\w.@-]{1,64}$")


class DuplicateUsername(ValueError):
    """The username is taken (usernames are unique)."""


class NoSuchUser(LookupError):
    """The account is gone (deleted while a token of it was still in use)."""


class WrongPassword(ValueError):
    """The current password given for a password change is wrong."""


class UserOut(BaseModel):
    """A login as the API shows it (never the password hash)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str
    role: Role
    station_id: str | None
    staff_id: str | None
    active: bool
    locale: str
    created_at: datetime


async def create_user(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    role: Role | str,
    station_id: str | None,
    display_name: str,
    staff_id: str | None = None,
    now: datetime,
) -> User:
    """Add a login inside the caller's transaction (flushed, not committed).

    Operators and supervisors need a station: it is what their scope is computed from,
    and without one they would see nothing. Raises ValueError (DuplicateUsername for a
    taken name) with a message fit to show the admin.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    if not USERNAME_RE.match(username):
        raise ValueError("username must be 1-64 letters, digits, '.', '_', '@' or '-'")
    check_password(password)
    try:
        parsed_role = Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {role!r}; use one of {allowed}") from None
    if parsed_role is Role.responder:
        # a responder is a person on the roster: their pages, calls and station follow it
        own = await staff_station(session, staff_id=staff_id) if staff_id else None
        if own is None:
            raise ValueError("a responder needs staff_id (their staff record)")
        station_id = station_id or own
        if station_id != own:
            raise ValueError("a responder's station is their staff record's station")
    if station_id is None and parsed_role is not Role.admin:
        raise ValueError(f"a {parsed_role.value} needs station_id")
    if station_id is not None and await station_tier(session, station_id=station_id) is None:
        raise ValueError(f"unknown station {station_id!r}")
    if staff_id is not None and not await staff_exists(session, staff_id=staff_id):
        raise ValueError(f"unknown staff member {staff_id!r}")
    if await user_named(session, username=username) is not None:
        raise DuplicateUsername(f"username {username!r} is taken")
    user = User(
        username=username,
        password_hash=await asyncio.to_thread(hash_password, password),
        display_name=display_name,
        role=parsed_role.value,
        station_id=station_id,
        staff_id=staff_id,
        active=True,
        created_at=now,
    )
    session.add(user)
    await session.flush()
    session.add(LoginState(user_id=user.id, token_version=0, failed_logins=0))
    await session.flush()
    return user


async def ensure_admin(
    maker: async_sessionmaker[AsyncSession], *, password: str | None, now: datetime
) -> str | None:
    """Create the first login (``admin``) when there are no users at all.

    Returns the password used (the given ``CARECALL_ADMIN_PASSWORD`` value, or a
    generated one the caller must print once, since it is stored only hashed), or None
    when users already exist. Two copies starting together race on the unique username;
    the loser gets None.
    """
    if password is not None:
        check_password(password)
    chosen = password or secrets.token_urlsafe(12)
    try:
        async with maker() as session, session.begin():
            if await session.scalar(select(func.count()).select_from(User)):
                return None
            await create_user(
                session,
                username=ADMIN_USERNAME,
                password=chosen,
                role=Role.admin,
                station_id=None,
                display_name="Administrator",
                now=now,
            )
    except (IntegrityError, DuplicateUsername):
        return None
    return chosen


async def get_user(session: AsyncSession, *, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def user_named(session: AsyncSession, *, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))


async def login_state(session: AsyncSession, *, user_id: int) -> LoginState:
    """The user's row, locked for update (made on first need for users created before
    migration 0006)."""
    state = await session.get(LoginState, user_id, with_for_update=True)
    if state is None:
        state = LoginState(user_id=user_id, token_version=0, failed_logins=0)
        session.add(state)
        await session.flush()
    return state


async def token_version(session: AsyncSession, *, user_id: int) -> int:
    return int(
        await session.scalar(select(LoginState.token_version).where(LoginState.user_id == user_id)) or 0
    )


async def revoke_all_tokens(session: AsyncSession, *, user_id: int) -> int:
    """End every token the user holds (bump the token version); returns the new version.
    Call inside the transaction that changes the password, so both happen or neither."""
    await login_state(session, user_id=user_id)
    await session.execute(
        update(LoginState)
        .where(LoginState.user_id == user_id)
        .values(token_version=LoginState.token_version + 1)
    )
    return await token_version(session, user_id=user_id)


async def revoke_tokens_of(session: AsyncSession, *, user: User, actor: str, now: datetime) -> None:
    """An admin ends every token of ``user`` (a lost phone, a leaked password): the
    version bump and its ``tokens_revoked`` audit row, in the caller's transaction."""
    await revoke_all_tokens(session, user_id=user.id)
    await audit.append(
        session, kind="tokens_revoked", at=now, actor=actor, detail={"username": user.username}
    )


async def revoke_user_tokens(
    maker: async_sessionmaker[AsyncSession], *, username: str, actor: str, now: datetime
) -> None:
    """``carecall users revoke NAME``: end every token of a user, with an audit row."""
    async with maker() as session, session.begin():
        user = await user_named(session, username=username)
        if user is None:
            raise ValueError(f"no user {username!r}")
        await revoke_tokens_of(session, user=user, actor=actor, now=now)


async def sign_out(
    session: AsyncSession, *, jti: str, user_id: int, session_expires_at: datetime, now: datetime
) -> None:
    """Revoke one sign-in (its token and the stream tickets issued with it), and forget
    revocations of sign-ins that have expired anyway."""
    await session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
    if await session.get(RevokedToken, jti) is None:
        session.add(RevokedToken(jti=jti, user_id=user_id, expires_at=session_expires_at))


async def change_password(
    session: AsyncSession, *, user_id: int, current_password: str, new_password: str
) -> UserOut:
    """Change one's own password and end every older token of the user (a thief's too).
    NoSuchUser / WrongPassword when it cannot be done."""
    user = await get_user(session, user_id=user_id)
    if user is None:
        raise NoSuchUser(user_id)
    ok, _ = await asyncio.to_thread(verify_password, user.password_hash, current_password)
    if not ok:
        raise WrongPassword("the current password is wrong")
    user.password_hash = await asyncio.to_thread(hash_password, new_password)
    await revoke_all_tokens(session, user_id=user.id)
    return UserOut.model_validate(user)
