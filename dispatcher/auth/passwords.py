"""Password hashes and the rules a password must meet.

Passwords are hashed with argon2id (argon2-cffi) because a stolen database must not give
away logins to a system that sends people to elderly residents' homes.
"""

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LEN = 8
MAX_PASSWORD_LEN = 256

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


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


def burn_verify(password: str) -> None:
    """Spend one verification's time for an unknown username, so response times do not
    tell an attacker which usernames exist."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    verify_password(_dummy_hash, password)


def check_password(password: str) -> None:
    """ValueError (with a message fit to show) for a password too short to keep."""
    if len(password) < MIN_PASSWORD_LEN:
        raise ValueError(f"password must be at least {MIN_PASSWORD_LEN} characters")
