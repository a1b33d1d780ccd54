"""welfare visits: residents' special-difficulty categories, visit plans and visits

``resident_categories`` holds each resident's special-difficulty groups (living alone,
empty-nest, left-behind, disabled, severely handicapped, lost only child);
``visit_plans`` a resident's standing reasons to be visited (a category, a risk flag or
one call's follow-up); ``visits`` one row per plan and period (unique, so generation in
several dispatcher copies never doubles a visit) with the visitor's check-in and form.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from carecall.core.db import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "resident_categories",
        sa.Column("resident_id", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_resident_categories_resident_id_residents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("resident_id", "category", name=op.f("pk_resident_categories")),
    )
    op.create_table(
        "visit_plans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("resident_id", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=48), nullable=False),
        sa.Column("frequency", sa.String(length=16), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=True),
        sa.Column("anchor", UTCDateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("frequency in ('monthly','weekly','once')", name=op.f("ck_visit_plans_frequency")),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_visit_plans_resident_id_residents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_plans")),
        sa.UniqueConstraint("key", name=op.f("uq_visit_plans_key")),
    )
    with op.batch_alter_table("visit_plans", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visit_plans_resident_id"), ["resident_id"], unique=False)

    op.create_table(
        "visits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("resident_id", sa.String(length=64), nullable=False),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.String(length=64), nullable=True),
        sa.Column("window_start", UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("checkin_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("checkin_lat", sa.Float(), nullable=True),
        sa.Column("checkin_lon", sa.Float(), nullable=True),
        sa.Column("done_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("done_by", sa.String(length=100), nullable=True),
        sa.Column("seen", sa.String(length=16), nullable=True),
        sa.Column("health", sa.Text(), nullable=False),
        sa.Column("living_conditions", sa.Text(), nullable=False),
        sa.Column("needs_found", sa.Text(), nullable=False),
        sa.Column("follow_up_needed", sa.Boolean(), nullable=False),
        sa.Column("requested_service_kind", sa.String(length=32), nullable=True),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("cancel_reason", sa.String(length=200), nullable=True),
        sa.CheckConstraint("seen is null or seen in ('in_person','by_phone')", name=op.f("ck_visits_seen")),
        sa.CheckConstraint(
            "status in ('due','late','missed','done','cancelled')", name=op.f("ck_visits_status")
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["visit_plans.id"], name=op.f("fk_visits_plan_id_visit_plans"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_visits_resident_id_residents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_visits_staff_id_staff"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["station_id"], ["stations.id"], name=op.f("fk_visits_station_id_stations"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visits")),
        sa.UniqueConstraint("plan_id", "period", name="uq_visits_plan_period"),
    )
    with op.batch_alter_table("visits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visits_resident_id"), ["resident_id"], unique=False)
        batch_op.create_index("ix_visits_station_due", ["station_id", "due_at"], unique=False)
        batch_op.create_index("ix_visits_status_due", ["status", "due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("visits", schema=None) as batch_op:
        batch_op.drop_index("ix_visits_status_due")
        batch_op.drop_index("ix_visits_station_due")
        batch_op.drop_index(batch_op.f("ix_visits_resident_id"))

    op.drop_table("visits")
    with op.batch_alter_table("visit_plans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_visit_plans_resident_id"))

    op.drop_table("visit_plans")
    op.drop_table("resident_categories")
