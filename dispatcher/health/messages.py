"""What the admins are told when dispatch stalls or recovers, in their language (pure)."""

from __future__ import annotations

from dispatcher.health import stall as st
from dispatcher.health.state import PartView

PART_NAMES_ZH = {
    st.INTAKE: "事件转呼叫",
    st.TIMERS: "升级计时器",
    st.ACKS: "设备回执",
    st.NOTIFICATIONS: "通知发送",
    st.DATABASE: "数据库",
    st.MONITOR: "停滞监测",
}


def part_label(part: str, locale: str) -> str:
    if not locale.startswith("zh"):
        return part
    if st.is_loop_part(part):
        return f"派单循环 {part.removeprefix(st.LOOP_PREFIX)}"
    return PART_NAMES_ZH.get(part, part)


def alarm_text(purpose: str, parts: list[PartView], locale: str = "zh-CN") -> str:
    """The admins' message: what stalled and what operators must do meanwhile."""
    zh = locale.startswith("zh")
    names = "、".join(part_label(p.part, locale) + (f"@{p.reporter}" if p.reporter else "") for p in parts)
    if purpose == "dispatch_recovered":
        return (
            f"CareCall：自动派单已恢复（{names}）。"
            if zh
            else f"CareCall: automatic dispatch recovered ({', '.join(p.part for p in parts)})."
        )
    details = "; ".join(f"{p.part}: {p.reason}" for p in parts)
    if zh:
        return f"CareCall：自动派单延迟——请电话处置报警。停滞部分：{names}。{details}"
    return f"CareCall: automatic dispatch delayed — handle alarms by phone. Stalled: {details}"
