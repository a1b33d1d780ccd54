"""What a process knows of dispatch health, between its monitor's checks: ready or still
starting, and the stalled parts as /healthz, the console and the admins see them. Read by
the health views (dispatcher.health.views) without a query per request."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dispatcher.health import stall as st


@dataclass(frozen=True)
class PartView:
    """One stalled part as /healthz, the console and the admins see it."""

    part: str
    kind: str
    age_s: float
    limit_s: float
    reason: str
    reporter: str | None = None  # the copy whose loop it is (loops only)
    since: datetime | None = None  # when the episode started (once recorded)

    def as_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "kind": self.kind,
            "age_s": round(self.age_s, 1),
            "limit_s": self.limit_s,
            "reason": self.reason,
            "reporter": self.reporter,
            "since": self.since.isoformat() if self.since else None,
        }


def view_of(stall: st.Stall, reporter: str) -> PartView:
    return PartView(
        stall.part,
        stall.kind,
        stall.age_s,
        stall.limit_s,
        stall.reason,
        reporter if st.is_loop_part(stall.part) else None,
    )


class DispatchHealth:
    """What this process knows: ready or still starting, and the stalled parts from its
    monitor's last check. Read by /healthz and the console endpoint (no query per request)."""

    def __init__(self, *, ready: bool = True, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ready = ready
        self._mono = monotonic
        self._parts: list[PartView] = []
        self._checked: float | None = None
        self._checked_wall: datetime | None = None
        self._watch_started: float | None = None
        self._silent_after_s: float | None = None

    def watched(self, silent_after_s: float) -> None:
        """A monitor feeds this state: it must report within ``silent_after_s``."""
        self._watch_started = self._mono()
        self._silent_after_s = silent_after_s

    def publish(self, parts: Iterable[PartView]) -> None:
        self._parts = list(parts)
        self._checked = self._mono()
        self._checked_wall = datetime.now(UTC)

    @property
    def checked_at(self) -> datetime | None:
        return self._checked_wall

    def stalled(self) -> list[PartView]:
        parts = list(self._parts)
        if self._silent_after_s is not None and self._watch_started is not None:
            now = self._mono()
            silent = st.monitor_silent(
                None if self._checked is None else now - self._checked,
                now - self._watch_started,
                self._silent_after_s,
            )
            if silent is not None:
                parts.append(view_of(silent, ""))
        return parts
