"""service pages: order and visit notifications in the outbox

A notification is now about a call, a service order (a missed service level) or a missed
welfare visit: ``call_id`` becomes nullable, ``order_id`` and ``visit_id`` are added and a
check keeps exactly one of the three. ``orders.breach_escalated`` lists the breached
levels whose second page (the station holding the order) went out, so several dispatcher
copies send it once.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ONE_SUBJECT = (
    "(call_id IS NOT NULL AND order_id IS NULL AND visit_id IS NULL)"
    " OR (call_id IS NULL AND order_id IS NOT NULL AND visit_id IS NULL)"
    " OR (call_id IS NULL AND order_id IS NULL AND visit_id IS NOT NULL)"
)


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.alter_column("call_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("order_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("visit_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_notifications_order_id_orders"),
            "orders",
            ["order_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_notifications_visit_id_visits"),
            "visits",
            ["visit_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        batch_op.create_index(batch_op.f("ix_notifications_order_id"), ["order_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_notifications_visit_id"), ["visit_id"], unique=False)
        batch_op.create_check_constraint(batch_op.f("ck_notifications_one_subject"), ONE_SUBJECT)
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("breach_escalated", sa.JSON(), server_default="[]", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("breach_escalated")
    op.execute("DELETE FROM notifications WHERE call_id IS NULL")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_notifications_one_subject"), type_="check")
        batch_op.drop_index(batch_op.f("ix_notifications_visit_id"))
        batch_op.drop_index(batch_op.f("ix_notifications_order_id"))
        batch_op.drop_constraint(batch_op.f("fk_notifications_visit_id_visits"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_notifications_order_id_orders"), type_="foreignkey")
        batch_op.drop_column("visit_id")
        batch_op.drop_column("order_id")
        batch_op.alter_column("call_id", existing_type=sa.Integer(), nullable=False)
