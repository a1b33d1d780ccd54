"""How the demo's simulated staff and providers handle service orders and welfare visits,
and when residents phone in a booking: pure plans drawn from seeded streams.

- ``plan_order``: given an order's facts (its kind, frozen service levels, when it was
  booked and for when) the steps and their moments: assign by hand when routing found
  nobody, name the station's staff member, accept, check in, check out with notes, the
  resident's confirmation (1–5 or "not done", or never), close; or a cancellation with a
  reason. A share of them is late against the order's own levels.
- ``plan_visit``: check-in (with or without a location; none for a phone visit) and the
  form, on time, late, late after it was missed, never (missed), or cancelled.
- ``plan_bookings``: the phone bookings of one local day.

Seeded by the order's, visit's or day's identity, so every run plans the same thing the
same way; carecall/shell/sim_services.py performs the steps.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "Booking",
    "OrderFacts",
    "ServiceBehaviour",
    "Step",
    "VisitFacts",
    "plan_bookings",
    "plan_order",
    "plan_visit",
]

MIN = 60.0
HOUR = 3600.0

# minutes a service takes, by kind (check-in to check-out)
DURATION_MIN: dict[str, tuple[float, float]] = {
    "meal": (10, 30),
    "cleaning": (60, 150),
    "medical": (50, 105),
    "shopping": (30, 90),
    "repair": (30, 120),
    "bathing": (40, 90),
    "chat": (30, 90),
    "mobility": (30, 110),
    "other": (20, 60),
}
DONE_NOTES: dict[str, tuple[str, ...]] = {
    "meal": ("午餐已送到，老人用餐正常", "送餐到家，饭菜温热", "晚餐已送达，提醒按时服药"),
    "cleaning": ("厨房、卫生间清洁完毕", "全屋打扫，换洗床单", "擦窗拖地，清理杂物"),
    "medical": ("陪同到县医院复诊，已取药", "陪同做血压复查，结果平稳", "陪诊完成，医嘱已告知家属"),
    "shopping": ("代购米面油已送到", "代买药品和日用品", "代购蔬菜水果，账目已核对"),
    "repair": ("更换水龙头", "修好电灯开关", "疏通下水道"),
    "bathing": ("上门助浴完成，皮肤无异常", "助浴并修剪指甲", "助浴完成，老人情绪良好"),
    "chat": ("陪聊一小时，老人心情不错", "读报聊天，了解近况", "陪同散步聊天"),
    "mobility": ("陪同外出散步", "陪同去银行办事", "轮椅陪同到社区活动"),
    "other": ("已协助处理", "帮助缴纳水电费", "协助办理证件"),
}
CANCEL_REASONS = ("老人临时住院", "家属已自行安排", "老人不需要了", "老人外出不在家", "重复下单")
NO_ANSWER_REASON = "服务商长时间未接单，已取消重派"
NOT_DONE_NOTE = "老人反映服务未完成"
VISIT_CANCEL_REASONS = ("老人住院，本期无法探访", "老人随子女外出暂住", "老人已搬离本地")
HEALTH = ("精神状态良好", "血压偏高，已提醒按时服药", "腿脚不便，行走需搀扶", "睡眠欠佳", "身体状况稳定")
LIVING = ("室内整洁，取暖设施正常", "家中杂物较多，有跌倒隐患", "饮食正常，冰箱有存粮", "居住环境良好")
NEEDS = ("", "", "", "希望有人定期打扫", "需要助餐服务", "想要上门助浴", "家里电灯坏了")
VISIT_NOTES = ("", "", "已与子女电话沟通", "提醒注意用电安全", "已测量血压")
REQUESTS = ("meal", "cleaning", "bathing", "repair")
BOOKING_KINDS: dict[str, float] = {
    "meal": 25.0,
    "cleaning": 20.0,
    "bathing": 12.0,
    "medical": 12.0,
    "repair": 10.0,
    "mobility": 8.0,
    "shopping": 8.0,
    "chat": 5.0,
}
BOOKING_NOTES = ("子女来电代为预约", "老人本人来电", "", "请提前电话联系", "腿脚不便，请上门")
SCORES = (5, 4, 3, 2, 1)
SCORE_WEIGHTS = (55, 28, 10, 4, 3)


@dataclass(frozen=True)
class ServiceBehaviour:
    """Shares of the simulated providers' and visitors' behaviour: mostly on time, with
    enough late, missed and cancelled work that the oversight figures have something to show."""

    cancel: float = 0.06  # the order is called off (a reason) before it is done
    never_accepted: float = 0.03  # nobody accepts; an operator cancels it after the level
    late_accept: float = 0.08
    late_start: float = 0.07
    overrun: float = 0.05  # the service takes longer than its level
    no_confirmation: float = 0.08  # the resident is never reached to confirm
    not_done: float = 0.03  # the resident says it was not done
    visit_cancel: float = 0.02
    visit_missed: float = 0.06  # never done
    visit_late: float = 0.08  # done after its due time, before it counts as missed
    visit_very_late: float = 0.03  # done after it was already missed
    visit_by_phone: float = 0.15
    visit_no_location: float = 0.1
    visit_request: float = 0.08  # the visitor asks for a service for the resident
    bookings_per_day: tuple[int, int] = (4, 9)  # phone bookings a local day (inclusive)


DEFAULT_SERVICE_BEHAVIOUR = ServiceBehaviour()


@dataclass(frozen=True)
class Step:
    """``action`` at ``at``: an order action (assign_holder, assign_staff, accept, start,
    done, confirm, close, cancel) or a visit action (checkin, complete, cancel)."""

    at: datetime
    action: str
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OrderFacts:
    order_id: int
    kind: str
    levels: Mapping[str, Any]
    created_at: datetime
    booked_for: datetime | None
    assigned: bool  # routing found a provider or station


def _level(levels: Mapping[str, Any], key: str, default: float) -> float:
    value = levels.get(key)
    return float(value) if isinstance(value, int | float) and value > 0 else default


def plan_order(
    f: OrderFacts, rng: random.Random, b: ServiceBehaviour = DEFAULT_SERVICE_BEHAVIOUR
) -> tuple[Step, ...]:
    """The moments of one order's steps. Pure: same facts and stream, same plan."""
    accept_s = _level(f.levels, "accept_within_s", 1800.0)
    start_s = _level(f.levels, "start_by_s", 86400.0)
    grace_s = _level(f.levels, "start_grace_s", 900.0)
    done_s = _level(f.levels, "done_within_s", 10800.0)
    t0 = f.created_at
    steps: list[Step] = []
    t = t0
    if not f.assigned:
        t = t0 + timedelta(seconds=rng.uniform(3 * MIN, 0.5 * accept_s))
        steps.append(Step(t, "assign_holder"))
    t += timedelta(seconds=rng.uniform(0.5 * MIN, 3 * MIN))
    steps.append(Step(t, "assign_staff"))  # when a station holds it: who of its staff goes

    r = rng.random()
    if r < b.never_accepted:
        at = t0 + timedelta(seconds=accept_s * rng.uniform(1.5, 3.0))
        return (*steps, Step(at, "cancel", {"reason": NO_ANSWER_REASON}))
    late = rng.random() < b.late_accept
    share = rng.uniform(1.15, 2.5) if late else rng.uniform(0.1, 0.6)
    t = max(t + timedelta(seconds=30), t0 + timedelta(seconds=accept_s * share))
    steps.append(Step(t, "accept"))

    cancel = rng.random() < b.cancel
    if f.booked_for is not None:
        if rng.random() < b.late_start:
            start = f.booked_for + timedelta(seconds=grace_s + rng.uniform(10 * MIN, 90 * MIN))
        else:
            start = f.booked_for + timedelta(seconds=rng.uniform(-20 * MIN, 0.8 * grace_s))
    else:
        share = rng.uniform(1.05, 1.6) if rng.random() < b.late_start else rng.uniform(0.3, 0.85)
        start = t0 + timedelta(seconds=start_s * share)
    start = max(start, t + timedelta(minutes=5))
    if cancel:
        at = t + (start - t) * rng.uniform(0.1, 0.9)
        return (*steps, Step(at, "cancel", {"reason": rng.choice(CANCEL_REASONS)}))
    steps.append(Step(start, "start"))

    low, high = DURATION_MIN.get(f.kind, (20.0, 60.0))
    took = rng.uniform(low, high) * MIN
    took = done_s * rng.uniform(1.05, 1.5) if rng.random() < b.overrun else min(took, 0.9 * done_s)
    done = start + timedelta(seconds=took)
    notes = rng.choice(DONE_NOTES.get(f.kind, DONE_NOTES["other"]))
    steps.append(Step(done, "done", {"notes": notes}))

    if rng.random() < b.no_confirmation:
        return tuple(steps)
    confirm = done + timedelta(seconds=rng.uniform(10 * MIN, 8 * HOUR))
    if rng.random() < b.not_done:
        body: dict[str, Any] = {"not_done": True, "note": NOT_DONE_NOTE}
    else:
        body = {"satisfaction": rng.choices(SCORES, SCORE_WEIGHTS)[0]}
    steps.append(Step(confirm, "confirm", body))
    steps.append(Step(confirm + timedelta(seconds=rng.uniform(5 * MIN, 20 * HOUR)), "close"))
    return tuple(steps)


@dataclass(frozen=True)
class VisitFacts:
    visit_id: int
    created_at: datetime
    window_start: datetime
    due_at: datetime
    lat: float  # the home
    lon: float
    missed_after_h: float = 24.0


def plan_visit(
    f: VisitFacts, rng: random.Random, b: ServiceBehaviour = DEFAULT_SERVICE_BEHAVIOUR
) -> tuple[Step, ...]:
    """Check-in and form (or a cancellation, or nothing: missed) for one visit. Pure."""
    begin = max(f.created_at, f.window_start)
    span = max((f.due_at - begin).total_seconds(), HOUR)
    r = rng.random()
    if r < b.visit_cancel:
        at = begin + timedelta(seconds=span * rng.uniform(0.05, 0.8))
        return (Step(at, "cancel", {"reason": rng.choice(VISIT_CANCEL_REASONS)}),)
    r -= b.visit_cancel
    if r < b.visit_missed:
        return ()
    r -= b.visit_missed
    grace = f.missed_after_h * HOUR
    if r < b.visit_late:
        done = f.due_at + timedelta(seconds=rng.uniform(0.05, 0.9) * grace)
    elif r < b.visit_late + b.visit_very_late:
        done = f.due_at + timedelta(seconds=grace + rng.uniform(2 * HOUR, 36 * HOUR))
    else:
        done = begin + timedelta(seconds=span * rng.uniform(0.05, 0.95))
    steps: list[Step] = []
    by_phone = rng.random() < b.visit_by_phone
    if not by_phone:
        checkin = max(begin, done - timedelta(seconds=rng.uniform(15 * MIN, 50 * MIN)))
        where: dict[str, Any] = {}
        if rng.random() >= b.visit_no_location:
            where = {
                "lat": round(f.lat + rng.uniform(-0.0004, 0.0004), 6),
                "lon": round(f.lon + rng.uniform(-0.0004, 0.0004), 6),
            }
        steps.append(Step(checkin, "checkin", where))
        done = max(done, checkin + timedelta(minutes=5))
    request = rng.choice(REQUESTS) if rng.random() < b.visit_request else None
    form = {
        "seen": "by_phone" if by_phone else "in_person",
        "health": rng.choice(HEALTH),
        "living_conditions": "" if by_phone else rng.choice(LIVING),
        "needs_found": rng.choice(NEEDS),
        "follow_up_needed": request is not None,
        "requested_service_kind": request,
        "notes": rng.choice(VISIT_NOTES),
    }
    steps.append(Step(done, "complete", form))
    return tuple(steps)


@dataclass(frozen=True)
class Booking:
    at: datetime
    resident_id: str
    kind: str
    booked_for: datetime | None
    notes: str


def plan_bookings(
    day: date,
    residents: Sequence[str],
    tz: ZoneInfo,
    seed: int | str,
    b: ServiceBehaviour = DEFAULT_SERVICE_BEHAVIOUR,
) -> list[Booking]:
    """The phone bookings of local ``day`` (08:00–18:00 calls; some for now, most for a
    time in the next two days), in time order. Pure: the same day plans the same calls."""
    if not residents:
        return []
    rng = random.Random(f"{seed}:bookings:{day.isoformat()}")
    opening = datetime.combine(day, time(8, 0), tzinfo=tz)
    kinds = sorted(BOOKING_KINDS)
    out: list[Booking] = []
    for _ in range(rng.randint(*b.bookings_per_day)):
        at = opening + timedelta(seconds=rng.uniform(0, 10 * HOUR))
        booked_for = None
        if rng.random() < 0.6:
            when = day + timedelta(days=rng.choice((1, 1, 2)))
            slot = time(rng.randint(8, 15), rng.choice((0, 30)))
            booked_for = datetime.combine(when, slot, tzinfo=tz)
        out.append(
            Booking(
                at=at,
                resident_id=rng.choice(list(residents)),
                kind=rng.choices(kinds, [BOOKING_KINDS[k] for k in kinds])[0],
                booked_for=booked_for,
                notes=rng.choice(BOOKING_NOTES),
            )
        )
    return sorted(out, key=lambda x: x.at)
