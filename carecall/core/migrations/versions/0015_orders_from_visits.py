"""orders opened from a welfare visit's form

``orders.visit_id`` names the visit whose form opened the order (its ``source`` is then
``visit``); (visit_id, kind) is unique, so a form saved twice never opens two orders of a
kind, and the visit's orders are found through it. A visit deleted with its plan leaves
the order, without the link.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("visit_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_orders_visit_id_visits"), "visits", ["visit_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_unique_constraint(batch_op.f("uq_orders_visit_id"), ["visit_id", "kind"])


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_orders_visit_id"), type_="unique")
        batch_op.drop_constraint(batch_op.f("fk_orders_visit_id_visits"), type_="foreignkey")
        batch_op.drop_column("visit_id")
