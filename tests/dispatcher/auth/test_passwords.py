"""Password hashes: argon2id, verified, upgraded when weak."""

from __future__ import annotations

from argon2 import PasswordHasher

from dispatcher.auth.passwords import hash_password, verify_password


def test_password_hash_verifies_and_rejects() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse") == (True, None)
    assert verify_password(stored, "wrong horse") == (False, None)
    assert verify_password("not a hash", "correct horse") == (False, None)


def test_weak_hash_is_upgraded_on_verify() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw-123456")
    ok, new_hash = verify_password(weak, "pw-123456")
    assert ok and new_hash is not None and new_hash != weak
    assert verify_password(new_hash, "pw-123456") == (True, None)
