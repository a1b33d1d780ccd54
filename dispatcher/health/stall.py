"""The dead man's switch over the dispatch pipeline, as pure decisions.

What is measured (by ``dispatcher.health.monitor``, from the database and the loops' heartbeats)
comes in as an :class:`Observation`; which parts are stalled comes out as a list of
:class:`Stall`. No I/O here: the same facts always give the same answer.

Parts:

- ``intake`` — a stored device event not taken into ``event_intake`` (no call decision);
- ``timers`` — an escalation timer past its due time and still ``pending``;
- ``acks`` — a device ack (``notifications``, channel ``mqtt``) still pending: devices do
  not hear ``assigned``/``en_route``/…;
- ``notifications`` — a notification to people still pending past its next attempt;
- ``loop:intake``, ``loop:timers``, ``loop:outbox``, ``loop:watchdog`` — a dispatcher loop
  of this process whose last completed iteration is too old (it hangs or keeps failing);
- ``database`` — the database could not be asked at all.

An episode lasts while anyone still reports the part stalled: :func:`clearable` says when a
recorded episode may be closed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from config.settings import DISPATCHER_LOOPS

INTAKE = "intake"
TIMERS = "timers"
ACKS = "acks"
NOTIFICATIONS = "notifications"
DATABASE = "database"
MONITOR = "monitor"
LOOPS = DISPATCHER_LOOPS  # config/settings.py: which of them a copy runs is a setting
# loops that wait long between rounds by design (watchdog 30 s, visits up to 60 s)
SLOW_LOOPS = ("watchdog", "visits", "order_levels")
LOOP_PREFIX = "loop:"

# the parts measured from the database (the record of truth: every copy sees the same)
DB_PARTS = (INTAKE, TIMERS, ACKS, NOTIFICATIONS)


def loop_part(loop: str) -> str:
    return f"{LOOP_PREFIX}{loop}"


def is_loop_part(part: str) -> bool:
    return part.startswith(LOOP_PREFIX)


@dataclass(frozen=True)
class Thresholds:
    """Seconds (real time) a part may lag before it counts as stalled."""

    intake_s: float = 15.0
    timers_s: float = 10.0
    acks_s: float = 30.0
    notifications_s: float = 30.0
    loop_s: float = 30.0
    watchdog_loop_s: float = 120.0

    def loop_limit(self, loop: str) -> float:
        return self.watchdog_loop_s if loop in SLOW_LOOPS else self.loop_s


@dataclass(frozen=True)
class Observation:
    """Oldest lags in real seconds; ``None`` = nothing waiting (or not measured).

    ``intake_wait_s``: the oldest stored event not yet taken, since it was received.
    ``timer_late_s``: the oldest pending timer, since it fell due.
    ``ack_wait_s``: the oldest pending device ack, since it was queued.
    ``notification_late_s``: the oldest pending notification, since its attempt fell due.
    ``loop_idle_s``: per loop of this process, since its last completed iteration.
    ``database_error``: the database could not be asked (the lags above are then unknown).
    """

    intake_wait_s: float | None = None
    timer_late_s: float | None = None
    ack_wait_s: float | None = None
    notification_late_s: float | None = None
    loop_idle_s: Mapping[str, float] = field(default_factory=dict)
    database_error: str | None = None


@dataclass(frozen=True)
class Stall:
    part: str
    kind: str  # machine-readable: event_waiting, timer_late, ack_waiting, …
    age_s: float
    limit_s: float
    reason: str  # one English sentence for logs, audit rows and admins


def _fmt(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def find_stalls(obs: Observation, limits: Thresholds) -> list[Stall]:
    """Every stalled part, database parts first, then loops in a fixed order."""
    out: list[Stall] = []
    if obs.database_error is not None:
        out.append(
            Stall(
                DATABASE,
                "database_unreachable",
                0.0,
                0.0,
                f"the database cannot be asked: {obs.database_error}"[:300],
            )
        )
    else:
        checks = (
            (
                INTAKE,
                "event_waiting",
                obs.intake_wait_s,
                limits.intake_s,
                "a stored event has waited {age} to become a call",
            ),
            (TIMERS, "timer_late", obs.timer_late_s, limits.timers_s, "an escalation timer is {age} overdue"),
            (ACKS, "ack_waiting", obs.ack_wait_s, limits.acks_s, "a device ack has waited {age} to be sent"),
            (
                NOTIFICATIONS,
                "notification_late",
                obs.notification_late_s,
                limits.notifications_s,
                "a notification is {age} overdue",
            ),
        )
        for part, kind, age, limit, text in checks:
            if age is not None and age > limit:
                out.append(
                    Stall(part, kind, age, limit, f"{text.format(age=_fmt(age))} (limit {_fmt(limit)})")
                )
    for loop in sorted(obs.loop_idle_s, key=lambda n: (LOOPS.index(n) if n in LOOPS else len(LOOPS), n)):
        idle = obs.loop_idle_s[loop]
        limit = limits.loop_limit(loop)
        if idle > limit:
            out.append(
                Stall(
                    loop_part(loop),
                    "loop_idle",
                    idle,
                    limit,
                    f"the dispatcher's {loop} loop has not completed a round for {_fmt(idle)} (limit {_fmt(limit)})",
                )
            )
    return out


def monitor_silent(checked_ago_s: float | None, started_ago_s: float, limit_s: float) -> Stall | None:
    """The monitor itself: no completed check for ``limit_s`` (or none at all once
    ``limit_s`` has passed since it started) means nobody is watching."""
    ago = checked_ago_s if checked_ago_s is not None else started_ago_s
    if ago <= limit_s:
        return None
    return Stall(
        MONITOR,
        "monitor_silent",
        ago,
        limit_s,
        f"the stall monitor has not completed a check for {_fmt(ago)} (limit {_fmt(limit_s)})",
    )


@dataclass(frozen=True)
class Recorded:
    """An open episode as stored: which part, reported by which copy (loops only), and
    how many seconds ago someone last confirmed it."""

    key: str
    confirmed_ago_s: float


def clearable(open_episodes: Iterable[Recorded], still_stalled: Iterable[str], hold_s: float) -> list[str]:
    """Keys of open episodes to close: nobody (this copy included) confirmed them for
    ``hold_s``. One copy seeing a part healthy does not close it while another still sees
    it stalled, so copies that disagree at the edge cannot make it flap."""
    mine = set(still_stalled)
    return sorted(r.key for r in open_episodes if r.key not in mine and r.confirmed_ago_s > hold_s)


def episode_key(part: str, reporter: str) -> str:
    """Database parts are one episode whoever sees them; a loop belongs to its copy."""
    return f"{part}@{reporter}" if is_loop_part(part) else part
