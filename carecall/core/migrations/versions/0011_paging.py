"""paging a person: pages, a busy flag on staff, and the responder role

``pages`` holds one row per person paged for a call (dispatcher/paging): the channel, the
delivery receipt and the answer (accepted, declined with a reason, timed out, withdrawn
when someone else accepted). ``staff.busy`` is a responder's own "busy" availability
beside ``on_duty``. Users gain the ``responder`` role (bound to a staff row).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from carecall.core.db import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ROLES = "role in ('operator','supervisor','admin')"
NEW_ROLES = "role in ('operator','supervisor','admin','responder')"


def upgrade() -> None:
    op.create_table(
        "pages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("paged_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("answered_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("delivery", sa.String(length=16), nullable=False),
        sa.Column("receipt", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name=op.f("fk_pages_call_id_calls"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["station_id"], ["stations.id"], name=op.f("fk_pages_station_id_stations"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_pages_staff_id_staff"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pages")),
    )
    op.create_index("ix_pages_call_station", "pages", ["call_id", "station_id"])
    op.create_index("ix_pages_pending", "pages", ["outcome", "paged_at"])
    op.create_index(op.f("ix_pages_staff_id"), "pages", ["staff_id"])
    with op.batch_alter_table("staff") as batch:
        batch.add_column(sa.Column("busy", sa.Boolean(), nullable=False, server_default=sa.false()))
    _replace_role_check(NEW_ROLES)


def _replace_role_check(condition: str) -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.create_check_constraint(op.f("ck_users_role"), condition)


def downgrade() -> None:
    _replace_role_check(OLD_ROLES)
    with op.batch_alter_table("staff") as batch:
        batch.drop_column("busy")
    op.drop_index(op.f("ix_pages_staff_id"), table_name="pages")
    op.drop_index("ix_pages_pending", table_name="pages")
    op.drop_index("ix_pages_call_station", table_name="pages")
    op.drop_table("pages")
