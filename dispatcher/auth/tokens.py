"""Signed bearer tokens and the secret that signs them.

Tokens are a compact HMAC-SHA256-signed JSON payload rather than a JWT library: we only
ever verify our own tokens, so one algorithm and no header means no algorithm-confusion
attacks and one dependency fewer. A token carries only the user id; role, station and
``active`` are read from the database on every request (``dispatcher.auth.principals``),
so disabling a user or moving them to another station takes effect at once.

A token also carries a ``jti`` (one sign-in) and the user's ``token_version``. Signing
out stores the jti in ``revoked_tokens``; a password change or an admin's "revoke all"
bumps the version, which ends every older token of that user (``dispatcher.auth.users``).
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

SECRET_ENV = "CARECALL_SECRET_KEY"
SECRET_FILE = "carecall-secret.key"
DEFAULT_TOKEN_TTL_S = 12 * 3600
STREAM_TICKET_TTL_S = 60
ACCESS = "access"
STREAM = "stream"
MIN_SECRET_BYTES = 32


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    """What a genuine token says. ``jti`` names one sign-in (a stream ticket carries the
    jti of the sign-in it was issued for, so signing out ends its tickets too); ``ver``
    is the user's token version when it was issued; ``sxp`` is when that sign-in expires."""

    sub: int
    iat: int
    exp: int
    ver: int
    jti: str
    purpose: str
    sxp: int


class TokenSigner:
    """Issues and verifies ``base64url(payload).base64url(hmac_sha256(payload))`` tokens.

    The payload is ``{"sub", "iat", "exp", "ver", "jti", "use"}`` (``use`` is ``access``
    for bearer tokens, ``stream`` for the live feed's short tickets; neither is accepted
    in the other's place). Every copy of the dispatcher that shares the secret accepts
    every other copy's tokens, so a browser may land on any copy behind a load balancer.
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

    def subkey(self, derive: Callable[[bytes], bytes]) -> bytes:
        """A key for another purpose (the family links), derived from the secret by
        ``derive``; the secret itself never leaves the signer."""
        return derive(self._secret)

    def issue(
        self,
        user_id: int,
        now: datetime,
        *,
        version: int = 0,
        jti: str | None = None,
        purpose: str = ACCESS,
        ttl_s: int | None = None,
        session_exp: int | None = None,
    ) -> str:
        iat = int(now.timestamp())
        exp = iat + (ttl_s or self.ttl_s)
        payload = {
            "sub": user_id,
            "iat": iat,
            "exp": exp,
            "ver": version,
            "jti": jti or secrets.token_hex(12),
            "use": purpose,
            "sxp": session_exp if session_exp is not None else exp,
        }
        body = _b64e(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64e(self._sign(body.encode('ascii')))}"

    def decode(self, token: str, now: datetime, purpose: str = ACCESS) -> TokenClaims | None:
        """The claims of a genuine, unexpired token made for ``purpose``; None otherwise.

        The signature is checked (in constant time) before the payload is parsed, so
        nothing an attacker writes is ever interpreted.
        """
        body, sep, sig = token.partition(".")
        if not sep or not body or not sig or not token.isascii() or len(token) > 1024:
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
        ints = [v for k in ("sub", "iat", "exp", "ver", "sxp") if type(v := payload.get(k)) is int]
        if len(ints) != 5:
            return None
        jti, use = payload.get("jti"), payload.get("use")
        if not isinstance(jti, str) or not jti or len(jti) > 32 or use != purpose:
            return None
        sub, iat, exp, ver, sxp = (int(v) for v in ints)
        if now.timestamp() >= exp:
            return None
        return TokenClaims(sub=sub, iat=iat, exp=exp, ver=ver, jti=jti, purpose=use, sxp=sxp)

    def verify(self, token: str, now: datetime) -> int | None:
        """The user id of a genuine, unexpired bearer token; None for anything else
        (revocation is checked against the database by ``authenticate``)."""
        claims = self.decode(token, now)
        return None if claims is None else claims.sub


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
