"""Pages: one row per person paged for a call, with its channel, delivery and answer.

Schema changes go through Alembic (carecall/core/migrations).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from carecall.core.db import ID, Base, UTCDateTime


class Page(Base):
    """A person paged for a call at one station (dispatcher/paging/policy.py decides who)."""

    __tablename__ = "pages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(Integer, ForeignKey("calls.id", ondelete="RESTRICT"))
    station_id: Mapped[str] = mapped_column(ID, ForeignKey("stations.id", ondelete="RESTRICT"))
    staff_id: Mapped[str] = mapped_column(ID, ForeignKey("staff.id", ondelete="RESTRICT"), index=True)
    channel: Mapped[str] = mapped_column(String(16), default="app")  # app sms voice robot email
    paged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # pending accepted declined timed_out withdrawn (dispatcher.paging.policy.PageOutcome)
    outcome: Mapped[str] = mapped_column(String(16), default="pending")
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(200), default="")  # a decline's reason
    # delivery of the page itself: pending delivered failed (the channel's receipt)
    delivery: Mapped[str] = mapped_column(String(16), default="pending")
    receipt: Mapped[str] = mapped_column(String(200), default="")

    __table_args__ = (
        Index("ix_pages_call_station", "call_id", "station_id"),
        Index("ix_pages_pending", "outcome", "paged_at"),
    )
