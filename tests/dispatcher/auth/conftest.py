"""Fixtures of the auth tests."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from dispatcher.auth import passwords as auth


@pytest.fixture
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production argon2 parameters cost ~0.2 s a hash; the tests that use this are not about them."""
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
