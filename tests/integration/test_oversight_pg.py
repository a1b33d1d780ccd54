"""The oversight aggregates on a real PostgreSQL: the one-pass SQL (conditional
aggregates, JSON details, time zones) gives the same hand-computed figures as on SQLite."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.oversight import reports
from dispatcher.oversight.figures import Period
from dispatcher.oversight.targets import Targets
from tests.dispatcher.oversight.conftest import NOW, build_world, check_epoch_us_exact

pytestmark = pytest.mark.integration

DAY = Period(date(2026, 11, 26), date(2026, 11, 26))


async def test_aggregates_on_postgresql(
    pg_maker: async_sessionmaker[AsyncSession], pg_url: str, tmp_path: Path
) -> None:
    w = await build_world(pg_maker, tmp_path, pg_url)
    rep = await reports.summary_report(
        w.maker, where=reports.ReportScope(None), period=DAY, targets=Targets(), now=NOW
    )
    s = rep["summary"]
    # the same hand-computed figures as tests/dispatcher/oversight/test_reports.py
    assert (s["calls"], s["answer_median_s"], s["answer_p90_s"], s["answer_p99_s"]) == (8, 45.0, 200.0, 200.0)
    assert (s["answer_within_60s_met"], s["answer_within_60s_eligible"]) == (4, 7)
    assert (s["answer_within_180s_met"], s["answer_within_180s_eligible"]) == (5, 6)
    assert (s["arrival_median_s"], s["arrival_within_limit_met"], s["arrival_within_limit_eligible"]) == (
        700.0,
        3,
        4,
    )
    assert (s["close_median_s"], s["close_p90_s"], s["escalated_to_county"], s["review"]) == (
        1000.0,
        2000.0,
        1,
        2,
    )
    by_hour = await reports.aggregates_report(
        w.maker, where=reports.ReportScope(None), period=DAY, by="hour", targets=Targets(), now=NOW
    )
    assert [r["key"] for r in by_hour["rows"]] == [f"{h}" for h in range(11, 19)]
    street = await reports.summary_report(
        w.maker, where=reports.ReportScope(frozenset({"st2", "cm2"})), period=DAY, targets=Targets(), now=NOW
    )
    assert street["summary"]["calls"] == 1


async def test_epoch_us_is_exact_on_postgresql(pg_maker: async_sessionmaker[AsyncSession]) -> None:
    await check_epoch_us_exact(pg_maker)
