"""audit log: covering indexes for the oversight reports

A month's report over 100,000 calls read 170 MB of audit rows (hashes and JSON details
included) to use a few columns. Covering indexes give PostgreSQL index-only scans: the
calls that started in the window from (kind, at) INCLUDE (call_id), every call's moments
from (call_id, kind, at) INCLUDE (actor, station_id). They replace the single-column
indexes on call_id and kind, which are their prefixes, so the dispatcher's appends keep
the same number of indexes to maintain. SQLite has no INCLUDE: there the key columns
alone are indexed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_audit_log_call_marks",
        "audit_log",
        ["call_id", "kind", "at"],
        postgresql_include=["actor", "station_id"],
    )
    op.create_index("ix_audit_log_kind_at", "audit_log", ["kind", "at"], postgresql_include=["call_id"])
    op.drop_index("ix_audit_log_call_id", table_name="audit_log")
    op.drop_index("ix_audit_log_kind", table_name="audit_log")


def downgrade() -> None:
    op.create_index("ix_audit_log_kind", "audit_log", ["kind"])
    op.create_index("ix_audit_log_call_id", "audit_log", ["call_id"])
    op.drop_index("ix_audit_log_kind_at", table_name="audit_log")
    op.drop_index("ix_audit_log_call_marks", table_name="audit_log")
