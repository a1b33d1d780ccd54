"""Every message key and every code a person reads exists in both languages (issue 13).

The codes are collected from the Python sources themselves (the StrEnums, Literals and
constants the server sends), so a new status, reason or role without a translation in
the console's or the phone app's catalogues fails here, not in front of an operator.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
from starlette.requests import Request

from device_gateway.kinds import DeviceKind
from device_gateway.protocol.messages import DEFAULT_CLASS, SERVICE_KINDS, EventClass
from dispatcher.audit.chain import AuditKind
from dispatcher.auth.models import Role
from dispatcher.calls import escalation, priority, ranking, routing
from dispatcher.calls.actions import CALLBACK_LINES, CALLBACK_OUTCOMES
from dispatcher.calls.context import OUTCOMES
from dispatcher.calls.dispatch_config import MASS_OFFLINE
from dispatcher.calls.escalation import TimerAction
from dispatcher.calls.lifecycle import OPEN_STATUSES, CallAction, CallStatus
from dispatcher.family import views as family_views
from dispatcher.family.service import ANSWERS
from dispatcher.health import stall
from dispatcher.incidents import mass_offline
from dispatcher.incidents.service import MERGED
from dispatcher.notifications.channels.models import ChannelKind
from dispatcher.orders import routing as order_routing
from dispatcher.orders.catalogue import KindEntry
from dispatcher.orders.lifecycle import OrderAction, OrderStatus, audit_kind
from dispatcher.oversight.review import REVIEW_REASONS
from dispatcher.paging.policy import Availability, PageOutcome
from dispatcher.registry.models import Tier
from dispatcher.registry.records import Kind as RegistryKind
from dispatcher.registry.schemas import ResidentRow, StaffRole
from dispatcher.visits import views as visit_views
from dispatcher.visits.config_file import load_visit_rules
from dispatcher.visits.models import VisitStatus
from dispatcher.visits.rules import Category

ROOT = Path(__file__).resolve().parents[3]
CONSOLE = ROOT / "dispatcher" / "console" / "static"
PHONE = ROOT / "dispatcher" / "responder" / "static"
LANGS = ("en", "zh-CN")
CODE = re.compile(r"[A-Z][A-Z0-9_]{2,}")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def catalogue(folder: Path, lang: str) -> dict[str, str]:
    data = json.loads((folder / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def literal_values(tp: object) -> set[str]:
    args = get_args(tp)
    assert args, f"{tp!r} is not a Literal"
    return {str(a) for a in args}


# ---------------------------------------------------------------- reason codes


def reason_constants(module_file: Path) -> set[str]:
    """Upper-case code constants written in the module's functions (docstrings and f-string
    fragments excluded: the f-string reasons are collected by running the function)."""
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    found: set[str] = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        fragments = {id(v) for n in ast.walk(fn) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in fragments
                and CODE.fullmatch(node.value)
            ):
                found.add(node.value)
    return found


def stored_reason_lists(key: str) -> set[str]:
    """Reason lists written straight into calls ({"route_reasons": ["MASS_OFFLINE_AREA"]})."""
    found: set[str] = set()
    for path in (ROOT / "dispatcher").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Dict):
                continue
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == key and isinstance(v, ast.List | ast.Tuple):
                    found |= {
                        e.value for e in v.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    }
    return found


def priority_reasons() -> set[str]:
    found = reason_constants(Path(priority.__file__))
    cfg = priority.PriorityConfig()
    classes = [c for c in EventClass if priority.opens_call(c)]
    for cls, etype, cap, alone, night, recent in itertools.product(
        classes, sorted(DEFAULT_CLASS), [None, 0, 1, 2, 3, 4], [False, True], [False, True], [0, 5]
    ):
        _, reasons = priority.assess_priority(
            event_class=cls,
            event_type=etype,
            capacity_level=cap,
            living_alone=alone,
            night=night,
            recent_calls_24h=recent,
            cfg=cfg,
        )
        found |= set(reasons)
    return found | stored_reason_lists("priority_reasons")


def route_reasons() -> set[str]:
    return reason_constants(Path(routing.__file__)) | stored_reason_lists("route_reasons")


# ---------------------------------------------------------------- audit kinds


def module_constants() -> dict[str, str]:
    """Every module-level ``NAME = "text"`` in the server's packages (PAGED = "paged"…)."""
    found: dict[str, str] = {}
    for path in [*(ROOT / "dispatcher").rglob("*.py"), *(ROOT / "device_gateway").rglob("*.py")]:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                found.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return found


def kind_values(node: ast.expr, constants: dict[str, str]) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Name) and node.id in constants:
        return {constants[node.id]}
    if isinstance(node, ast.IfExp):
        return kind_values(node.body, constants) | kind_values(node.orelse, constants)
    return set()  # AuditKind members (collected from the enum) or a variable


def audit_kinds() -> set[str]:
    """The kinds written to the audit log, the call timeline's rows: the AuditKind enum and
    every other kind handed to ``audit.append(kind=…)`` or ``record(session, call, kind)``."""
    constants = module_constants()
    found = {k.value for k in AuditKind}
    for path in (ROOT / "dispatcher").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            is_append = (
                isinstance(f, ast.Attribute)
                and f.attr == "append"
                and isinstance(f.value, ast.Name)
                and f.value.id == "audit"
            )
            is_record = isinstance(f, ast.Name) and f.id == "record"
            if not (is_append or is_record):
                continue
            kinds = [kw.value for kw in node.keywords if kw.arg == "kind"]
            if is_record and len(node.args) >= 3:
                kinds.append(node.args[2])
            for k in kinds:
                found |= kind_values(k, constants)
    return found


# ---------------------------------------------------------------- the code domains

CONSOLE_CODES: dict[str, set[str]] = {
    "status": {s.value for s in CallStatus},
    "timeline": audit_kinds(),
    "step": {a.value for a in TimerAction},
    "action": {a.value for a in CallAction},
    "header.role": {r.value for r in Role},
    "staff_role": {r.value for r in StaffRole},
    "page.outcome": {o.value for o in PageOutcome},
    "page.channel": {c.value for c in ChannelKind},
    "outcome": {*OUTCOMES, MERGED},
    "device": {k.value for k in DeviceKind},
    "event": {*DEFAULT_CLASS, MASS_OFFLINE},
    "tier": {t.value for t in Tier},
    "level": literal_values(get_type_hints(routing.escalation_target)["level"]),
    "incident.cause": literal_values(mass_offline.Cause),
    "queue.incident.cause": literal_values(mass_offline.Cause),
    "priority": literal_values(priority.Priority),
    "reason.priority": priority_reasons(),
    "reason.route": route_reasons(),
    "sv.reason": set(REVIEW_REASONS),
    "detail.sex": literal_values(ResidentRow.model_fields["sex"].annotation),
    "detail.capacity_level": {str(n) for n in range(0, 5)},
    "stall.part": {*stall.DB_PARTS, stall.DATABASE, stall.MONITOR},
    "family.answer": set(ANSWERS),
    "callback.line": set(CALLBACK_LINES),
    "callback.outcome": set(CALLBACK_OUTCOMES),
    "rank.state": {s.value for s in ranking.PersonState},
    "registry.kind": {k.value for k in RegistryKind},
    # the send dialog's reasons: the documented table and every code the ranking writes
    "rank.reason": set(ranking.REASONS) | reason_constants(Path(ranking.__file__)),
    # the orders and visits tabs (orders.js, visits.js)
    "service_kind": set(SERVICE_KINDS),
    "service_unit": literal_values(KindEntry.model_fields["unit"].annotation),
    "order_status": {s.value for s in OrderStatus},
    "order_step": {s.value for s in OrderStatus},
    "order_reason": set(order_routing.REASONS),
    # dispatcher/orders/levels.py names its levels after the steps that end them
    "order_level": {OrderAction.accept.value, OrderAction.start.value, OrderAction.done.value},
    # dispatcher/orders/views.py books as "operator" or "api", device_intake.py as
    # "device", a visit's form (dispatcher/visits/actions.py) as "visit"
    "order_source": {"operator", "api", "device", "visit"},
    # the order's timeline (GET /api/v1/orders/{id}/timeline): its audit rows' kinds
    "order_audit": {audit_kind("created"), "order_breached", *(audit_kind(a) for a in OrderAction)},
    "visit_status": {s.value for s in VisitStatus},
    "visit_filter": literal_values(visit_views.StatusFilter),
    "visit_category": {c.value for c in Category} | {"risk", "follow_up"},
    "visit_risk_rule": {r.name for r in load_visit_rules().risk_rules},
}

PHONE_CODES: dict[str, set[str]] = {
    "event": {*DEFAULT_CLASS, MASS_OFFLINE},
    "outcome": set(OUTCOMES) | {MERGED},
    "class": literal_values(escalation.CallClass),
    "availability": {a.value for a in Availability},
    "sex": literal_values(ResidentRow.model_fields["sex"].annotation),
    # the phone's orders and visits tabs
    "kind": set(SERVICE_KINDS),
    "order.status": {s.value for s in OrderStatus},
    "order.due": {OrderAction.accept.value, OrderAction.start.value, OrderAction.done.value},
    "order.breached": {OrderAction.accept.value, OrderAction.start.value, OrderAction.done.value},
    "visit.status": {s.value for s in VisitStatus},
    # what an order a visit's form opened is doing: routing leaves it created or assigned
    "visit.order_state": {OrderStatus.created.value, OrderStatus.assigned.value},
    "category": {c.value for c in Category} | {"risk", "follow_up"},
}

# Domains the pages translate whose values are free text from the registry (a resident's
# conditions, a contact's relation, a rota's shift names): shown as written when the
# catalogue has no word for them.
FREE_TEXT_DOMAINS = {"condition", "relation", "shift"}
# Domains whose values are spelled out in the JavaScript itself and checked below.
JS_FIXED_DOMAINS = {
    "handoff",
    "responder",
    "assignment",
    "decline",
    "queue.filter",
    "queue.group",
    "sv.visits.col",
}


def test_codes_are_collected() -> None:
    # the collection itself works: a broken scan must not pass by finding nothing
    assert {"EMERGENCY_EVENT", "CAPACITY_LEVEL_4", "RAISED_TO_P1", "TROUBLE_ONLY"} <= CONSOLE_CODES[
        "reason.priority"
    ]
    assert {"OWN_STATION_STAFFED_IN_RANGE", "COUNTY_FALLBACK", "MASS_OFFLINE_AREA"} <= CONSOLE_CODES[
        "reason.route"
    ]
    assert CONSOLE_CODES["level"] == {"street", "county"}
    # kinds written outside the enum: pages, family answers
    assert {"paged", "page_declined", "page_accepted", "contact_answered"} <= CONSOLE_CODES["timeline"]
    assert all(values for values in CONSOLE_CODES.values())


def missing_codes(cat: dict[str, str], domains: dict[str, set[str]]) -> list[str]:
    return sorted(f"{d}.{v}" for d, values in domains.items() for v in values if f"{d}.{v}" not in cat)


@pytest.mark.parametrize("lang", LANGS)
def test_every_console_code_is_translated(lang: str) -> None:
    assert missing_codes(catalogue(CONSOLE, lang), CONSOLE_CODES) == []


@pytest.mark.parametrize("lang", LANGS)
def test_every_phone_code_is_translated(lang: str) -> None:
    assert missing_codes(catalogue(PHONE, lang), PHONE_CODES) == []


def test_a_new_code_without_translation_is_caught() -> None:
    cat = catalogue(CONSOLE, "en")
    assert missing_codes(cat, {"status": {"open", "teleported"}}) == ["status.teleported"]


# ---------------------------------------------------------------- catalogue shape


def same_shape(folder: Path) -> list[str]:
    en, zh = (catalogue(folder, lang) for lang in LANGS)
    problems = [f"only in en: {k}" for k in sorted(en.keys() - zh.keys())]
    problems += [f"only in zh-CN: {k}" for k in sorted(zh.keys() - en.keys())]
    for lang, cat in (("en", en), ("zh-CN", zh)):
        problems += [
            f"{lang} {k} is empty" for k, v in cat.items() if not isinstance(v, str) or not v.strip()
        ]
    for k in sorted(en.keys() & zh.keys()):
        if set(PLACEHOLDER.findall(en[k])) != set(PLACEHOLDER.findall(zh[k])):
            problems.append(f"{k}: placeholders differ")
    # an untranslated copy is a missing translation too (the brand and placeholders aside)
    problems += [
        f"{k}: zh-CN is the English text"
        for k in sorted(en.keys() & zh.keys())
        if en[k] == zh[k] and re.search(r"[a-z]{3}", PLACEHOLDER.sub("", en[k]).replace("CareCall", ""))
    ]
    return problems


@pytest.mark.parametrize("folder", [CONSOLE, PHONE], ids=["console", "phone"])
def test_catalogues_have_the_same_keys_and_no_empty_text(folder: Path) -> None:
    assert same_shape(folder) == []


# ---------------------------------------------------------------- keys used by the pages

STATIC_KEY = re.compile(r"""(?:\bt|\bhas)\(\s*["']([\w.-]+)["']""")
HTML_KEY = re.compile(r"""data-i18n(?:-label)?=["']([\w.-]+)["']""")
DYNAMIC = re.compile(r"""(?:\b(?:t|has)\(`([\w.-]+)\.\$\{|\b(?:code|codes|tr)\(\s*["']([\w.-]+)["'])""")


def page_sources(folder: Path) -> Iterable[Path]:
    yield from sorted(folder.glob("*.js"))
    yield from sorted(folder.glob("*.html"))


def used_keys(folder: Path) -> set[str]:
    keys: set[str] = set()
    for path in page_sources(folder):
        text = path.read_text(encoding="utf-8")
        keys |= set(STATIC_KEY.findall(text)) | set(HTML_KEY.findall(text))
    return keys


def used_domains(folder: Path) -> set[str]:
    found: set[str] = set()
    for path in page_sources(folder):
        for a, b in DYNAMIC.findall(path.read_text(encoding="utf-8")):
            found.add(a or b)
    return found


@pytest.mark.parametrize("folder", [CONSOLE, PHONE], ids=["console", "phone"])
@pytest.mark.parametrize("lang", LANGS)
def test_every_key_the_pages_use_exists(folder: Path, lang: str) -> None:
    keys = used_keys(folder)
    assert len(keys) > 20  # the scan found the pages' keys
    assert sorted(keys - catalogue(folder, lang).keys()) == []


@pytest.mark.parametrize(
    ("folder", "domains"), [(CONSOLE, CONSOLE_CODES), (PHONE, PHONE_CODES)], ids=["console", "phone"]
)
def test_every_translated_code_domain_has_a_known_source(folder: Path, domains: dict[str, set[str]]) -> None:
    """A page translating a new kind of code must say here where its values come from."""
    used = used_domains(folder)
    assert "status" in used or "event" in used
    assert sorted(used - domains.keys() - FREE_TEXT_DOMAINS - JS_FIXED_DOMAINS) == []


def js_list(text: str, name: str) -> list[str]:
    """The strings of ``const NAME = ["a", "b"]`` in a page script."""
    m = re.search(rf"\b{name}\s*=\s*\[([^\]]*)\]", text)
    assert m, name
    return re.findall(r'"([\w-]+)"', m.group(1))


def test_values_fixed_in_the_pages_are_translated() -> None:
    app = (CONSOLE / "app.js").read_text(encoding="utf-8")
    queue = (CONSOLE / "queue.js").read_text(encoding="utf-8")
    facets = js_list(queue, "FACETS")
    groups = ["none", *facets]
    assert facets and js_list(queue, "GROUP_BY") == ["none"]  # "none", then ...FACETS
    handoff = set(re.findall(r'"(1[12][09])"', app))
    assert handoff == {"110", "119", "120"}
    visit_cols = js_list((CONSOLE / "supervisor.js").read_text(encoding="utf-8"), "cols")
    assert "on_time" in visit_cols  # the visit-compliance table's columns
    phone_html = (PHONE / "index.html").read_text(encoding="utf-8")
    declines = set(re.findall(r'<option value="([\w]+)" data-i18n="decline\.', phone_html))
    assert declines
    for lang in LANGS:
        console, phone = catalogue(CONSOLE, lang), catalogue(PHONE, lang)
        assert sorted(f"handoff.{n}" for n in handoff if f"handoff.{n}" not in console) == []
        assert sorted(f"sv.visits.col.{c}" for c in visit_cols if f"sv.visits.col.{c}" not in console) == []
        # the queue's filters and grouping
        wanted = [f"queue.filter.{f}" for f in facets] + [f"queue.filter.{f}_all" for f in facets]
        wanted += [f"queue.group.{g}" for g in groups]
        assert sorted(k for k in wanted if k not in console) == []
        # responders on the board: free, or the state of their assignment
        responder = {
            "free",
            "released",
            *(s for s in OPEN_STATUSES if s in ("dispatched", "en_route", "on_scene")),
        }
        assert sorted(f"responder.{s}" for s in responder if f"responder.{s}" not in console) == []
        assignment = {"accepted", "released", "dispatched", "en_route", "on_scene"}
        assert sorted(f"assignment.{s}" for s in assignment if f"assignment.{s}" not in phone) == []
        assert sorted(f"decline.{d}" for d in declines if f"decline.{d}" not in phone) == []
        # the console's timeline names the reason a responder gave on the phone
        assert sorted(f"decline.{d}" for d in declines if f"decline.{d}" not in console) == []


# ---------------------------------------------------------------- the family page


def test_family_page_texts_match_in_both_languages() -> None:
    text = family_views.TEXT
    assert set(text) == {"zh-CN", "en"}
    assert text["zh-CN"].keys() == text["en"].keys()
    for lang in text:
        assert all(v.strip() for v in text[lang].values())
        # every status a family can see (open calls: a closed call's link has expired)
        assert sorted(s for s in OPEN_STATUSES if f"status.{s}" not in text[lang]) == []
        assert sorted(a for a in ANSWERS if a not in text[lang]) == []


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        ("en-GB,en;q=0.9", "", "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "", "zh-CN"),
        ("zh-TW", "", "zh-CN"),
        ("en-US", "lang=zh-CN", "zh-CN"),
        ("zh-CN", "lang=en", "en"),
    ],
)
def test_family_page_follows_the_browser(accept: str, query: str, expected: str) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/f/x",
        "headers": [(b"accept-language", accept.encode())],
        "query_string": query.encode(),
    }
    assert family_views.language(Request(scope)) == expected
