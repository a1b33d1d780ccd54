"""phones, hand-off facts and per-person channels

Homes gain their fixed line (``phone``) and residents their mobile (``phone``), so an
operator can call back first; residents gain ``medications``, ``allergies`` and
``access_notes``, read out to 120/110/119 in a hand-off. Staff and contacts gain their own
channel order (``channels``, space-separated, empty = the purpose's order).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = ("medications", "allergies", "access_notes")


def upgrade() -> None:
    with op.batch_alter_table("homes") as batch:
        batch.add_column(sa.Column("phone", sa.String(length=40), nullable=False, server_default=""))
    with op.batch_alter_table("residents") as batch:
        batch.add_column(sa.Column("phone", sa.String(length=40), nullable=False, server_default=""))
        for name in _TEXT:
            batch.add_column(sa.Column(name, sa.Text(), nullable=False, server_default=""))
    for table in ("staff", "contacts"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("channels", sa.String(length=100), nullable=False, server_default=""))


def downgrade() -> None:
    for table in ("contacts", "staff"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("channels")
    with op.batch_alter_table("residents") as batch:
        for name in reversed(_TEXT):
            batch.drop_column(name)
        batch.drop_column("phone")
    with op.batch_alter_table("homes") as batch:
        batch.drop_column("phone")
