"""What people read in the reports, in zh-CN and English (pure, no I/O).

Durations as "1 min 12 s" / "1分12秒" rather than 72.013, instants as local readable
times rather than ISO strings, codes (event types, statuses, outcomes, review reasons,
device kinds) as words, and column headers of the CSV/XLSX downloads as words. The
figures themselves never change: only how they are written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

__all__ = [
    "LANGS",
    "Lang",
    "code_label",
    "column_label",
    "format_duration",
    "format_local",
    "format_value",
    "parse_lang",
    "phrase",
    "scope_label",
]

Lang = Literal["zh-CN", "en"]
LANGS: tuple[Lang, ...] = ("zh-CN", "en")


def parse_lang(value: str | None, default: Lang = "zh-CN") -> Lang:
    """A language code as a Lang; ``zh``/``zh-cn``/``en-GB`` are accepted, anything else
    is a ValueError naming the choices."""
    if value is None or value == "":
        return default
    v = value.strip().lower()
    if v in ("zh", "zh-cn", "zh-hans", "zh_cn"):
        return "zh-CN"
    if v == "en" or v.startswith("en-") or v.startswith("en_"):
        return "en"
    raise ValueError(f"unknown language {value!r}; use one of {', '.join(LANGS)}")


_UNITS: dict[Lang, tuple[str, str, str, str, str]] = {
    # day, hour, minute, second, separator
    "en": (" d", " h", " min", " s", " "),
    "zh-CN": ("天", "小时", "分", "秒", ""),
}


def format_duration(seconds: float | None, lang: Lang) -> str:
    """Seconds as the two largest units people read: ``72.4`` → "1 min 12 s" (en) or
    "1分12秒" (zh-CN); under a minute whole seconds ("45 s"), an hour or more "2 h 5 min",
    a day or more "1 d 3 h". None (no such time) is "–". Rounded to the whole second."""
    if seconds is None:
        return "–"
    if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds ≥ 0, got {seconds!r}")
    d_u, h_u, m_u, s_u, sep = _UNITS[lang]
    total = math.floor(seconds + 0.5)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        parts = [f"{days}{d_u}"] + ([f"{hours}{h_u}"] if hours else [])
    elif hours:
        parts = [f"{hours}{h_u}"] + ([f"{minutes}{m_u}"] if minutes else [])
    elif minutes:
        parts = [f"{minutes}{m_u}"] + ([f"{secs}{s_u}"] if secs else [])
    else:
        parts = [f"{secs}{s_u}"]
    return sep.join(parts)


def format_local(at: datetime | str | None, timezone: str, lang: Lang) -> str:
    """An instant as local wall time: "2026-12-06 14:03" (en) or "2026年12月6日 14:03"
    (zh-CN). A naive datetime is refused rather than guessed."""
    if at is None:
        return "–"
    when = datetime.fromisoformat(at) if isinstance(at, str) else at
    if when.tzinfo is None:
        raise ValueError(f"format_local needs a timezone-aware time, got {when!r}")
    local = when.astimezone(ZoneInfo(timezone))
    if lang == "zh-CN":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
    return f"{local:%Y-%m-%d %H:%M}"


# (en, zh-CN) for every code a report shows; a code not listed is shown as it is.
_CODES: dict[str, dict[str, tuple[str, str]]] = {
    "type": {
        "sos": ("one-key call", "一键呼叫"),
        "fall": ("fall", "跌倒"),
        "vital_alert": ("vital signs alert", "生命体征异常"),
        "smoke": ("smoke", "烟雾"),
        "gas": ("gas", "燃气"),
        "water_leak": ("water leak", "漏水"),
        "inactivity": ("no movement", "长时间无活动"),
        "bed_exit": ("not back in bed", "离床未归"),
        "door_open": ("door open", "门已打开"),
        "offline": ("device offline", "设备离线"),
        "mass_offline": ("mass offline", "大面积离线"),
        "low_battery": ("low battery", "电量低"),
        "tamper": ("tamper", "设备被拆"),
        "power_loss": ("power loss", "断电"),
        "test": ("test call", "测试"),
    },
    "class": {
        "emergency": ("emergency", "紧急"),
        "urgent": ("urgent", "急迫"),
        "trouble": ("device trouble", "设备故障"),
    },
    "status": {
        "open": ("new", "新呼叫"),
        "assigned": ("assigned", "待接单"),
        "acknowledged": ("acknowledged", "已接单"),
        "dispatched": ("dispatched", "已派人"),
        "en_route": ("en route", "在途"),
        "on_scene": ("on scene", "已到场"),
        "resolved": ("resolved", "已结案"),
        "cancelled": ("cancelled", "已取消"),
    },
    "outcome": {
        "helped_on_site": ("helped on site", "现场处置"),
        "taken_to_hospital": ("taken to hospital", "送医"),
        "false_alarm": ("false alarm", "误报"),
        "no_access": ("no access", "无法入户"),
        "handed_to_120": ("handed to 120", "已转 120"),
        "handed_to_110": ("handed to 110", "已转 110"),
        "handed_to_119": ("handed to 119", "已转 119"),
        "restored": ("restored by itself", "自行恢复"),
        "cancelled_by_resident": ("cancelled by the resident", "老人自行取消"),
        "cancelled": ("cancelled", "已取消"),
        "other": ("other", "其他"),
        "merged_into_incident": ("merged into an area incident", "已并入区域事件"),
    },
    "reason": {
        "answered_late": ("answered late", "接听超时"),
        "escalated_to_county": ("escalated to county", "升级至县中心"),
        "arrival_over_limit": ("arrival over limit", "到场超时"),
        "no_access": ("no access", "无法入户"),
        "trouble_late": ("trouble handled late", "故障处理超时"),
    },
    "kind": {
        "hub": ("hub", "网关"),
        "button": ("call button", "呼叫按钮"),
        "watch": ("watch", "手表"),
        "radar": ("fall radar", "跌倒雷达"),
        "mattress": ("smart mattress", "智能床垫"),
        "smoke": ("smoke detector", "烟感"),
        "gas": ("gas detector", "燃气探测器"),
        "water": ("water detector", "水浸探测器"),
        "door": ("door contact", "门磁"),
    },
    "area": {"urban": ("town", "城镇"), "rural": ("countryside", "农村")},
}


def code_label(family: str, code: str | None, lang: Lang) -> str:
    """A code as words (``code_label("type", "low_battery", "zh-CN")`` → "电量低"); an
    unknown code is returned as it is, so a new device type is never hidden."""
    if code is None or code == "":
        return "–"
    pair = _CODES.get(family, {}).get(code)
    if pair is None:
        return code
    return pair[0] if lang == "en" else pair[1]


_PHRASES: dict[str, tuple[str, str]] = {
    "title": ("CareCall monthly oversight report", "CareCall 月度监管报告"),
    "whole_county": ("whole county", "全县"),
    "generated": ("generated", "生成于"),
    "note": (
        "Every figure is recomputed from the hash-chained audit log. Times run from the first stored "
        "event of a call; percentiles are nearest-rank; calls count in the month they started, by their "
        "station's time zone. Answer and arrival targets grade emergency and urgent calls; device trouble "
        "has its own working-hours target.",
        "所有数字均由哈希链审计日志重新计算。时间自呼叫首个事件入库起算；百分位数采用最近秩法；"
        "呼叫按其站点时区计入开始所在月份。接听与到场目标只考核紧急和急迫呼叫；设备故障另有工作时间目标。",
    ),
    "compliance": ("Compliance against targets", "目标达成情况"),
    "charts": ("Charts", "图表"),
    "by_station": ("By station", "各站点"),
    "review": ("Review list", "复核清单"),
    "coverage": ("Coverage now (homes outside the service circle)", "当前覆盖（服务圈外的家庭）"),
    "devices": ("Devices", "设备"),
    "trouble": ("Device trouble (working-hours target)", "设备故障（工作时间目标）"),
    "none": ("None.", "无。"),
    "met": ("✔ met", "✔ 达标"),
    "missed": ("✘ missed", "✘ 未达标"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "target": ("target", "目标"),
    "result": ("result", "结果"),
    "answered_within": ("answered ≤ {t}", "{t}内接听"),
    "on_scene_within": (
        "on scene ≤ {urban} in town / {rural} in the countryside",
        "城镇{urban}、农村{rural}内到场",
    ),
    "trouble_within": (
        "trouble acknowledged within {h} working hours ({start}–{end})",
        "故障在{h}个工作小时内接单（{start}–{end}）",
    ),
    "chart_answer": ("Answer-time distribution (emergency and urgent)", "接听时长分布（紧急与急迫）"),
    "chart_compliance": ("Compliance by day (%)", "每日达标率（%）"),
    "chart_type": ("Calls by type", "按类型的呼叫数"),
    "chart_hour": ("Calls by hour", "按小时的呼叫数"),
    "coverage_map": ("Coverage map", "覆盖地图"),
    "no_homes": ("no homes", "无家庭"),
    "on_duty": ("on duty", "在岗"),
    "met_n": ("met", "达标数"),
    "counted": ("counted", "计入数"),
    "orders": ("Service orders", "服务派单"),
    "orders_note": (
        "Orders count in the month they were booked. Accept time runs from booking to acceptance, "
        "completion from check-in to check-out, each against the service level frozen on the order.",
        "派单按下单所在月份计入。接单用时自下单至接单，完成用时自签到至签退，均对照下单时锁定的服务时限。",
    ),
    "orders_by_kind": ("By kind", "按服务类型"),
    "orders_by_provider": ("By provider", "按服务商"),
    "orders_by_station": ("By station", "按站点"),
    "cancellations": ("Cancellations by reason", "按原因的取消"),
    "chart_orders_kind": ("Orders by kind", "按服务类型的派单数"),
    "visits": ("Welfare visit compliance", "探访达标情况"),
    "visits_note": (
        "Visits count in the month their window starts in; done, late and cancelled are read from the "
        "audit log, missed means not done by its due time.",
        "探访按其周期开始所在月份计入；完成、逾期与取消均取自审计日志，未完成且已过期限即为漏访。",
    ),
    "not_visited": ("Residents not visited", "未探访的老人"),
    "total": ("total", "合计"),
    "unassigned": ("not assigned", "未派出"),
}


def phrase(key: str, lang: Lang, **values: Any) -> str:
    """A fixed phrase of the monthly report in ``lang``, with ``{name}`` values filled."""
    en, zh = _PHRASES[key]
    return (en if lang == "en" else zh).format(**values)


# ---------------------------------------------------------------- column headers

_COLUMNS: dict[str, tuple[str, str]] = {
    "group": ("grouping", "分组方式"),
    "key": ("key", "键"),
    "label": ("group", "分组"),
    "calls": ("calls", "呼叫数"),
    "devices": ("devices", "设备数"),
    "graded_calls": ("emergency and urgent calls", "紧急与急迫呼叫数"),
    "review": ("to review", "待复核"),
    "from": ("from", "起"),
    "to": ("to", "止"),
    "station_id": ("station id", "站点编号"),
    "station_name": ("station", "站点"),
    "street_id": ("street id", "街道编号"),
    "street_name": ("street", "街道"),
    "home_id": ("home", "家庭"),
    "call_id": ("call", "呼叫"),
    "reasons": ("review reasons", "复核原因"),
    "started_local": ("started (local time)", "开始时间（当地）"),
    "type": ("type", "类型"),
    "class": ("class", "类别"),
    "priority": ("priority", "优先级"),
    "area": ("area", "区域"),
    "status": ("status", "状态"),
    "outcome": ("outcome", "结果"),
    "answer_s": ("answer time (s)", "接听用时（秒）"),
    "dispatch_s": ("dispatch time (s)", "派人用时（秒）"),
    "arrival_s": ("arrival time (s)", "到场用时（秒）"),
    "arrival_limit_s": ("arrival limit (s)", "到场时限（秒）"),
    "close_s": ("time to close (s)", "结案用时（秒）"),
    "escalations": ("escalations", "升级次数"),
    "escalated": ("escalated calls", "升级的呼叫"),
    "escalated_to_county": ("escalated to county", "升级至县中心"),
    "unanswered": ("unanswered", "未接听"),
    "device_id": ("device", "设备"),
    "kind": ("device kind", "设备种类"),
    "enabled": ("enabled", "已启用"),
    "offline_now": ("offline now", "当前离线"),
    "offline_since": ("offline since", "离线起始"),
    "hours_offline": ("hours offline", "离线小时数"),
    "battery_pct": ("battery %", "电量 %"),
    "low_battery": ("low battery", "电量低"),
    "last_test_at": ("last test call", "最近测试呼叫"),
    "sends_tests": ("sends weekly tests", "需每周测试"),
    "not_tested": ("test overdue", "测试逾期"),
    "test_every_days": ("test every (days)", "测试周期（天）"),
    "last_seen_at": ("last seen", "最近在线"),
    "rejected_messages": ("rejected messages", "被拒消息数"),
    "seq": ("sequence", "序号"),
    "at": ("time", "时间"),
    "actor": ("by", "操作者"),
    "detail": ("detail", "详情"),
    "homes": ("homes", "家庭数"),
    "covered": ("covered", "已覆盖"),
    "outside": ("outside", "圈外"),
    "covered_pct": ("covered %", "覆盖率 %"),
    "outside_homes": ("homes outside", "圈外家庭"),
    "minutes": ("travel minutes", "路程分钟"),
    "limit_min": ("limit (min)", "时限（分钟）"),
    "nearest_station_id": ("nearest station", "最近站点"),
    "shift": ("shift", "班次"),
    "hours": ("hours", "时段"),
    "arrival_within_limit_met": ("on scene in limit: met", "限时到场：达标数"),
    "arrival_within_limit_eligible": ("on scene in limit: counted", "限时到场：计入数"),
    "arrival_within_limit_pct": ("on scene in limit %", "限时到场率 %"),
    "arrival_within_limit_target_pct": ("on scene in limit: target %", "限时到场：目标 %"),
    "arrival_within_limit_target_met": ("on scene in limit: target met", "限时到场：是否达标"),
    "trouble_calls": ("device trouble calls", "设备故障呼叫数"),
    "trouble_answer_median_s": ("trouble: acknowledged, median (s)", "故障：接单中位数（秒）"),
    "trouble_answer_max_s": ("trouble: acknowledged, longest (s)", "故障：接单最长（秒）"),
    "trouble_in_time_met": ("trouble in working-hours target: met", "故障工时目标：达标数"),
    "trouble_in_time_eligible": ("trouble in working-hours target: counted", "故障工时目标：计入数"),
    "trouble_in_time_pct": ("trouble in working-hours target %", "故障工时目标达标率 %"),
    "trouble_in_time_target_pct": ("trouble: target %", "故障：目标 %"),
    "trouble_in_time_target_met": ("trouble: target met", "故障：是否达标"),
    "trouble_unanswered": ("trouble not acknowledged", "故障未接单"),
    # service orders
    "orders": ("orders", "派单数"),
    "done": ("done", "已完成"),
    "cancelled": ("cancelled", "已取消"),
    "open": ("open", "进行中"),
    "accept_n": ("accepted", "已接单"),
    "accept_median_s": ("accept, median (s)", "接单中位数（秒）"),
    "accept_p90_s": ("accept, p90 (s)", "接单P90（秒）"),
    "accept_within_level_met": ("accepted within level", "时限内接单数"),
    "accept_within_level_eligible": ("accept: counted", "接单：计入数"),
    "accept_within_level_pct": ("accepted within level %", "时限内接单率 %"),
    "completion_n": ("completed", "已完成服务"),
    "completion_median_s": ("completion, median (s)", "完成中位数（秒）"),
    "completion_p90_s": ("completion, p90 (s)", "完成P90（秒）"),
    "completion_within_level_met": ("completed within level", "时限内完成数"),
    "completion_within_level_eligible": ("completion: counted", "完成：计入数"),
    "completion_within_level_pct": ("completed within level %", "时限内完成率 %"),
    "satisfaction_n": ("rated", "评价数"),
    "satisfaction_mean": ("satisfaction, mean", "平均满意度"),
    "satisfaction_1": ("rated 1", "1分"),
    "satisfaction_2": ("rated 2", "2分"),
    "satisfaction_3": ("rated 3", "3分"),
    "satisfaction_4": ("rated 4", "4分"),
    "satisfaction_5": ("rated 5", "5分"),
    "not_done": ("not done (resident says)", "未完成（老人反馈）"),
    "reason": ("reason", "原因"),
    "provider": ("provider", "服务商"),
    # visit compliance
    "due": ("visits due", "应探访"),
    "done_on_time": ("done on time", "按时完成"),
    "late": ("late", "逾期完成"),
    "missed": ("missed", "漏访"),
    "visits_escalated": ("escalated", "已上报"),
    "on_time_pct": ("on time %", "按时率 %"),
    "not_visited": ("residents not visited", "未探访人数"),
    "residents_not_visited": ("not visited", "未探访的老人"),
    "resident_id": ("resident id", "老人编号"),
    "resident_name": ("resident", "老人"),
}
_METRIC = {
    "answer": ("answer", "接听"),
    "dispatch": ("dispatch", "派人"),
    "arrival": ("arrival", "到场"),
    "close": ("close", "结案"),
}
_STAT = {
    "n": ("count", "计数"),
    "median_s": ("median (s)", "中位数（秒）"),
    "p90_s": ("p90 (s)", "P90（秒）"),
    "p95_s": ("p95 (s)", "P95（秒）"),
    "p99_s": ("p99 (s)", "P99（秒）"),
    "max_s": ("longest (s)", "最长（秒）"),
}
_TARGET_PART = {
    "met": ("met", "达标数"),
    "eligible": ("counted", "计入数"),
    "pct": ("%", "达标率 %"),
    "target_pct": ("target %", "目标 %"),
    "target_met": ("target met", "是否达标"),
}
_METRIC_RE = re.compile(r"^(answer|dispatch|arrival|close)_(n|median_s|p90_s|p95_s|p99_s|max_s)$")
_TARGET_RE = re.compile(r"^answer_within_([0-9.]+)s_(met|eligible|pct|target_pct|target_met)$")


def column_label(column: str, lang: Lang) -> str:
    """A report column as a header people read; an unknown column keeps its name."""
    i = 0 if lang == "en" else 1
    if column in _COLUMNS:
        return _COLUMNS[column][i]
    m = _METRIC_RE.match(column)
    if m:
        return (
            f"{_METRIC[m[1]][i]} {_STAT[m[2]][i]}" if lang == "en" else f"{_METRIC[m[1]][i]}{_STAT[m[2]][i]}"
        )
    m = _TARGET_RE.match(column)
    if m:
        limit = format_duration(float(m[1]), lang)
        if lang == "en":
            return f"answered ≤ {limit}: {_TARGET_PART[m[2]][0]}"
        return f"{limit}内接听：{_TARGET_PART[m[2]][1]}"
    return column


def format_value(value: Any, lang: Lang) -> str:
    """A cell for people: booleans as yes/no, floats shortest (%g), None as "–"."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return phrase("yes" if value else "no", lang)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def scope_label(
    station_id: str | None,
    scope: frozenset[str] | None,
    stations: Mapping[str, tuple[str, str | None]],
    lang: Lang,
) -> str:
    """Whose figures these are, by name: the station asked for, else the top of the
    caller's scope (a street supervisor's street, never "whole county"), else the whole
    county. ``stations`` maps id → (name, parent id)."""
    if station_id is not None and station_id in stations:
        return stations[station_id][0]
    if scope is None:
        return phrase("whole_county", lang)
    roots = sorted(sid for sid in scope if sid in stations and stations[sid][1] not in scope)
    if not roots:
        return "–"
    return (
        "、".join(stations[r][0] for r in roots)
        if lang == "zh-CN"
        else ", ".join(stations[r][0] for r in roots)
    )
