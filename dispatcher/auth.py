"""Console logins: argon2 password hashes, signed bearer tokens and station scopes.

Why these pieces and not more:

* Passwords are hashed with argon2id (argon2-cffi) because a stolen database must not
  give away logins to a system that sends people to elderly residents' homes.
* Tokens are a compact HMAC-SHA256-signed JSON payload rather than a JWT library: we
  only ever verify our own tokens, so one algorithm and no header means no
  algorithm-confusion attacks and one dependency fewer. A token carries only the user
  id; role, station and ``active`` are read from the database on every request, so
  disabling a user or moving them to another station takes effect at once.
* Scope is the user's station and everything under it (county > street > community).
  Admins and users of the county-tier station see the whole county (``scope=None``).
"""

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.models import Role, Staff, Station, Tier, User

SECRET_ENV = "CARECALL_SECRET_KEY"
SECRET_FILE = "carecall-secret.key"
ADMIN_USERNAME = "admin"
DEFAULT_TOKEN_TTL_S = 12 * 3600
MIN_SECRET_BYTES = 32
MIN_PASSWORD_LEN = 8
# Letters (any script, so 王芳 is a valid login), digits and . _ @ -
USERNAME_RE = re.compile(r"^[\w.@-]{1,64}$")

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


# =========================================================================== passwords


def hash_password(password: str) -> str:
    """Argon2id hash (salted, self-describing: parameters travel with the hash)."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> tuple[bool, str | None]:
    """Check a password; returns (ok, new_hash).

    ``new_hash`` is set when the stored hash used weaker parameters than the current
    defaults, so the caller can store it and logins upgrade themselves over time.
    A malformed stored hash counts as a mismatch rather than an error: the login must
    fail closed, not crash.
    """
    try:
        _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    if _hasher.check_needs_rehash(password_hash):
        return True, _hasher.hash(password)
    return True, None


_dummy_hash: str | None = None


def _burn_verify(password: str) -> None:
    """Spend one verification's time for an unknown username, so response times do not
    tell an attacker which usernames exist."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    verify_password(_dummy_hash, password)


# =========================================================================== tokens


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies ``base64url(payload).base64url(hmac_sha256(payload))`` tokens.

    The payload is ``{"sub": user_id, "iat": unix_s, "exp": unix_s}``. Every copy of the
    dispatcher that shares the secret accepts every other copy's tokens, so a browser may
    land on any copy behind a load balancer.
    """

    def __init__(self, secret: bytes, ttl_s: int = DEFAULT_TOKEN_TTL_S) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._secret = secret
        self.ttl_s = ttl_s

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()

    def issue(self, user_id: int, now: datetime) -> str:
        iat = int(now.timestamp())
        payload = {"sub": user_id, "iat": iat, "exp": iat + self.ttl_s}
        body = _b64e(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64e(self._sign(body.encode('ascii')))}"

    def verify(self, token: str, now: datetime) -> int | None:
        """The user id of a genuine, unexpired token; None for anything else.

        The signature is checked (in constant time) before the payload is parsed, so
        nothing an attacker writes is ever interpreted.
        """
        body, sep, sig = token.partition(".")
        if not sep or not body or not sig or not token.isascii():
            return None
        try:
            given = _b64d(sig)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._sign(body.encode("ascii"))):
            return None
        try:
            payload = json.loads(_b64d(body))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(payload, dict):
            return None
        sub, exp = payload.get("sub"), payload.get("exp")
        if type(sub) is not int or type(exp) is not int:
            return None
        if now.timestamp() >= exp:
            return None
        return sub


def load_secret_key(
    *,
    configured: str | None = None,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> bytes:
    """The token-signing secret: ``configured`` (``Settings.secret_key``, which may come
    from the YAML file), else ``CARECALL_SECRET_KEY``, else a key file.

    The file (``carecall-secret.key`` in the working folder, 32 random bytes as hex,
    mode 0600) lets several copies on one host share tokens with zero setup. It is
    created atomically (written aside, then hard-linked into place) so copies starting
    together all end up with the same key. In production set the environment variable
    so copies on different hosts agree and the key is not lying next to the database.
    """
    env = os.environ if environ is None else environ
    value = configured or env.get(SECRET_ENV, "")
    if value:
        key = value.encode()
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"{SECRET_ENV} (secret_key) must be at least {MIN_SECRET_BYTES} characters")
        return key
    target = path or Path(SECRET_FILE)
    if not target.exists():
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(MIN_SECRET_BYTES) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                pass  # another copy won the race; use its key
        finally:
            tmp.unlink(missing_ok=True)
    try:
        key = bytes.fromhex(target.read_text().strip())
    except ValueError as exc:
        raise ValueError(f"{target} does not hold a hex key; delete it to make a new one") from exc
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"{target} holds a key shorter than {MIN_SECRET_BYTES} bytes")
    return key


# =========================================================================== users


class DuplicateUsername(ValueError):
    """The username is taken (usernames are unique)."""


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LEN:
        raise ValueError(f"password must be at least {MIN_PASSWORD_LEN} characters")


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
    _check_password(password)
    try:
        parsed_role = Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {role!r}; use one of {allowed}") from None
    if station_id is None and parsed_role is not Role.admin:
        raise ValueError(f"a {parsed_role.value} needs station_id")
    if station_id is not None and await session.get(Station, station_id) is None:
        raise ValueError(f"unknown station {station_id!r}")
    if staff_id is not None and await session.get(Staff, staff_id) is None:
        raise ValueError(f"unknown staff member {staff_id!r}")
    if await session.scalar(select(User.id).where(User.username == username)) is not None:
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
        _check_password(password)
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


# =========================================================================== scope


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may see. ``scope=None`` means the whole county."""

    user_id: int
    username: str
    display_name: str
    role: Role
    station_id: str | None
    scope: frozenset[str] | None


async def station_subtree(session: AsyncSession, station_id: str) -> frozenset[str]:
    """The station and every station under it (empty if it does not exist).

    A recursive query rather than loading the whole tree; ``UNION`` (not ``UNION ALL``)
    so even a corrupted tree with a cycle terminates.
    """
    tree = select(Station.id).where(Station.id == station_id).cte("subtree", recursive=True)
    tree = tree.union(select(Station.id).join(tree, Station.parent_id == tree.c.id))
    return frozenset((await session.scalars(select(tree.c.id))).all())


async def load_principal(session: AsyncSession, user_id: int) -> Principal | None:
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
        station = await session.get(Station, user.station_id)
        if station is None:
            scope = frozenset()
        elif station.tier == Tier.county.value:
            scope = None
        else:
            scope = await station_subtree(session, station.id)
    return Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=role,
        station_id=user.station_id,
        scope=scope,
    )


def in_scope(p: Principal, station_id: str | None) -> bool:
    """Whether ``p`` may see records of ``station_id`` (None: only whole-county users)."""
    if p.scope is None:
        return True
    return station_id is not None and station_id in p.scope


# =========================================================================== FastAPI

# auto_error=False: a missing token gets the same 401 body as a bad one (see below).
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)

_PRINCIPAL_STATE = "carecall_principal"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


PrincipalDependency = Callable[..., Awaitable[Principal]]


def current_principal(maker: async_sessionmaker[AsyncSession], signer: TokenSigner) -> PrincipalDependency:
    """A dependency giving the caller's Principal, or 401 with ``WWW-Authenticate: Bearer``.

    It also records the principal on ``request.state`` so ``require_role`` (which has no
    database handle) can check it; list it before ``require_role`` in ``dependencies``.
    """

    async def dependency(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
        if not token:
            raise _unauthorized("not signed in: send 'Authorization: Bearer <token>'")
        user_id = signer.verify(token, datetime.now(UTC))
        if user_id is None:
            raise _unauthorized("the token is invalid or has expired; sign in again")
        async with maker() as session:
            principal = await load_principal(session, user_id)
        if principal is None:
            raise _unauthorized("this account no longer exists or is disabled")
        setattr(request.state, _PRINCIPAL_STATE, principal)
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
            raise _unauthorized("not signed in")
        if principal.role not in allowed:
            names = " or ".join(sorted(r.value for r in allowed))
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this needs the {names} role")
        return principal

    return dependency


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


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    user: UserOut


class MeOut(BaseModel):
    user: UserOut
    # Station ids the caller may see; None = the whole county.
    scope: list[str] | None


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
    return username.strip(), password


def auth_router(maker: async_sessionmaker[AsyncSession], signer: TokenSigner) -> APIRouter:
    """``POST /api/v1/auth/token`` (sign in) and ``GET /api/v1/auth/me``."""
    router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
    principal_dep = current_principal(maker, signer)

    @router.post("/token", response_model=TokenOut, openapi_extra=_TOKEN_FORM_SCHEMA)
    async def token(request: Request) -> TokenOut:
        username, password = await _read_credentials(request)
        now = datetime.now(UTC)
        async with maker() as session, session.begin():
            user = await session.scalar(select(User).where(User.username == username))
            # Argon2 takes tens of milliseconds by design: keep it off the event loop.
            if user is None:
                await asyncio.to_thread(_burn_verify, password)
                raise _unauthorized("wrong username or password")
            ok, new_hash = await asyncio.to_thread(verify_password, user.password_hash, password)
            if not ok:
                raise _unauthorized("wrong username or password")
            if not user.active:
                raise _unauthorized("this account is disabled; ask an administrator")
            if new_hash is not None:
                user.password_hash = new_hash
            out = UserOut.model_validate(user)
        return TokenOut(access_token=signer.issue(out.id, now), expires_in=signer.ttl_s, user=out)

    @router.get("/me", response_model=MeOut)
    async def me(principal: Annotated[Principal, Depends(principal_dep)]) -> MeOut:
        async with maker() as session:
            user = await session.get(User, principal.user_id)
        if user is None:
            raise _unauthorized("this account no longer exists")
        scope = None if principal.scope is None else sorted(principal.scope)
        return MeOut(user=UserOut.model_validate(user), scope=scope)

    return router
