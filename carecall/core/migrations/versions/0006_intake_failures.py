"""intake failures: events and timers whose handling failed, counted and set aside

A poison event (or a timer whose firing keeps failing) is retried a bounded number of
times, counted here so the bound holds across dispatcher copies and restarts, then set
aside for operators ("could not be processed") while everything else keeps flowing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from carecall.core.db import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intake_failures",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("first_failed_at", UTCDateTime(), nullable=False),
        sa.Column("last_failed_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("set_aside_at", UTCDateTime(), nullable=True),
        sa.Column("failed_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("kind", "ref", name=op.f("pk_intake_failures")),
    )
    op.create_index("ix_intake_failures_due", "intake_failures", ["kind", "set_aside_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_intake_failures_due", table_name="intake_failures")
    op.drop_table("intake_failures")
