"""The hash-chained audit log and its head.

Schema changes go through Alembic (carecall/core/migrations).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from carecall.core.db import Base, UTCDateTime


class AuditRow(Base):
    """Append-only, hash-chained record of every fact about a call.

    ``hash`` = SHA-256 over the previous row's hash and this row's canonical content, so
    editing, deleting or reordering any row breaks the chain from that row on
    (``carecall audit verify``).
    """

    __tablename__ = "audit_log"
    # Two covering indexes (migration 0005) let a month's report read the log without
    # touching its wide rows (hashes, JSON details): the calls that started in a window
    # (kind, at → call_id), then every call's moments (call_id, kind, at, actor,
    # station). Their prefixes serve the lookups by call and by kind. SQLite has no
    # INCLUDE and takes the key columns only.
    __table_args__ = (
        Index("ix_audit_log_call_marks", "call_id", "kind", "at", postgresql_include=["actor", "station_id"]),
        Index("ix_audit_log_kind_at", "kind", "at", postgresql_include=["call_id"]),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), unique=True)
    call_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    station_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the chain's last seq and hash. Locked by each append, which serialises
    appends across dispatcher copies so the chain never forks."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    hash: Mapped[str] = mapped_column(String(64))
