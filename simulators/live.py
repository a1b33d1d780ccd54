"""Progress bars and a live summary for ``carecall simulate``, on stderr.

On a terminal: ``rich`` bars for time, connections and the message budget, and a table
of what the platform has done so far (refreshed a few times a second). Anywhere else (a
CI log, a pipe): one plain line every ``plain_every_s`` seconds, so a log stays readable
and a run is still visibly alive. stdout is left to the final JSON report.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from simulators.fleet import FleetStats


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def plain_line(st: FleetStats) -> str:
    """One line with every live figure; also what a non-terminal sees."""
    return (
        f"t={st.elapsed_s:.0f}/{st.planned_s:.0f}s conn {st.connections_online}/{st.connections_planned}"
        f" load {st.load_devices} | msgs {st.messages} ({st.msgs_per_s:.0f}/s)"
        f" events {st.events_sent} acked {st.events_acked} acks {st.acks_received}"
        f" | ack p50/p99 ms conn {_ms(st.conn_ack_p50_ms)}/{_ms(st.conn_ack_p99_ms)}"
        f" load {_ms(st.load_ack_p50_ms)}/{_ms(st.load_ack_p99_ms)}"
        f" | resends {st.resends} offline {st.offline_devices}"
    )


class LiveSummary:
    """Context manager fed with ``FleetStats``; picks rich or plain output by the stream."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        rich: bool | None = None,
        plain_every_s: float = 5.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.rich = self.stream.isatty() if rich is None else rich
        self.plain_every_s = plain_every_s
        self._last_plain = 0.0
        self._live: Live | None = None
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self.last: FleetStats | None = None

    def __enter__(self) -> LiveSummary:
        if self.rich:
            console = Console(file=self.stream)
            self._progress = Progress(
                TextColumn("{task.description:<12}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            self._live = Live(self._render(), console=console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None
        elif self.last is not None:
            self._write_plain(self.last)

    def say(self, message: str) -> None:
        """A one-off line (mode chosen, budget spent) above the bars."""
        if self._live is not None:
            self._live.console.print(message)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def update(self, st: FleetStats) -> None:
        self.last = st
        if self._live is None:
            now = time.monotonic()
            if now - self._last_plain >= self.plain_every_s:
                self._last_plain = now
                self._write_plain(st)
            return
        assert self._progress is not None
        bars = {
            "time (s)": (min(st.elapsed_s, st.planned_s), st.planned_s),
            "connections": (st.connections_online, st.connections_planned),
            "msg budget": (st.messages, st.max_messages),
        }
        for name, (done, total) in bars.items():
            if name == "connections" and not st.connections_planned:
                continue
            if name not in self._tasks:
                self._tasks[name] = self._progress.add_task(name, total=total)
            self._progress.update(self._tasks[name], completed=done, total=total)
        self._live.update(self._render())

    def _write_plain(self, st: FleetStats) -> None:
        self.stream.write(plain_line(st) + "\n")
        self.stream.flush()

    def _render(self) -> Group:
        """The bars, then three short lines: they fit an 80-column terminal."""
        st = self.last
        lines: list[Text] = []
        if st is not None:
            lines = [
                Text(
                    f"devices {st.devices} ({st.connections_planned} own connection, {st.load_devices} load mode)"
                    f"  online {st.connections_online}  offline {st.offline_devices}"
                ),
                Text(
                    f"msgs {st.messages} ({st.msgs_per_s:.0f}/s)  events {st.events_sent}  acked {st.events_acked}"
                    f"  acks {st.acks_received}  resends {st.resends}"
                ),
                Text(
                    f"ack p50/p99 ms so far: conn {_ms(st.conn_ack_p50_ms)}/{_ms(st.conn_ack_p99_ms)}"
                    f"  load {_ms(st.load_ack_p50_ms)}/{_ms(st.load_ack_p99_ms)}"
                ),
            ]
        parts: list[Progress | Text] = [*lines]
        if self._progress is not None:
            parts.insert(0, self._progress)
        return Group(*parts)
