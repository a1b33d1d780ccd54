"""The call lifecycle: which status a call is in, which actions it accepts, and where
each action takes it. Pure: no clock, no database; the actions modules apply what this
table decides (dispatcher/calls/actions.py), the intake opens calls in an initial status
(dispatcher/calls/intake.py).

A call opens ``assigned`` (a station took it) or ``open`` (nobody could be found), climbs
through acknowledged → dispatched → en route → on scene, and ends ``resolved`` or
``cancelled``. Closed calls accept a note and nothing else. Sending more responders
(``dispatch``) to a call whose responders are already on their way keeps its status.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CLOSED_STATUSES",
    "INITIAL_STATUSES",
    "OPEN_STATUSES",
    "RESPONDERS_SENT",
    "CallAction",
    "CallStatus",
    "Refusal",
    "acknowledged",
    "allowed_from",
    "device_state_after",
    "is_closed",
    "is_open",
    "next_status",
    "on_scene",
    "resident_may_cancel",
]


class CallStatus(StrEnum):
    open = "open"
    assigned = "assigned"
    acknowledged = "acknowledged"
    dispatched = "dispatched"
    en_route = "en_route"
    on_scene = "on_scene"
    resolved = "resolved"
    cancelled = "cancelled"


class CallAction(StrEnum):
    """What an operator does to a call (the last part of ``POST /api/v1/calls/{id}/{action}``)."""

    acknowledge = "acknowledge"
    dispatch = "dispatch"
    en_route = "en-route"
    arrive = "arrive"
    resolve = "resolve"
    cancel = "cancel"
    escalate = "escalate"
    note = "note"
    handoff = "handoff"
    # the operator rang the resident back (home line or mobile); the outcome says how it went
    callback = "callback"


OPEN_STATUSES: tuple[CallStatus, ...] = (
    CallStatus.open,
    CallStatus.assigned,
    CallStatus.acknowledged,
    CallStatus.dispatched,
    CallStatus.en_route,
    CallStatus.on_scene,
)
CLOSED_STATUSES: tuple[CallStatus, ...] = (CallStatus.resolved, CallStatus.cancelled)
# the statuses a call opens in: a station took it, or nobody could be found
INITIAL_STATUSES: tuple[CallStatus, ...] = (CallStatus.assigned, CallStatus.open)
# someone is on the way or there: a resident's cancel is only noted, the door is still knocked on
RESPONDERS_SENT: frozenset[CallStatus] = frozenset(
    {CallStatus.dispatched, CallStatus.en_route, CallStatus.on_scene}
)
_NOT_ACKNOWLEDGED = frozenset({CallStatus.open, CallStatus.assigned})


def _stay(statuses: tuple[CallStatus, ...]) -> dict[CallStatus, CallStatus]:
    return {s: s for s in statuses}


def _to(statuses: tuple[CallStatus, ...], target: CallStatus) -> dict[CallStatus, CallStatus]:
    return dict.fromkeys(statuses, target)


# action -> {status the call may be in: the status it is in afterwards}; a status missing
# from an action's row refuses the action
_TABLE: dict[CallAction, dict[CallStatus, CallStatus]] = {
    CallAction.acknowledge: _to((CallStatus.open, CallStatus.assigned), CallStatus.acknowledged),
    CallAction.dispatch: {
        **_to((CallStatus.open, CallStatus.assigned, CallStatus.acknowledged), CallStatus.dispatched),
        # more responders for a call already under way: its status stays
        **_stay((CallStatus.dispatched, CallStatus.en_route, CallStatus.on_scene)),
    },
    CallAction.en_route: _to((CallStatus.dispatched,), CallStatus.en_route),
    CallAction.arrive: _to((CallStatus.dispatched, CallStatus.en_route), CallStatus.on_scene),
    CallAction.resolve: _to(OPEN_STATUSES, CallStatus.resolved),
    CallAction.cancel: _to(OPEN_STATUSES, CallStatus.cancelled),
    CallAction.escalate: _stay(OPEN_STATUSES),
    CallAction.note: _stay((*OPEN_STATUSES, *CLOSED_STATUSES)),
    CallAction.handoff: _stay(OPEN_STATUSES),
    CallAction.callback: _stay(OPEN_STATUSES),
}

# the state a device's display shows after the action (no entry: the device is not told)
_DEVICE_STATE: dict[CallAction, str] = {
    CallAction.en_route: "en_route",
    CallAction.arrive: "on_scene",
    CallAction.resolve: "resolved",
    CallAction.cancel: "resolved",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """The action cannot be taken on a call in this status."""

    action: CallAction
    status: CallStatus

    @property
    def message(self) -> str:
        return f"cannot {self.action.value} a call that is {self.status.value}"


def allowed_from(action: CallAction) -> frozenset[CallStatus]:
    """The statuses in which ``action`` is accepted."""
    return frozenset(_TABLE[action])


def next_status(status: CallStatus, action: CallAction) -> CallStatus | Refusal:
    """The status after ``action`` on a call in ``status``, or why it is refused."""
    after = _TABLE[action].get(status)
    return Refusal(action, status) if after is None else after


def device_state_after(action: CallAction) -> str | None:
    """What the call's devices are told after the action, if anything."""
    return _DEVICE_STATE.get(action)


def is_open(status: CallStatus) -> bool:
    return status in OPEN_STATUSES


def is_closed(status: CallStatus) -> bool:
    return status in CLOSED_STATUSES


def acknowledged(status: CallStatus) -> bool:
    """Someone has taken the call up (explicitly, or by sending a responder)."""
    return status not in _NOT_ACKNOWLEDGED


def on_scene(status: CallStatus) -> bool:
    """A responder is (or was, for a resolved call) at the door."""
    return status in (CallStatus.on_scene, CallStatus.resolved)


def resident_may_cancel(status: CallStatus) -> bool:
    """A resident's cancel closes the call only while nobody has been sent yet."""
    return is_open(status) and status not in RESPONDERS_SENT
