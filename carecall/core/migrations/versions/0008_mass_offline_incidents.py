"""mass offline: broker outages, incidents and their devices

A graceful broker restart, a power cut or a cell outage takes many devices offline at
once; they become one incident call for the area (dispatcher.incidents.service). The gateway
records when its own broker connection was lost and back (broker_outages), so wills in
that window are read as one broker restart.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import carecall.core.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "broker_outages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("lost_at", carecall.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("back_at", carecall.core.db.UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_broker_outages_lost_at", "broker_outages", ["lost_at"])
    op.create_table(
        "mass_offline_incidents",
        sa.Column("call_id", sa.Integer(), sa.ForeignKey("calls.id", ondelete="RESTRICT"), primary_key=True),
        sa.Column(
            "area_station_id",
            sa.String(64),
            sa.ForeignKey("stations.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.Column(
            "outage_id", sa.Integer(), sa.ForeignKey("broker_outages.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("opened_at", carecall.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("since", carecall.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_offline_at", carecall.core.db.UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_mass_offline_incidents_area_station_id", "mass_offline_incidents", ["area_station_id"]
    )
    op.create_table(
        "incident_devices",
        sa.Column(
            "call_id",
            sa.Integer(),
            sa.ForeignKey("mass_offline_incidents.call_id", ondelete="RESTRICT"),
            primary_key=True,
        ),
        sa.Column(
            "device_id", sa.String(64), sa.ForeignKey("devices.id", ondelete="RESTRICT"), primary_key=True
        ),
        sa.Column("home_id", sa.String(64), nullable=False),
        sa.Column("offline_event_pk", _PK, nullable=False),
        sa.Column("offline_at", carecall.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("back_at", carecall.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("restore_event_pk", _PK, nullable=True),
        sa.Column("merged_call_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_incident_devices_device", "incident_devices", ["device_id", "back_at"])


def downgrade() -> None:
    op.drop_index("ix_incident_devices_device", table_name="incident_devices")
    op.drop_table("incident_devices")
    op.drop_index("ix_mass_offline_incidents_area_station_id", table_name="mass_offline_incidents")
    op.drop_table("mass_offline_incidents")
    op.drop_index("ix_broker_outages_lost_at", table_name="broker_outages")
    op.drop_table("broker_outages")
