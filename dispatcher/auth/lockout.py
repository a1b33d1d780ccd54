"""Signing in: the password check, and how failed sign-ins are slowed and stopped.

Each failure counts against the client address and the username (``limits``, moving
window; Redis when configured so every copy shares the counts, memory otherwise), so
guessing is slow even for usernames that do not exist; and ``max_failures`` consecutive
failures lock a real account for ``lock_s`` (423, saying until when), stored in the
database. An admin unlocks it (API or ``carecall users unlock``). Locks and unlocks are
audit-log rows.
"""

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit import service as audit
from dispatcher.auth.models import LoginState, User
from dispatcher.auth.passwords import burn_verify, verify_password
from dispatcher.auth.users import USERNAME_RE, UserOut, login_state, user_named

log = structlog.get_logger("carecall.auth")


@dataclass(frozen=True)
class LoginPolicy:
    """How failed sign-ins are slowed and stopped (``Settings.login_*``)."""

    max_failures: int = 5
    lock_s: int = 900
    throttle_ip: str = "30/minute"
    throttle_user: str = "10/minute"
    # redis://… shares the throttle counts between copies; None keeps them in memory
    redis_url: str | None = None
    key_prefix: str = "carecall-login"


def _limits_uri(redis_url: str | None) -> str:
    if not redis_url:
        return "async+memory://"
    for plain, ours in (
        ("redis://", "async+redis://"),
        ("rediss://", "async+rediss://"),
        ("unix://", "async+redis+unix://"),
    ):
        if redis_url.startswith(plain):
            return ours + redis_url[len(plain) :]
    raise ValueError(f"unsupported redis URL for the sign-in throttle: {redis_url!r}")


class LoginGuard:
    """Moving-window counts of failed sign-ins per client address and per username.

    ``limits`` rather than a table of our own: it keeps the window in Redis with one
    atomic script per hit (so copies share counts without a database write per failed
    guess, which is what an attacker would otherwise make us do), or in memory for a
    single copy. If Redis is down the guard lets sign-ins through and logs it: the
    account lock in the database still stops guessing at a real account.
    """

    def __init__(self, policy: LoginPolicy, storage: Storage | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if policy.redis_url:
            kwargs = {"implementation": "redispy", "key_prefix": policy.key_prefix}
        self.storage = storage or storage_from_string(_limits_uri(policy.redis_url), **kwargs)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.per_ip: RateLimitItem = parse(policy.throttle_ip)
        self.per_user: RateLimitItem = parse(policy.throttle_user)

    def _keys(self, ip: str, username: str) -> list[tuple[RateLimitItem, str, str]]:
        return [(self.per_ip, "ip", ip), (self.per_user, "user", username.lower()[:64])]

    async def wait_s(self, ip: str, username: str) -> tuple[str, int] | None:
        """("address"|"username", seconds to wait) when either limit is used up."""
        try:
            for item, kind, key in self._keys(ip, username):
                if not await self.limiter.test(item, kind, key):
                    stats = await self.limiter.get_window_stats(item, kind, key)
                    wait = max(1, int(stats.reset_time - time.time()) + 1)
                    return ("address" if kind == "ip" else "username"), wait
        except Exception as exc:  # the throttle must never stop a legitimate sign-in
            log.warning("login_throttle_unavailable", error=f"{type(exc).__name__}: {exc}")
        return None

    async def failed(self, ip: str, username: str) -> None:
        try:
            for item, kind, key in self._keys(ip, username):
                await self.limiter.hit(item, kind, key)
        except Exception as exc:
            log.warning("login_throttle_unavailable", error=f"{type(exc).__name__}: {exc}")


# =========================================================================== refusals


class SignInRefused(Exception):
    """Why a sign-in did not succeed; the views turn each kind into its status code."""


class WrongCredentials(SignInRefused):
    """Unknown username or wrong password (the answer does not say which)."""


class AccountDisabled(SignInRefused):
    """The password was right but the account is disabled."""


class AccountLocked(SignInRefused):
    """The account is locked until ``until``; ``failures`` is set when this sign-in locked it."""

    def __init__(self, until: datetime, failures: int | None = None) -> None:
        super().__init__(until, failures)
        self.until = until
        self.failures = failures


class Throttled(SignInRefused):
    """Too many failures from this address (``what="address"``) or for this username."""

    def __init__(self, what: str, wait_s: int) -> None:
        super().__init__(what, wait_s)
        self.what = what
        self.wait_s = wait_s


def lock_until(failures: int, *, policy: LoginPolicy, now: datetime) -> datetime | None:
    """When ``failures`` consecutive failed sign-ins lock the account: until when."""
    if failures >= policy.max_failures:
        return now + timedelta(seconds=policy.lock_s)
    return None


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# =========================================================================== sign-in


@dataclass(frozen=True)
class SignedIn:
    """A successful sign-in: the user, and the token version a new token must carry."""

    user: UserOut
    token_version: int


async def sign_in(
    maker: async_sessionmaker[AsyncSession],
    *,
    guard: LoginGuard,
    policy: LoginPolicy,
    username: str,
    password: str,
    address: str,
    now: datetime,
) -> SignedIn:
    """Check a username and password against the throttle, the account lock and the
    stored hash; SignInRefused (of the kind that says why) when the sign-in fails.

    A failure is counted (and a lock with its audit row stored) before the refusal is
    raised; a refusal that changes nothing (locked, disabled) rolls its transaction back.
    """
    if not USERNAME_RE.match(username):
        await asyncio.to_thread(burn_verify, password)
        await guard.failed(address, username)
        raise WrongCredentials
    waiting = await guard.wait_s(address, username)
    if waiting is not None:
        raise Throttled(*waiting)
    async with maker() as session, session.begin():
        user = await user_named(session, username=username)
        # Argon2 takes tens of milliseconds by design: keep it off the event loop.
        if user is None:
            await asyncio.to_thread(burn_verify, password)
            await guard.failed(address, username)
            raise WrongCredentials
        state = await login_state(session, user_id=user.id)
        locked_until = _aware(state.locked_until)
        if locked_until is not None and locked_until > now:
            raise AccountLocked(locked_until)
        if locked_until is not None:  # the lock ran out: a fresh count
            state.locked_until, state.failed_logins = None, 0
        ok, new_hash = await asyncio.to_thread(verify_password, user.password_hash, password)
        if ok:
            if not user.active:
                raise AccountDisabled
            state.failed_logins = 0
            if new_hash is not None:
                user.password_hash = new_hash
            return SignedIn(user=UserOut.model_validate(user), token_version=state.token_version)
        await guard.failed(address, username)
        refusal = await _count_failure(
            session, user=user, state=state, policy=policy, address=address, now=now
        )
    raise refusal  # after the commit: the count, the lock and its audit row are stored


async def _count_failure(
    session: AsyncSession,
    *,
    user: User,
    state: LoginState,
    policy: LoginPolicy,
    address: str,
    now: datetime,
) -> SignInRefused:
    """Count a wrong password; lock the account (with an audit row) at the policy's limit.
    Returns the refusal to answer with once this is committed."""
    state.failed_logins += 1
    until = lock_until(state.failed_logins, policy=policy, now=now)
    if until is None:
        return WrongCredentials()
    state.locked_until = until
    await audit.append(
        session,
        kind="login_locked",
        at=now,
        actor="system",
        detail={
            "username": user.username,
            "failures": state.failed_logins,
            "until": until.isoformat(),
            "address": address,
        },
    )
    log.warning("login_locked", username=user.username, failures=state.failed_logins, address=address)
    return AccountLocked(until, state.failed_logins)


# =========================================================================== unlock


async def unlock(session: AsyncSession, *, user: User, actor: str, now: datetime) -> bool:
    """Clear a user's failures and lock (inside the caller's transaction); an audit row
    when there was a lock or failures to clear. Returns whether anything changed."""
    state = await login_state(session, user_id=user.id)
    was_locked = state.locked_until is not None or state.failed_logins > 0
    state.failed_logins = 0
    state.locked_until = None
    if was_locked:
        await audit.append(
            session, kind="login_unlocked", at=now, actor=actor, detail={"username": user.username}
        )
    return was_locked


async def unlock_user(
    maker: async_sessionmaker[AsyncSession], *, username: str, actor: str, now: datetime
) -> bool:
    """``carecall users unlock NAME``; ValueError for an unknown username."""
    async with maker() as session, session.begin():
        user = await user_named(session, username=username)
        if user is None:
            raise ValueError(f"no user {username!r}")
        return await unlock(session, user=user, actor=actor, now=now)
