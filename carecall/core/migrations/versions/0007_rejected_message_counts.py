"""rejected messages: one row may stand for many (rate-limited reject path)

The gateway stores the first rejections of a device one by one, then, past a per-device
rate, only a summary row per (device, reason) with how many messages it stands for. The
new ``messages`` column is that number (1 for an ordinary row), so counts stay exact with
``SUM(messages)`` while a flood of junk costs a row a second, not a row a message.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rejected_messages") as batch:
        batch.add_column(sa.Column("messages", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("rejected_messages") as batch:
        batch.drop_column("messages")
