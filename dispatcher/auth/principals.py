"""Who is calling and what they may see: the principal behind a token, its station scope,
and the FastAPI dependencies every domain's views use to require a sign-in and a role.

Scope is the user's station and everything under it (county > street > community).
Admins and users of the county-tier station see the whole county (``scope=None``).

A token's signature proves who issued it (``dispatcher.auth.tokens``); whether it still
counts (the account is active, the sign-in was not signed out, no password change or
"revoke all" came after it) is checked here against the database on every request, in
the same query that loads the user, so it costs no extra round trip and holds in every
copy at once (the database is shared, not a cache).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.auth.models import LoginState, RevokedToken, Role, User
from dispatcher.auth.registry_tables import COUNTY_TIER, station_tier, stations
from dispatcher.auth.tokens import TokenClaims, TokenSigner

# The API a responder may use: the phone's own, and signing in/out.
RESPONDER_PATHS = ("/api/v1/m/", "/api/v1/auth/")


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may see. ``scope=None`` means the whole county."""

    user_id: int
    username: str
    display_name: str
    role: Role
    station_id: str | None
    scope: frozenset[str] | None
    staff_id: str | None = None  # a responder's own staff row


def in_scope(p: Principal, station_id: str | None) -> bool:
    """Whether ``p`` may see records of ``station_id`` (None: only whole-county users)."""
    if p.scope is None:
        return True
    return station_id is not None and station_id in p.scope


async def station_subtree(session: AsyncSession, *, station_id: str) -> frozenset[str]:
    """The station and every station under it (empty if it does not exist).

    A recursive query rather than loading the whole tree; ``UNION`` (not ``UNION ALL``)
    so even a corrupted tree with a cycle terminates.
    """
    tree = select(stations.c.id).where(stations.c.id == station_id).cte("subtree", recursive=True)
    tree = tree.union(select(stations.c.id).join(tree, stations.c.parent_id == tree.c.id))
    return frozenset((await session.scalars(select(tree.c.id))).all())


async def load_principal(session: AsyncSession, *, user_id: int) -> Principal | None:
    """The principal for a token's user id; None for unknown or disabled users."""
    user = await session.get(User, user_id)
    if user is None or not user.active:
        return None
    role = Role(user.role)
    scope: frozenset[str] | None
    if role is Role.admin:
        scope = None
    elif user.station_id is None:
        scope = frozenset()
    else:
        tier = await station_tier(session, station_id=user.station_id)
        if tier is None:
            scope = frozenset()
        elif tier == COUNTY_TIER:
            scope = None
        else:
            scope = await station_subtree(session, station_id=user.station_id)
    return Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=role,
        station_id=user.station_id,
        scope=scope,
        staff_id=user.staff_id,
    )


class TokenRejected(Exception):
    """A genuine token that no longer counts; the message says why (shown to the client)."""


async def authenticate(session: AsyncSession, *, claims: TokenClaims) -> Principal:
    """The principal of a verified token, after the checks the signature cannot make:
    the account exists and is active, the token was not signed out, and no password
    change or "revoke all" came after it. One query for all three."""
    revoked = exists().where(RevokedToken.jti == claims.jti)
    row = (
        await session.execute(
            # the User entity (not just columns): load_principal's get() below then
            # finds it in the session and the whole check stays one round trip more than
            # none, the same as before revocation existed
            select(User, LoginState.token_version, revoked)
            .outerjoin(LoginState, LoginState.user_id == User.id)
            .where(User.id == claims.sub)
        )
    ).first()
    if row is None or not row[0].active:
        raise TokenRejected("this account no longer exists or is disabled")
    if row[2]:
        raise TokenRejected("this token was signed out; sign in again")
    if (row[1] or 0) != claims.ver:
        raise TokenRejected(
            "this token was revoked (password changed or signed out everywhere); sign in again"
        )
    principal = await load_principal(session, user_id=claims.sub)
    if principal is None:
        raise TokenRejected("this account no longer exists or is disabled")
    return principal


# =========================================================================== FastAPI

# auto_error=False: a missing token gets the same 401 body as a bad one (see below).
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)

_PRINCIPAL_STATE = "carecall_principal"
_CLAIMS_STATE = "carecall_claims"


def unauthorized(detail: str) -> HTTPException:
    """401 with ``WWW-Authenticate: Bearer``."""
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def principal_of(request: Request) -> Principal:
    """The principal ``current_principal`` recorded for this request."""
    principal: Principal = getattr(request.state, _PRINCIPAL_STATE)
    return principal


def claims_of(request: Request) -> TokenClaims:
    """The claims of the token ``current_principal`` accepted for this request."""
    claims: TokenClaims = getattr(request.state, _CLAIMS_STATE)
    return claims


PrincipalDependency = Callable[..., Awaitable[Principal]]


def current_principal(maker: async_sessionmaker[AsyncSession], signer: TokenSigner) -> PrincipalDependency:
    """A dependency giving the caller's Principal, or 401 with ``WWW-Authenticate: Bearer``.

    It also records the principal (and the token's claims) on ``request.state`` so
    ``require_role`` (which has no database handle) and logout can use them; list it
    before ``require_role`` in ``dependencies``.
    """

    async def dependency(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
        if not token:
            raise unauthorized("not signed in: send 'Authorization: Bearer <token>'")
        claims = signer.decode(token, datetime.now(UTC))
        if claims is None:
            raise unauthorized("the token is invalid or has expired; sign in again")
        try:
            async with maker() as session:
                principal = await authenticate(session, claims=claims)
        except TokenRejected as exc:
            raise unauthorized(str(exc)) from None
        if principal.role is Role.responder and not request.url.path.startswith(RESPONDER_PATHS):
            # each role sees what it needs: a responder sees their own calls on the phone
            raise HTTPException(403, "responders use the phone app (/m/)")
        setattr(request.state, _PRINCIPAL_STATE, principal)
        setattr(request.state, _CLAIMS_STATE, claims)
        return principal

    return dependency


def require_role(*roles: Role) -> Callable[[Request], Principal]:
    """A dependency refusing (403) callers whose role is not one of ``roles``.

    It must run after a ``current_principal`` dependency of the same request; if none
    ran it answers 401, so a wiring mistake fails closed instead of open.
    """
    allowed = frozenset(roles)

    def dependency(request: Request) -> Principal:
        principal = getattr(request.state, _PRINCIPAL_STATE, None)
        if not isinstance(principal, Principal):
            raise unauthorized("not signed in")
        if principal.role not in allowed:
            names = " or ".join(sorted(r.value for r in allowed))
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this needs the {names} role")
        return principal

    return dependency
