"""The clock a simulated device lives by, as the simulators use it.

The simulators never make their own clock: whoever runs them (the shell's ``carecall
simulate`` and ``carecall demo``, or a test) passes one in, usually
``carecall.core.clock.Clock`` at the run's ``--speed``, or the demo's catch-up clock.
A device needs nothing of the platform but this shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class SimClock(Protocol):
    """Simulated time: what "now" is, how to wait for it, and how fast it runs."""

    @property
    def speed(self) -> float:
        """Simulated seconds per real second (the run's ``--speed``)."""
        ...

    def now(self) -> datetime: ...

    def now_ms(self) -> int: ...

    async def sleep(self, simulated_seconds: float) -> None: ...

    def hold(self, start: datetime, end: datetime) -> None:
        """Ask for fine time resolution between two simulated moments (a device's alarm is
        a human-scale moment); a clock at a constant speed ignores it."""
        ...
