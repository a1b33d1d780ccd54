"""Stall episodes in ``dispatch_stalls``: opened, confirmed, closed and claimed for
announcement with conditional UPDATEs, so every copy of every process can record what it
sees and an episode still starts, is announced and ends once.

A part starts an episode with ``since IS NULL`` in its WHERE clause: whichever copy wins
writes the audit row and tells the admins; the others only confirm it. An episode ends when
nobody has confirmed it for ``hold_s`` (``dispatcher.health.stall.clearable``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.health import stall as st
from dispatcher.health.models import DispatchStall
from dispatcher.health.queries import utc
from dispatcher.health.state import PartView

NOTIFY_RETRY_S = 60.0  # an announcement not confirmed sent is tried again (by any copy) after this


@dataclass(frozen=True)
class Episode:
    key: str
    part: str
    reporter: str | None
    since: datetime
    episode: int
    kind: str
    age_s: float
    limit_s: float
    reason: str
    checked_by: str
    notified: bool

    def view(self) -> PartView:
        return PartView(
            self.part, self.kind, self.age_s, self.limit_s, self.reason, self.reporter, self.since
        )


def _episode(row: DispatchStall) -> Episode:
    assert row.since is not None
    return Episode(
        row.key,
        row.part,
        row.reporter,
        row.since,
        row.episodes,
        row.kind,
        row.age_s,
        row.limit_s,
        row.reason,
        row.checked_by,
        row.notified_at is not None,
    )


@dataclass
class Recording:
    opened: list[Episode]
    cleared: list[tuple[Episode, datetime]]  # the episode and when it ended
    to_announce: list[Episode]  # opened by us now, or left unannounced by another copy
    open_now: list[Episode]


async def record_episodes(
    session: AsyncSession, *, own: Iterable[st.Stall], name: str, hold_s: float, now: datetime
) -> Recording:
    """Open, confirm and close episodes for what copy ``name`` found stalled (``own``), in
    the caller's short transaction (no audit lock). ``now`` is wall-clock time."""
    stalled = {st.episode_key(s.part, name): s for s in own if s.part not in (st.DATABASE, st.MONITOR)}
    opened = await _open_or_confirm(session, stalled, name=name, now=now)
    rows = list((await session.scalars(select(DispatchStall).where(DispatchStall.since.is_not(None)))).all())
    cleared = await _close_unconfirmed(session, rows, stalled, hold_s=hold_s, now=now)
    gone = {ep.key for ep, _ in cleared}
    open_now = [_episode(r) for r in rows if r.key not in gone]
    ours = [ep for ep in open_now if ep.key in opened]
    # announcements another copy claimed and did not confirm (it failed or died)
    others = await _claim_unannounced(session, [ep for ep in open_now if ep.key not in opened], now=now)
    return Recording(opened=ours, cleared=cleared, to_announce=ours + others, open_now=open_now)


async def _open_or_confirm(
    session: AsyncSession, stalled: dict[str, st.Stall], *, name: str, now: datetime
) -> list[str]:
    """Confirm the open episodes of these parts, open the others; the keys we opened."""
    if stalled:
        await session.execute(
            _insert_missing(
                session,
                [
                    {
                        "key": key,
                        "part": s.part,
                        "reporter": name if st.is_loop_part(s.part) else None,
                        "episodes": 0,
                        "kind": "",
                        "age_s": 0.0,
                        "limit_s": 0.0,
                        "reason": "",
                        "checked_by": "",
                    }
                    for key, s in stalled.items()
                ],
            )
        )
    opened: list[str] = []
    for key, s in stalled.items():
        values: dict[str, Any] = {
            "kind": s.kind,
            "age_s": s.age_s,
            "limit_s": s.limit_s,
            "reason": s.reason[:300],
            "checked_at": now,
            "checked_by": name,
        }
        confirmed = await session.execute(
            update(DispatchStall)
            .where(DispatchStall.key == key, DispatchStall.since.is_not(None))
            .values(**values)
        )
        if _count(confirmed):
            continue
        started = await session.execute(
            update(DispatchStall)
            .where(DispatchStall.key == key, DispatchStall.since.is_(None))
            .values(
                **values,
                since=now,
                episodes=DispatchStall.episodes + 1,
                notify_claimed_at=now,
                notified_at=None,
                cleared_at=None,
            )
        )
        if _count(started):
            opened.append(key)
    return opened


async def _close_unconfirmed(
    session: AsyncSession,
    rows: list[DispatchStall],
    stalled: dict[str, st.Stall],
    *,
    hold_s: float,
    now: datetime,
) -> list[tuple[Episode, datetime]]:
    """Close the open episodes nobody confirmed for ``hold_s`` (unless another copy
    confirmed or closed one meanwhile); the episodes we closed."""
    recorded = [
        st.Recorded(r.key, math.inf if r.checked_at is None else (now - utc(r.checked_at)).total_seconds())
        for r in rows
    ]
    to_clear = set(st.clearable(recorded, stalled, hold_s))
    cleared: list[tuple[Episode, datetime]] = []
    cutoff = now - timedelta(seconds=hold_s)
    for r in rows:
        if r.key not in to_clear:
            continue
        ep = _episode(r)
        done = await session.execute(
            update(DispatchStall)
            .where(
                DispatchStall.key == r.key,
                DispatchStall.episodes == ep.episode,
                DispatchStall.since.is_not(None),
                (DispatchStall.checked_at.is_(None)) | (DispatchStall.checked_at < cutoff),
            )
            .values(since=None, cleared_at=now)
            .execution_options(synchronize_session=False)
        )
        if _count(done):
            cleared.append((ep, now))
    return cleared


async def _claim_unannounced(
    session: AsyncSession, episodes: list[Episode], *, now: datetime
) -> list[Episode]:
    """Open episodes nobody announced: those whose announcement was never claimed, or
    claimed more than NOTIFY_RETRY_S ago and not confirmed; the ones we claimed."""
    retry_before = now - timedelta(seconds=NOTIFY_RETRY_S)
    claimed_now: list[Episode] = []
    for ep in episodes:
        if ep.notified:
            continue
        claimed = await session.execute(
            update(DispatchStall)
            .where(
                DispatchStall.key == ep.key,
                DispatchStall.episodes == ep.episode,
                DispatchStall.notified_at.is_(None),
                DispatchStall.notify_claimed_at.is_(None) | (DispatchStall.notify_claimed_at < retry_before),
            )
            .values(notify_claimed_at=now)
            .execution_options(synchronize_session=False)
        )
        if _count(claimed):
            claimed_now.append(ep)
    return claimed_now


async def mark_notified(session: AsyncSession, episodes: Iterable[Episode], *, now: datetime) -> None:
    """The admins were told of these episodes: no copy tells them again."""
    for ep in episodes:
        await session.execute(
            update(DispatchStall)
            .where(DispatchStall.key == ep.key, DispatchStall.episodes == ep.episode)
            .values(notified_at=now)
        )


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _insert_missing(session: AsyncSession, rows: list[dict[str, Any]]) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(DispatchStall).values(rows).on_conflict_do_nothing(index_elements=["key"])
    return sqlite_insert(DispatchStall).values(rows).on_conflict_do_nothing(index_elements=["key"])
