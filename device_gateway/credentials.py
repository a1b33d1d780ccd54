"""Device secrets: issued once, stored only as a Mosquitto-compatible PBKDF2-SHA512 hash.

Mosquitto's ``$7$`` format (``$7$<iterations>$<b64 salt>$<b64 hash>``) lets
``carecall broker-config`` write a password file without ever knowing a secret, and lets
the embedded broker check the same hash. Secrets are 256-bit random tokens, so the hash
needs no large iteration count to be out of reach of guessing; iterations stay moderate
because a broker verifies one per device connect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 1000
_SALT_BYTES = 12


def generate_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, iterations)
    return "$7${}${}${}".format(
        iterations, base64.b64encode(salt).decode("ascii"), base64.b64encode(digest).decode("ascii")
    )


def verify_secret(secret: str, stored: str | None) -> bool:
    if not stored or not secret:
        return False
    try:
        _, algo, iters, salt_b64, hash_b64 = stored.split("$")
        if algo != "7":
            return False
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(hash_b64)
        digest = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, int(iters))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)
