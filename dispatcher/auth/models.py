"""Users, roles, login security and the log of reads of residents' records.

Schema changes go through Alembic (carecall/core/migrations).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from carecall.core.db import ID, Base, UTCDateTime


class Role(StrEnum):
    operator = "operator"
    supervisor = "supervisor"
    admin = "admin"
    responder = "responder"  # the responder's phone (/m/), bound to a staff row


class User(Base):
    """A console login. Scope = the station and everything under it (admin: all)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str] = mapped_column(String(100), default="")
    role: Mapped[str] = mapped_column(String(16))
    station_id: Mapped[str | None] = mapped_column(ID, ForeignKey("stations.id", ondelete="RESTRICT"))
    staff_id: Mapped[str | None] = mapped_column(ID, ForeignKey("staff.id", ondelete="SET NULL"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    locale: Mapped[str] = mapped_column(String(8), default="zh-CN")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("role in ('operator','supervisor','admin','responder')", name="role"),)


class LoginState(Base):
    """Per-login security state, kept beside ``users`` so the hot columns of a sign-in
    (failures, lock) and of every request (token version) live in one small row.

    ``token_version`` is part of every token: bumping it (password change, "sign out
    everywhere", an admin revoking a user) ends every token issued before, at once and in
    every copy. A user without a row is at version 0 with no failures.
    """

    __tablename__ = "login_state"

    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RevokedToken(Base):
    """One signed-out token (by its ``jti``), kept until it would have expired anyway."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class RecordRead(Base):
    """Who read which resident's personal data, when, through which route (PIPL: access
    to sensitive personal information is accountable). Plain rows, not the hash chain:
    one is written per read, far more often than calls change."""

    __tablename__ = "record_reads"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    user_id: Mapped[int] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    resident_id: Mapped[str] = mapped_column(ID, index=True)
    route: Mapped[str] = mapped_column(String(200))
    call_id: Mapped[int | None] = mapped_column(Integer)
