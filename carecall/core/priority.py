"""The CPU priority of each platform process: the alarm lane first when cores are short.

On a crowded host the kernel shares the CPU evenly between runnable processes, so with
the lanes apart an alarm waits for a core behind the readings lane, a report query or any
other process as often as it gets one. Measured on the 2-core test machine
(docs/performance.md, "CPU priorities: the alarm lane first"): the events lane waited for
a core for about 29 % of the time it ran at equal priority, about 11 % at the priorities
below (medians of three runs each way).

``nice_for`` decides (pure); ``apply_nice`` sets it on every thread of this process (on
Linux a nice value belongs to a thread; threads started later inherit the caller's).
Raising a priority (a negative nice) needs ``CAP_SYS_NICE`` or a ``RLIMIT_NICE`` that
allows it: systemd's ``Nice=`` gives it (docs/operations.md). Without it the process says
so once (``process.priority_not_raised``) and runs at the priority it was started with;
lowering one (the readings lane) is always allowed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import structlog

log = structlog.get_logger("carecall.priority")

Role = Literal["gateway-all", "gateway-events", "gateway-readings", "dispatcher", "serve"]

# nice values under CARECALL_CPU_PRIORITY=auto: lower runs first. The alarm lane's first
# hop (it stores and acks every alarm) highest; the dispatcher (events → calls, timers,
# the opening alert) and the web server (the consoles' feed) next; the readings last, so
# under overload they are the ones that wait, and past their queue's bounds are merged
# and shed (counted), never the alarms.
AUTO_NICE: dict[str, int] = {
    "gateway-all": -10,
    "gateway-events": -10,
    "dispatcher": -5,
    "serve": -5,
    "gateway-readings": 10,
}


_ROLES: dict[tuple[str, str], Role] = {
    ("gateway", "all"): "gateway-all",
    ("gateway", "events"): "gateway-events",
    ("gateway", "readings"): "gateway-readings",
    ("dispatcher", ""): "dispatcher",
    ("serve", ""): "serve",
}


def role_of(part: str, lane: str = "all") -> Role:
    """The role of a ``carecall gateway`` (by its lane), ``dispatcher`` or ``serve``."""
    role = _ROLES.get((part, lane if part == "gateway" else ""))
    if role is None:
        raise ValueError(f"no CPU priority for {part!r} (lane {lane!r})")
    return role


def nice_for(role: Role, setting: str) -> int | None:
    """The nice value ``setting`` asks for this role: ``auto`` (the role's, AUTO_NICE),
    ``off`` (None: leave it as started) or a number from -20 to 19 for this process."""
    if setting == "off":
        return None
    if setting == "auto":
        return AUTO_NICE[role]
    value = int(setting)  # the setting's validator admits only numbers in range
    if not -20 <= value <= 19:
        raise ValueError(f"nice must be from -20 to 19, got {value}")
    return value


@dataclass(frozen=True)
class Applied:
    wanted: int | None
    now: int  # this thread's nice value afterwards
    raised: bool  # False when a raise was refused (no CAP_SYS_NICE / RLIMIT_NICE)


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: this thread only
        return [0]


def apply_nice(role: Role, setting: str) -> Applied:
    """Set this process's threads to the role's nice value, as far as allowed; log it."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    wanted = nice_for(role, setting)
    if wanted is None or wanted == current:
        return Applied(wanted, current, True)
    refused = False
    for tid in _threads():
        try:
            os.setpriority(os.PRIO_PROCESS, tid, wanted)
        except PermissionError:
            refused = True
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    now = os.getpriority(os.PRIO_PROCESS, 0)
    if refused:
        log.warning(
            "process.priority_not_raised",
            role=role,
            wanted=wanted,
            nice=now,
            hint="give the process CAP_SYS_NICE or run it under systemd with Nice= "
            "(docs/operations.md); CARECALL_CPU_PRIORITY=off silences this",
        )
    else:
        log.info("process.priority", role=role, nice=now)
    return Applied(wanted, now, not refused)
