"""service orders: providers (服务商) and orders (派单)

Providers are the outside service firms (area, hours, kinds, capacity, manager). Orders
are everyday service bookings, kept apart from ``calls`` so that they never enter the
emergency queue; their steps are audit log rows of kinds ``order_*``.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from carecall.core.db import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("radius_km", sa.Float(), nullable=True),
        sa.Column("stations", sa.JSON(), nullable=False),
        sa.Column("hours", sa.String(length=300), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("manager_name", sa.String(length=100), nullable=False),
        sa.Column("manager_phone", sa.String(length=40), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_providers")),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resident_id", sa.String(length=64), nullable=False),
        sa.Column("home_id", sa.String(length=64), nullable=False),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=True),
        sa.Column("assignee_station_id", sa.String(length=64), nullable=True),
        sa.Column("staff_id", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("client_ref", sa.String(length=100), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("booked_for", UTCDateTime(timezone=True), nullable=True),
        sa.Column("request_notes", sa.Text(), nullable=False),
        sa.Column("levels", sa.JSON(), nullable=False),
        sa.Column("price_cny", sa.Float(), nullable=False),
        sa.Column("subsidised", sa.Boolean(), nullable=False),
        sa.Column("route_reasons", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("assigned_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("done_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("done_notes", sa.Text(), nullable=False),
        sa.Column("confirmed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("satisfaction", sa.Integer(), nullable=True),
        sa.Column("not_done", sa.Boolean(), nullable=False),
        sa.Column("confirm_note", sa.Text(), nullable=False),
        sa.Column("closed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=False),
        sa.Column("breached", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignee_station_id"],
            ["stations.id"],
            name=op.f("fk_orders_assignee_station_id_stations"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["home_id"], ["homes.id"], name=op.f("fk_orders_home_id_homes"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_orders_provider_id_providers"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_orders_resident_id_residents"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_orders_staff_id_staff"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["station_id"], ["stations.id"], name=op.f("fk_orders_station_id_stations"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("client_ref", name=op.f("uq_orders_client_ref")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_provider_status", ["provider_id", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_orders_resident_id"), ["resident_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_orders_staff_id"), ["staff_id"], unique=False)
        batch_op.create_index("ix_orders_station_status", ["station_id", "status"], unique=False)
        batch_op.create_index("ix_orders_status_created", ["status", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_status_created")
        batch_op.drop_index("ix_orders_station_status")
        batch_op.drop_index(batch_op.f("ix_orders_staff_id"))
        batch_op.drop_index(batch_op.f("ix_orders_resident_id"))
        batch_op.drop_index("ix_orders_provider_status")

    op.drop_table("orders")
    op.drop_table("providers")
