"""Recorded dispatcher stalls.

Schema changes go through Alembic (carecall/core/migrations).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Float,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from carecall.core.db import Base, UTCDateTime


class DispatchStall(Base):
    """Stall episodes of the dispatch pipeline (dispatcher/health/recording.py): one row per watched
    part (per copy for a loop), open while ``since`` is set. Every copy of every process
    updates it with conditional UPDATEs, so an episode starts, is announced to admins and
    ends once, whichever copy saw it."""

    __tablename__ = "dispatch_stalls"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)  # part, or part@copy for a loop
    part: Mapped[str] = mapped_column(String(32))
    reporter: Mapped[str | None] = mapped_column(String(64))  # the copy whose loop it is
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # open episode's start; None = clear
    episodes: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(32), default="")
    age_s: Mapped[float] = mapped_column(Float, default=0.0)
    limit_s: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[str] = mapped_column(String(300), default="")
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last confirmed stalled
    checked_by: Mapped[str] = mapped_column(String(64), default="")
    notify_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
