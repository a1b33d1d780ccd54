"""as_utc: the one way a possibly naive time from the database becomes aware."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from carecall.core.clock import as_utc


def test_naive_is_taken_as_utc() -> None:
    assert as_utc(datetime(2026, 11, 26, 3, 0)) == datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    assert as_utc(datetime(2026, 11, 26, 3, 0)).tzinfo is UTC


def test_aware_is_returned_as_it_is() -> None:
    beijing = datetime(2026, 11, 26, 11, 0, tzinfo=timezone(timedelta(hours=8)))
    assert as_utc(beijing) is beijing
