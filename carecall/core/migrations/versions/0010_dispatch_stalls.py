"""dispatch stall episodes; an index over pending notifications

``dispatch_stalls`` holds the stall alarm's episodes (dispatcher/health/recording.py): one row per
watched part, open while ``since`` is set, so every copy of every process agrees on when
an episode starts and ends and admins are told once.

The stall monitor asks every few seconds for the oldest pending notification per channel.
The only index was on ``next_attempt_at`` alone, which PostgreSQL would walk through every
sent notification (all of history) to find the first pending one; a partial index over
the pending rows stays as small as the outbox's backlog (SQLite supports partial indexes
too).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from carecall.core.db import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispatch_stalls",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("part", sa.String(length=32), nullable=False),
        sa.Column("reporter", sa.String(length=64), nullable=True),
        sa.Column("since", UTCDateTime(timezone=True), nullable=True),
        sa.Column("episodes", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("age_s", sa.Float(), nullable=False),
        sa.Column("limit_s", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("checked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("checked_by", sa.String(length=64), nullable=False),
        sa.Column("notify_claimed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("notified_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("cleared_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_dispatch_stalls")),
    )
    op.create_index(
        "ix_notifications_pending",
        "notifications",
        ["channel", "next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_pending", table_name="notifications")
    op.drop_table("dispatch_stalls")
