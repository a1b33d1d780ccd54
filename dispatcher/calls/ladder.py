"""The contact ladder (the family contacts of dispatcher/family): which of a resident's contacts to tell about a call, and when.

Contacts are tried one at a time in their priority order. The first is told at once;
the next when the one told last has not answered "going" within the timeout, or has
answered "cannot" or "call_me". Once anyone has answered "going", nobody else is told.

"call_me" means the contact wants the station to ring them back: they have not said they
are going, so their turn on the ladder ends at once and the next contact is told (an
unneeded text costs less than a missed one); the station sees the request on the call's
timeline. A contact is told at most once; when every contact has been told the ladder
is exhausted.

Pure: the shell reads who was told (the outbox's ``notify_contact`` rows) and the answers
(``contact_answered`` audit rows) and passes them in with the time. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = ["ADVANCES_AT_ONCE", "STOPS", "LadderDecision", "LadderState", "next_contact"]

# An answer that ends the whole ladder: someone is going.
STOPS = frozenset({"going"})
# Answers that end the contact's turn at once: the next contact is told without waiting.
ADVANCES_AT_ONCE = frozenset({"cannot", "call_me"})


class LadderState(StrEnum):
    tell = "tell"  # tell ``contact_id`` now
    wait = "wait"  # the contact told last still has time, until ``wait_until``
    stopped = "stopped"  # someone answered "going"
    exhausted = "exhausted"  # every contact has been told
    no_contacts = "no_contacts"


@dataclass(frozen=True, slots=True)
class LadderDecision:
    state: LadderState
    contact_id: int | None = None  # for tell: who; for stopped: who is going
    wait_until: datetime | None = None


def next_contact(
    contacts: Sequence[int],
    told: Mapping[int, datetime],
    answers: Mapping[int, str],
    *,
    timeout: timedelta,
    now: datetime,
) -> LadderDecision:
    """Who to tell now, if anyone.

    ``contacts``: the call's contact ids in priority order. ``told``: contact id -> when
    they were told (contacts told before may be missing from ``contacts`` if the list
    changed since). ``answers``: contact id -> their latest answer.
    """
    if timeout <= timedelta(0):
        raise ValueError("timeout must be positive")
    going = [c for c, a in answers.items() if a in STOPS]
    if going:
        first = next((c for c in contacts if c in going), min(going))
        return LadderDecision(LadderState.stopped, contact_id=first)
    if not contacts:
        return LadderDecision(LadderState.no_contacts)
    untold = [c for c in contacts if c not in told]
    if not untold:
        return LadderDecision(LadderState.exhausted)
    if told:
        # the contact whose turn it is: the one told last (ties: the later on the ladder)
        order = {c: i for i, c in enumerate(contacts)}
        last = max(told, key=lambda c: (told[c], order.get(c, -1)))
        if answers.get(last) not in ADVANCES_AT_ONCE:
            due = told[last] + timeout
            if now < due:
                return LadderDecision(LadderState.wait, contact_id=last, wait_until=due)
    return LadderDecision(LadderState.tell, contact_id=untold[0])
