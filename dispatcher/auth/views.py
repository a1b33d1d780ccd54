"""HTTP routes of sign-in and logins: ``/api/v1/auth/…`` (sign in, sign out, change one's
password, stream tickets, ``/me``), the admin's unlock and revoke-all for a user, and the
log of reads of residents' records (``/api/v1/record-reads``).

The decisions live in the service modules (``lockout``, ``users``, ``principals``,
``privacy``); this module turns their answers and refusals into status codes.
"""

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.auth.lockout import (
    AccountDisabled,
    AccountLocked,
    LoginGuard,
    LoginPolicy,
    SignInRefused,
    Throttled,
    sign_in,
    unlock,
)
from dispatcher.auth.models import Role
from dispatcher.auth.passwords import MAX_PASSWORD_LEN, MIN_PASSWORD_LEN
from dispatcher.auth.principals import (
    Principal,
    claims_of,
    current_principal,
    principal_of,
    require_role,
    unauthorized,
)
from dispatcher.auth.privacy import list_record_reads
from dispatcher.auth.tokens import STREAM, STREAM_TICKET_TTL_S, TokenSigner
from dispatcher.auth.users import (
    NoSuchUser,
    UserOut,
    WrongPassword,
    get_user,
    revoke_tokens_of,
    sign_out,
    token_version,
)
from dispatcher.auth.users import change_password as change_own_password


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=256)
    new_password: str = Field(min_length=MIN_PASSWORD_LEN, max_length=MAX_PASSWORD_LEN)


class StreamTicket(BaseModel):
    ticket: str
    expires_in: int


class UnlockOut(BaseModel):
    username: str
    was_locked: bool


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    user: UserOut


class MeOut(BaseModel):
    user: UserOut
    # Station ids the caller may see; None = the whole county.
    scope: list[str] | None


class RecordReadOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    user_id: int
    username: str
    role: str
    resident_id: str
    route: str
    call_id: int | None


class RecordReadPage(BaseModel):
    items: list[RecordReadOut]
    total: int
    limit: int
    offset: int


_TOKEN_FORM_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["password"]},
                        "username": {"type": "string"},
                        "password": {"type": "string", "format": "password"},
                    },
                }
            }
        },
    }
}


async def _read_credentials(request: Request) -> tuple[str, str]:
    """Username and password from an OAuth2 password form (or, for scripts, JSON).

    Parsed by hand because FastAPI's ``Form`` needs python-multipart, a dependency we
    would carry for this one urlencoded body.
    """
    raw = await request.body()
    fields: dict[str, Any]
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            decoded = json.loads(raw or b"{}")
        except ValueError:
            decoded = None
        fields = decoded if isinstance(decoded, dict) else {}
    else:
        try:
            parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            parsed = {}
        fields = {k: v[0] for k, v in parsed.items()}
    grant = fields.get("grant_type")
    if grant not in (None, "", "password"):
        raise HTTPException(422, detail="grant_type must be 'password'")
    username, password = fields.get("username"), fields.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise HTTPException(422, detail="send username and password (application/x-www-form-urlencoded)")
    if len(username) > 256 or len(password) > MAX_PASSWORD_LEN:
        # nobody types more; argon2 over a megabyte would only burn CPU for an attacker
        raise HTTPException(
            422, detail=f"username or password too long (password: {MAX_PASSWORD_LEN} at most)"
        )
    return username.strip(), password


def _locked_detail(until: datetime, now: datetime, failures: int | None) -> str:
    mins = max(1, int((until - now).total_seconds() + 59) // 60)
    why = f"after {failures} failed sign-ins " if failures else ""
    return (
        f"this account is locked {why}until {until.strftime('%H:%M')} UTC (about {mins} min); "
        "try again then, or ask an administrator to unlock it"
    )


def _refusal(refused: SignInRefused, now: datetime) -> HTTPException:
    """The answer to a refused sign-in: 429 throttled, 423 locked, 401 otherwise."""
    if isinstance(refused, Throttled):
        return HTTPException(
            429,
            detail=f"too many failed sign-ins from this {refused.what}; try again in {refused.wait_s} s",
            headers={"Retry-After": str(refused.wait_s)},
        )
    if isinstance(refused, AccountLocked):
        retry = max(1, int((refused.until - now).total_seconds()) + 1)
        return HTTPException(
            423,
            detail=_locked_detail(refused.until, now, refused.failures),
            headers={"Retry-After": str(retry)},
        )
    if isinstance(refused, AccountDisabled):
        return unauthorized("this account is disabled; ask an administrator")
    return unauthorized("wrong username or password")


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def auth_router(
    maker: async_sessionmaker[AsyncSession], signer: TokenSigner, policy: LoginPolicy | None = None
) -> APIRouter:
    """Sign in, sign out, change one's password, stream tickets, ``/me``; and the admin's
    unlock and revoke-all for a user."""
    pol = policy or LoginPolicy()
    guard = LoginGuard(pol)
    router = APIRouter(prefix="/api/v1", tags=["auth"])
    principal_dep = current_principal(maker, signer)
    admin_only = [Depends(principal_dep), Depends(require_role(Role.admin))]

    @router.post("/auth/token", response_model=TokenOut, openapi_extra=_TOKEN_FORM_SCHEMA)
    async def token(request: Request) -> TokenOut:
        username, password = await _read_credentials(request)
        now = datetime.now(UTC)
        try:
            signed = await sign_in(
                maker,
                guard=guard,
                policy=pol,
                username=username,
                password=password,
                address=_client_address(request),
                now=now,
            )
        except SignInRefused as refused:
            raise _refusal(refused, now) from None
        access = signer.issue(signed.user.id, now, version=signed.token_version)
        return TokenOut(access_token=access, expires_in=signer.ttl_s, user=signed.user)

    @router.post("/auth/logout", status_code=204)
    async def logout(request: Request, principal: Annotated[Principal, Depends(principal_dep)]) -> Response:
        """Sign out: this token (and the stream tickets issued with it) stop working in
        every copy at once. Other sign-ins of the same user are untouched."""
        claims = claims_of(request)
        async with maker() as session, session.begin():
            await sign_out(
                session,
                jti=claims.jti,
                user_id=principal.user_id,
                session_expires_at=datetime.fromtimestamp(claims.sxp, UTC),
                now=datetime.now(UTC),
            )
        return Response(status_code=204)

    @router.post("/auth/password", response_model=TokenOut)
    async def change_password(
        body: PasswordChange, principal: Annotated[Principal, Depends(principal_dep)]
    ) -> TokenOut:
        """Change one's own password. Every older token of the user ends (a thief's
        too); the answer carries a new one so this console carries on."""
        now = datetime.now(UTC)
        async with maker() as session, session.begin():
            try:
                out = await change_own_password(
                    session,
                    user_id=principal.user_id,
                    current_password=body.current_password,
                    new_password=body.new_password,
                )
            except NoSuchUser:
                raise unauthorized("this account no longer exists") from None
            except WrongPassword as exc:
                raise HTTPException(403, detail=str(exc)) from None
            version = await token_version(session, user_id=out.id)
        access = signer.issue(out.id, now, version=version)
        return TokenOut(access_token=access, expires_in=signer.ttl_s, user=out)

    @router.post("/auth/stream-ticket", response_model=StreamTicket)
    async def stream_ticket(
        request: Request, principal: Annotated[Principal, Depends(principal_dep)]
    ) -> StreamTicket:
        """A short-lived ticket for ``GET /api/v1/stream?ticket=…`` (``EventSource``
        cannot send headers, and a bearer token in a URL ends up in logs and history).
        It opens the live feed and nothing else, and dies with the sign-in it came from."""
        claims = claims_of(request)
        now = datetime.now(UTC)
        ttl = max(1, min(STREAM_TICKET_TTL_S, claims.sxp - int(now.timestamp())))
        ticket = signer.issue(
            principal.user_id,
            now,
            version=claims.ver,
            jti=claims.jti,
            purpose=STREAM,
            ttl_s=ttl,
            session_exp=claims.sxp,
        )
        return StreamTicket(ticket=ticket, expires_in=ttl)

    @router.get("/auth/me", response_model=MeOut)
    async def me(principal: Annotated[Principal, Depends(principal_dep)]) -> MeOut:
        async with maker() as session:
            user = await get_user(session, user_id=principal.user_id)
        if user is None:
            raise unauthorized("this account no longer exists")
        scope = None if principal.scope is None else sorted(principal.scope)
        return MeOut(user=UserOut.model_validate(user), scope=scope)

    @router.post("/users/{user_id}/unlock", response_model=UnlockOut, tags=["users"], dependencies=admin_only)
    async def unlock_route(user_id: int, request: Request) -> UnlockOut:
        """Lift a sign-in lock (and clear the count of failures) before it runs out."""
        who = principal_of(request)
        async with maker() as session, session.begin():
            user = await get_user(session, user_id=user_id)
            if user is None:
                raise HTTPException(404, detail=f"no user {user_id}")
            changed = await unlock(session, user=user, actor=f"user:{who.username}", now=datetime.now(UTC))
            return UnlockOut(username=user.username, was_locked=changed)

    @router.post("/users/{user_id}/revoke-tokens", status_code=204, tags=["users"], dependencies=admin_only)
    async def revoke_route(user_id: int, request: Request) -> Response:
        """End every token the user holds now (a lost phone, a leaked password)."""
        who = principal_of(request)
        async with maker() as session, session.begin():
            user = await get_user(session, user_id=user_id)
            if user is None:
                raise HTTPException(404, detail=f"no user {user_id}")
            await revoke_tokens_of(session, user=user, actor=f"user:{who.username}", now=datetime.now(UTC))
        return Response(status_code=204)

    return router


def privacy_router(maker: async_sessionmaker[AsyncSession], signer: TokenSigner) -> APIRouter:
    """``GET /api/v1/record-reads`` (admins): who read which resident's data, newest first."""
    router = APIRouter(
        prefix="/api/v1",
        tags=["privacy"],
        dependencies=[Depends(current_principal(maker, signer)), Depends(require_role(Role.admin))],
    )

    @router.get("/record-reads", response_model=RecordReadPage)
    async def list_reads(
        resident_id: Annotated[str | None, Query(max_length=64)] = None,
        username: Annotated[str | None, Query(max_length=64)] = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> RecordReadPage:
        async with maker() as s:
            rows, total = await list_record_reads(
                s, resident_id=resident_id, username=username, since=since, limit=limit, offset=offset
            )
        return RecordReadPage(
            items=[RecordReadOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
        )

    return router
