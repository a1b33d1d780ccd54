"""Signed tokens and the secret key."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.auth.tokens import TokenSigner, load_secret_key

SECRET = b"k" * 32
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def test_token_roundtrip_and_expiry() -> None:
    signer = TokenSigner(SECRET, ttl_s=60)
    token = signer.issue(7, NOW)
    assert signer.verify(token, NOW) == 7
    assert signer.verify(token, NOW + timedelta(seconds=59)) == 7
    assert signer.verify(token, NOW + timedelta(seconds=60)) is None
    assert TokenSigner(b"o" * 32).verify(token, NOW) is None  # another secret


def _forge(token: str, **changes: int) -> str:
    body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    new_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{new_body}.{sig}"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: _forge(t, sub=1),
        lambda t: _forge(t, exp=2_000_000_000),
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.split(".")[0],
        lambda t: "",
        lambda t: "a.b.c",
        lambda t: "é.é",
    ],
)
def test_tampered_tokens_are_refused(mangle: object) -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue(7, NOW)
    assert callable(mangle)
    assert signer.verify(mangle(token), NOW) is None


def test_signer_refuses_short_secret() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        TokenSigner(b"short")


def test_secret_key_from_env_or_shared_file(tmp_path: Path) -> None:
    assert load_secret_key(environ={"CARECALL_SECRET_KEY": "e" * 40}) == b"e" * 40
    assert load_secret_key(configured="c" * 32, environ={"CARECALL_SECRET_KEY": "e" * 40}) == (b"c" * 32)
    with pytest.raises(ValueError, match="CARECALL_SECRET_KEY"):
        load_secret_key(environ={"CARECALL_SECRET_KEY": "too-short"})
    path = tmp_path / "carecall-secret.key"
    first = load_secret_key(environ={}, path=path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret_key(environ={}, path=path) == first  # a second copy shares it
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left
