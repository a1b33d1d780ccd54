"""The visits policy (``config/visits.yaml``) as a validated model: which residents are
visited how often, when an open visit counts as late or missed, and when a missed visit
escalates to the station manager and then the street centre.

No I/O here: the file is read by ``dispatcher.visits.config_file``.
"""

from __future__ import annotations

from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Category", "Frequency", "RiskRule", "VisitRules"]


class Category(StrEnum):
    """The special-difficulty groups the county plans name (特殊困难老年人)."""

    living_alone = "living_alone"  # 独居
    empty_nest = "empty_nest"  # 空巢
    left_behind = "left_behind"  # 留守
    disabled = "disabled"  # 失能 / 半失能
    severely_handicapped = "severely_handicapped"  # 重残
    lost_only_child = "lost_only_child"  # 失独


class Frequency(StrEnum):
    """How often a plan's visit falls due: once per local calendar month, once per local
    ISO week (Monday to Monday), or once (a follow-up after an emergency call)."""

    monthly = "monthly"
    weekly = "weekly"
    once = "once"


# the most frequent first: a resident with a weekly plan needs no separate monthly visit
FREQUENCY_RANK = {Frequency.weekly: 0, Frequency.monthly: 1}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskRule(_Strict):
    """A risk flag: residents matching every given condition are visited ``every``."""

    name: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")
    min_capacity_level: int | None = Field(default=None, ge=0, le=4)
    living_alone: bool | None = None
    categories_any: tuple[Category, ...] = ()
    every: Frequency = Frequency.weekly

    @field_validator("every")
    @classmethod
    def _recurring(cls, v: Frequency) -> Frequency:
        if v is Frequency.once:
            raise ValueError("a risk rule needs a recurring frequency (weekly or monthly)")
        return v

    @model_validator(mode="after")
    def _has_condition(self) -> RiskRule:
        if self.min_capacity_level is None and self.living_alone is None and not self.categories_any:
            raise ValueError(f"risk rule {self.name!r} has no condition: it would flag every resident")
        return self


class Escalation(_Strict):
    """Hours after a visit's due time: the station manager is told, later the street centre."""

    station_manager_after_h: float = Field(default=48.0, ge=0)
    street_after_h: float = Field(default=120.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Escalation:
        if self.street_after_h < self.station_manager_after_h:
            raise ValueError("street_after_h must not come before station_manager_after_h")
        return self


class VisitRules(_Strict):
    timezone: str = "Asia/Shanghai"  # month and week boundaries are local
    special_difficulty_every: Frequency = Frequency.monthly
    categories: tuple[Category, ...] = tuple(Category)  # the groups visited at special_difficulty_every
    risk_rules: tuple[RiskRule, ...] = ()
    follow_up_within_h: float = Field(default=24.0, gt=0, le=24 * 7)
    # how far back generation looks for closed calls still needing their follow-up plan
    follow_up_lookback_h: float = Field(default=72.0, gt=0, le=24 * 31)
    # an open visit past its due time is late; once past due + missed_after_h it is missed
    missed_after_h: float = Field(default=24.0, ge=0)
    escalation: Escalation = Escalation()
    # at most 60: the stall monitor expects a visits heartbeat within its slow-loop limit (120 s)
    generate_every_s: float = Field(default=60.0, ge=1, le=60)
    # staff roles that may be named on a visit (only people on the roster: non-empty shifts)
    visitor_roles: tuple[str, ...] = ("responder", "nurse")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("special_difficulty_every")
    @classmethod
    def _at_least_monthly(cls, v: Frequency) -> Frequency:
        if v is Frequency.once:
            raise ValueError("special-difficulty elders are visited at least monthly (monthly or weekly)")
        return v

    @model_validator(mode="after")
    def _unique_rules(self) -> VisitRules:
        names = [r.name for r in self.risk_rules]
        if len(names) != len(set(names)):
            raise ValueError("risk rule names must be unique")
        if self.escalation.station_manager_after_h < self.missed_after_h:
            raise ValueError("escalation.station_manager_after_h must not come before missed_after_h")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
