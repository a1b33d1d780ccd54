"""A clock the test moves by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

from carecall.core.clock import Clock

__all__ = ["ManualClock"]


class ManualClock(Clock):
    def __init__(self, start: datetime) -> None:
        super().__init__(1.0)
        self.t = start

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
