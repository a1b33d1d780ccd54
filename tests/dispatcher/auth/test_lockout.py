"""The lock decision on its own (the sign-in flow around it is tested through HTTP in
test_apisec.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dispatcher.auth.lockout import LoginPolicy, lock_until

NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def test_the_account_locks_at_the_policys_count_of_failures() -> None:
    policy = LoginPolicy(max_failures=3, lock_s=600)
    assert lock_until(1, policy=policy, now=NOW) is None
    assert lock_until(2, policy=policy, now=NOW) is None
    assert lock_until(3, policy=policy, now=NOW) == NOW + timedelta(seconds=600)
    assert lock_until(4, policy=policy, now=NOW) == NOW + timedelta(seconds=600)
