"""login security and record reads: lockout, token revocation, who read which resident

* ``login_state``: consecutive failed sign-ins, the lock's end, and the token version
  that every token carries (bumped to end all of a user's tokens at once).
* ``revoked_tokens``: tokens signed out before their expiry (by jti).
* ``record_reads``: every read of a resident's personal data (user, resident, route).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from carecall.core.db import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_state",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_until", UTCDateTime(timezone=True), nullable=True),
    )
    op.execute("INSERT INTO login_state (user_id, token_version, failed_logins) SELECT id, 0, 0 FROM users")
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])
    op.create_table(
        "record_reads",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("resident_id", sa.String(64), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_record_reads_at", "record_reads", ["at"])
    op.create_index("ix_record_reads_resident_id", "record_reads", ["resident_id"])


def downgrade() -> None:
    op.drop_index("ix_record_reads_resident_id", table_name="record_reads")
    op.drop_index("ix_record_reads_at", table_name="record_reads")
    op.drop_table("record_reads")
    op.drop_index("ix_revoked_tokens_expires_at", table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    op.drop_table("login_state")
