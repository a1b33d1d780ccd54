"""The visits loop: plans → due visits, open visits → late and missed, missed → escalated.

Every ``generate_every_s`` (config/visits.yaml) a round syncs the plans, generates the
visits now due, moves open visits past their due time to late or missed (one short
transaction), then escalates missed visits (a second transaction that takes the audit
chain's lock first, like every writer of audit rows) and queues their pages in the
same transaction (outbox rows the dispatchers deliver and retry). Several copies may run it: plans and
visits are inserted on unique keys, status changes and escalations are conditional
updates (dispatcher.visits.generation). Each completed round is the ``visits`` heartbeat
the stall monitor watches (dispatcher.health.stall.LOOPS).
"""

from __future__ import annotations

import structlog

from dispatcher.engine.base import DispatcherState
from dispatcher.visits import generation
from dispatcher.visits.config_file import load_visit_rules
from dispatcher.visits.rules import VisitRules

log = structlog.get_logger("carecall.dispatcher")


class VisitsLoop(DispatcherState):
    # the policy; read from config/visits.yaml on the first round unless set before
    visit_rules: VisitRules | None = None

    def _rules(self) -> VisitRules:
        if self.visit_rules is None:
            self.visit_rules = load_visit_rules()
        return self.visit_rules

    async def visits_once(self) -> int:
        """One round; returns 0 (the loop then waits ``generate_every_s``)."""
        rules = self._rules()
        now = self.clock.now()
        async with self.maker() as session, session.begin():
            plans = await generation.sync_plans(session, rules=rules, now=now)
            made = await generation.generate_visits(session, rules=rules, now=now)
            moved = await generation.refresh_statuses(session, rules=rules, now=now)
        async with self.maker() as session, session.begin():
            escalated = await generation.escalate_missed(
                session, rules=rules, now=now, actor=f"{self.name}:visits", channel=self.ctx.notifier_channel
            )
        if escalated:
            self._wake_outbox.set()  # the pages to the station's and the street's managers
        if plans or made or moved or escalated:
            log.info("visits.round", plans=plans, visits=made, status_changes=moved, escalations=escalated)
        return 0
