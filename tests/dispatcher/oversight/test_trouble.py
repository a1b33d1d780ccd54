"""Device trouble is not an emergency: trouble calls made through the real dispatcher
stay out of the answer targets and are graded against their own working-hours target.

On top of the conftest county (8 sos calls; ≤60 s compliance 4/7 = 57.14 %), three
trouble calls on 2026-11-26 (Asia/Shanghai; working hours 08:00–18:00, 4 h target):

* low_battery on h1's button at 11:30, never acknowledged: at NOW (18:01:40) it has
  waited 6 h 30 min of working time > 4 h → missed, on the review list as trouble_late;
* power_loss on h2's button at 12:00, acknowledged after 100 s → met;
* tamper on h2's button at 16:00, never acknowledged: 2 h of working time by 18:00 and
  none after → not applicable yet.

So trouble compliance is 1 of 2 = 50 %, and the answer figures are those of the sos calls
alone: ≤60 s still 4/7, median still 45 s, review list still calls 2 and 5 plus the
low battery.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from config.settings import load_settings
from dispatcher.calls.models import Call
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.oversight import reports
from dispatcher.oversight.figures import Period
from dispatcher.oversight.targets import Targets
from tests.dispatcher.oversight.conftest import NO_TIMERS, NOW, S0, _act, build_world
from tests.support.events import store_event

TROUBLE = [
    # (device, home, type, seconds after S0, acknowledged after s)
    ("h1-btn", "h1", "low_battery", 1800, None),
    ("h2-btn", "h2", "power_loss", 3600, 100),
    ("h2-btn", "h2", "tamper", 5 * 3600, None),
]


async def _world_with_trouble(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path, db_url: str
) -> dict[str, int]:
    w = await build_world(maker, tmp_path, db_url)
    policy = tmp_path / "escalation.yaml"
    policy.write_text(NO_TIMERS, encoding="utf-8")
    d = Dispatcher(
        settings=load_settings(database_url=db_url, escalation_file=policy),
        maker=maker,
        bus=MemoryBus(),
        clock=w.clock,
        mqtt=None,
        notifier=LogNotifier(),
    )
    ids: dict[str, int] = {}
    seen = set(w.call_ids)
    for device, home, type_, after, ack in TROUBLE:
        at = S0 + timedelta(seconds=after)
        w.clock.t = at
        await store_event(maker, device, f"{type_}-1", type_, at, "trouble", home_id=home)
        assert await d.intake_once()
        async with maker() as s:
            cid = int(await s.scalar(select(func.max(Call.id))) or 0)
            assert (await s.get(Call, cid)).event_class == "trouble"  # type: ignore[union-attr]
        assert cid not in seen  # a new call, not joined to an earlier one
        seen.add(cid)
        ids[type_] = cid
        if ack is not None:
            await _act(d, cid, "acknowledge", at + timedelta(seconds=ack))
    w.clock.t = NOW
    return ids


async def test_trouble_calls_stay_outside_the_emergency_targets(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path, db_url: str
) -> None:
    ids = await _world_with_trouble(maker, tmp_path, db_url)
    day = Period(S0.date(), S0.date())
    where = reports.ReportScope(None)
    rep = await reports.summary_report(maker, where=where, period=day, targets=Targets(), now=NOW)
    s = rep["summary"]
    assert s["calls"] == 11 and s["graded_calls"] == 8 and s["trouble_calls"] == 3
    # the emergency figures are exactly those without the trouble calls
    assert (s["answer_within_60s_met"], s["answer_within_60s_eligible"], s["answer_within_60s_pct"]) == (
        4,
        7,
        57.14,
    )
    assert s["answer_median_s"] == 45.0 and s["unanswered"] == 2
    assert 100.0 not in rep["answer_times"] and len(rep["answer_times"]) == 6
    # their own target: 1 met (power_loss), 1 missed (low_battery), tamper not yet due
    assert (s["trouble_in_time_met"], s["trouble_in_time_eligible"], s["trouble_in_time_pct"]) == (1, 2, 50.0)
    assert s["trouble_in_time_target_met"] is False and s["trouble_unanswered"] == 2
    assert s["trouble_answer_median_s"] == 100.0

    review = await reports.review_report(maker, where=where, period=day, targets=Targets(), now=NOW)
    reasons = {r["call_id"]: r["reasons"] for r in review["rows"]}
    assert reasons[ids["low_battery"]] == "trouble_late"
    assert ids["tamper"] not in reasons and ids["power_loss"] not in reasons
    assert "answered_late" not in " ".join(v for k, v in reasons.items() if k in ids.values())
    assert len(reasons) == 3  # calls 2 and 5 as before, plus the late low battery

    by_type = await reports.aggregates_report(
        maker, where=where, period=day, by="type", targets=Targets(), now=NOW
    )
    low = next(r for r in by_type["rows"] if r["key"] == "low_battery")
    assert low["graded_calls"] == 0 and low["answer_within_60s_eligible"] == 0
    assert low["trouble_in_time_pct"] == 0.0


async def test_a_longer_trouble_target_moves_the_low_battery_off_the_review_list(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path, db_url: str
) -> None:
    ids = await _world_with_trouble(maker, tmp_path, db_url)
    day = Period(S0.date(), S0.date())
    relaxed = Targets.model_validate({"trouble": {"acknowledge_within_h": 8}})
    review = await reports.review_report(
        maker, where=reports.ReportScope(None), period=day, targets=relaxed, now=NOW
    )
    assert ids["low_battery"] not in {r["call_id"] for r in review["rows"]}
