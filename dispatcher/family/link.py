"""The family's link: a short signed address scoped to one call and one contact.

``/f/<call>.<contact>.<expiry>.<mac>`` — numbers in base 36 and a 16-byte HMAC-SHA256 in
base64url: short enough for an SMS, and nothing in it can be changed without the key. The
link opens only its own call, for its own contact, until its expiry (24 h by default); the
view also refuses it once the call has closed. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

LINK_TTL = timedelta(hours=24)
MAC_BYTES = 16
KEY_LABEL = b"carecall family link v1"


class LinkProblem(StrEnum):
    malformed = "malformed"
    tampered = "tampered"
    expired = "expired"


@dataclass(frozen=True)
class LinkClaims:
    call_id: int
    contact_id: int
    expires_at: datetime


def derive_key(secret: bytes) -> bytes:
    """A key of its own for links, derived from the server secret (never the token key)."""
    return hmac.new(secret, KEY_LABEL, hashlib.sha256).digest()


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    if n < 0:
        raise ValueError("negative")
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _mac(key: bytes, body: str) -> str:
    digest = hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_link(key: bytes, *, call_id: int, contact_id: int, now: datetime, ttl: timedelta = LINK_TTL) -> str:
    """The token part of the link (the path is ``/f/<token>``)."""
    expires = int((now + ttl).timestamp())
    body = f"{_b36(call_id)}.{_b36(contact_id)}.{_b36(expires)}"
    return f"{body}.{_mac(key, body)}"


def read_link(key: bytes, token: str, *, now: datetime) -> LinkClaims | LinkProblem:
    """The link's claims, or why it cannot be used. The MAC is checked (in constant time)
    before anything in the link is believed."""
    if not token.isascii() or len(token) > 120:
        return LinkProblem.malformed
    parts = token.split(".")
    if len(parts) != 4 or not all(parts):
        return LinkProblem.malformed
    body, mac = ".".join(parts[:3]), parts[3]
    if not hmac.compare_digest(_mac(key, body), mac):
        return LinkProblem.tampered
    try:
        call_id, contact_id, expires = (int(p, 36) for p in parts[:3])
    except ValueError:
        return LinkProblem.malformed
    expires_at = datetime.fromtimestamp(expires, tz=now.tzinfo)
    if now >= expires_at:
        return LinkProblem.expired
    return LinkClaims(call_id, contact_id, expires_at)
