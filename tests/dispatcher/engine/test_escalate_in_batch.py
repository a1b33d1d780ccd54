"""An escalation inside a timer pass (dispatcher/calls/actions.py ``escalate``): the call's
row moves up the tree, the loaded call object says the same without the ORM evaluating
the UPDATE against every object of the pass, and the audit row names where it came from."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import bulk_persistence

from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.calls.models import Call
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.notifiers import LogNotifier
from tests.dispatcher.engine.support import T0, ManualClock
from tests.dispatcher.engine.test_timer_batch import _storm


async def test_a_pass_escalates_its_calls_without_evaluating_each_update_against_the_session(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, clock, _ = setup
    calls = await _storm(maker, d)
    async with maker() as s:
        before = {c.id: (c.station_id, c.version) for c in await s.scalars(select(Call))}
    evaluated: list[Any] = []
    # SQLAlchemy's "evaluate" synchronization: the UPDATE's criteria against each object
    state = bulk_persistence._BulkUDCompileState
    original = state._get_matched_objects_on_criteria.__func__  # type: ignore[attr-defined]

    def spy(cls: Any, *args: Any, **kw: Any) -> Any:
        evaluated.append(args)
        return original(cls, *args, **kw)

    monkeypatch.setattr(state, "_get_matched_objects_on_criteria", classmethod(spy))
    # the emergency policy: the street centre takes over after 60 s without an acknowledgement
    for at in range(0, 65, 5):
        clock.advance(at - (clock.now() - T0).total_seconds())
        while await d.timers_once():
            pass
    async with maker() as s:
        after = {c.id: c for c in await s.scalars(select(Call))}
        moves = [
            r.detail
            for r in await s.scalars(
                select(AuditRow).where(AuditRow.kind == "escalated").order_by(AuditRow.seq)
            )
        ]
    assert (await verify_log(maker)).ok
    assert len(moves) == len(calls)
    for cid, (station, version) in before.items():
        call = after[cid]
        assert call.escalation_level == 1 and call.tier == "street" and call.station_id != station
        assert call.version > version
        [move] = [
            m for m in moves if m["to_station_id"] == call.station_id and m["from_station_id"] == station
        ][:1]
        assert move["to"] == "street"
    assert evaluated == []  # no UPDATE of the pass was evaluated object by object
