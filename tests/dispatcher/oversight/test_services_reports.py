"""Service orders and visit compliance over HTTP with real tokens, on SQLite and
PostgreSQL: orders made through the orders API at chosen moments, counted by hand; visit
compliance from the audit log agreeing with the visits report over the table; scope,
roles, bad months, translated downloads and the monthly report's sections.

Orders (meal: accept ≤ 900 s, done ≤ 3600 s after check-in; clock moments after T0):
A r1 +0:    accept 300 (met), start 600, done 2400 (1800, met), satisfaction 4, closed
B r1 +1 h:  cancelled after 60 s, "家属取消" (accept not applicable)
C r2 +2 h:  accept 1000 (missed), start 1100, done 5100 (4000, missed), not done
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner, Result

from carecall.shell.cli.report import report_app
from tests.dispatcher.visits.conftest import add_visit_county
from tests.support.api import ApiWorld, api_world, bearer
from tests.support.registry import add_logins

Maker = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai
COUNTS = ("due", "done_on_time", "late", "missed", "open", "cancelled")

pytestmark = pytest.mark.usefixtures("cheap_argon2")


async def _step(w: ApiWorld, user: str, oid: int, action: str, at: datetime, **body: Any) -> dict[str, Any]:
    w.clock.t = at
    r = await w.client.post(f"/api/v1/orders/{oid}/{action}", json=body, headers=await bearer(w.client, user))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _book(w: ApiWorld, user: str, resident: str, at: datetime, station: str) -> dict[str, Any]:
    w.clock.t = at
    h = await bearer(w.client, user)
    r = await w.client.post("/api/v1/orders", json={"resident_id": resident, "kind": "meal"}, headers=h)
    assert r.status_code == 201, r.text
    order = dict(r.json())
    if order["status"] == "created":  # nobody free by routing: the operator assigns it
        order = await _step(w, user, order["id"], "assign", at, station_id=station)
    return order


@pytest.fixture
async def world(maker: Maker) -> AsyncIterator[tuple[ApiWorld, dict[str, Any]]]:
    await add_visit_county(maker)
    async with maker() as s, s.begin():
        await add_logins(
            s,
            [
                ("op-cm1", "operator", "cm1"),
                ("op-st2", "operator", "st2"),
                ("op-county", "operator", "county"),
                ("sup-county", "supervisor", "county"),
                ("sup-st1", "supervisor", "st1"),
            ],
            now=T0,
        )
    async with api_world(maker, T0) as w:
        await w.dispatcher.visits_once()
        a = await _book(w, "op-cm1", "r1", T0, "cm1")
        await _step(w, "op-cm1", a["id"], "accept", T0 + timedelta(seconds=300))
        await _step(w, "op-cm1", a["id"], "start", T0 + timedelta(seconds=600))
        await _step(w, "op-cm1", a["id"], "done", T0 + timedelta(seconds=2400))
        await _step(w, "op-cm1", a["id"], "confirm", T0 + timedelta(seconds=3000), satisfaction=4)
        await _step(w, "op-cm1", a["id"], "close", T0 + timedelta(seconds=3100))
        t = T0 + timedelta(hours=1)
        b = await _book(w, "op-cm1", "r1", t, "cm1")
        await _step(w, "op-cm1", b["id"], "cancel", t + timedelta(seconds=60), reason="家属取消")
        t = T0 + timedelta(hours=2)
        c = await _book(w, "op-st2", "r2", t, "cm2")
        await _step(w, "op-st2", c["id"], "accept", t + timedelta(seconds=1000))
        await _step(w, "op-st2", c["id"], "start", t + timedelta(seconds=1100))
        await _step(w, "op-st2", c["id"], "done", t + timedelta(seconds=5100))
        await _step(w, "op-st2", c["id"], "confirm", t + timedelta(seconds=5200), not_done=True)
        # r2's December visit, done on time
        w.clock.t = T0 + timedelta(hours=5)
        op2 = await bearer(w.client, "op-st2")
        [visit] = [
            v for v in (await w.client.get("/api/v1/visits", headers=op2)).json() if v["resident_id"] == "r2"
        ]
        r = await w.client.post(f"/api/v1/visits/{visit['id']}/done", json={"seen": "in_person"}, headers=op2)
        assert r.status_code == 200, r.text
        w.clock.t = T0 + timedelta(days=1)
        yield w, {"a": a, "c": c}


async def cli(*args: str) -> Result:
    """The CLI runs its own event loop (asyncio.run), so it runs in a thread here."""
    return await asyncio.to_thread(CliRunner().invoke, report_app, list(args))


def _holder(order: dict[str, Any]) -> str:
    return order["provider_id"] or f"station:{order['assignee_station_id']}"


async def test_the_orders_of_the_month_by_hand(world: tuple[ApiWorld, dict[str, Any]]) -> None:
    w, orders = world
    sup = await bearer(w.client, "sup-county")
    r = await w.client.get("/api/v1/reports/orders?month=2026-12", headers=sup)
    assert r.status_code == 200, r.text
    rep = r.json()
    s = rep["summary"]
    assert (s["orders"], s["done"], s["cancelled"], s["open"]) == (3, 2, 1, 0)
    assert (
        s["accept_n"],
        s["accept_median_s"],
        s["accept_within_level_met"],
        s["accept_within_level_eligible"],
    ) == (2, 300.0, 1, 2)
    assert s["accept_within_level_pct"] == 50.0
    assert (s["completion_n"], s["completion_median_s"], s["completion_p90_s"]) == (2, 1800.0, 4000.0)
    assert (s["completion_within_level_met"], s["completion_within_level_eligible"]) == (1, 2)
    assert (s["satisfaction_n"], s["satisfaction_mean"], s["satisfaction_4"], s["not_done"]) == (1, 4.0, 1, 1)
    assert rep["cancellations"] == [{"reason": "家属取消", "orders": 1}]
    assert [(g["key"], g["orders"]) for g in rep["by_kind"]] == [("meal", 3)]
    assert rep["kind_names"]["meal"] == {"en": "Meals", "zh-CN": "助餐"}
    assert {g["key"]: g["orders"] for g in rep["by_station"]} == {"cm1": 2, "cm2": 1}
    holders = {g["key"]: g["orders"] for g in rep["by_provider"]}
    assert (
        holders[_holder(orders["a"])] >= 1
        and holders[_holder(orders["c"])] >= 1
        and sum(holders.values()) == 3
    )
    assert rep["rows"] == rep["by_kind"]
    # another month holds none of them
    empty = (await w.client.get("/api/v1/reports/orders?month=2026-11", headers=sup)).json()
    assert empty["summary"]["orders"] == 0 and empty["rows"] == []


async def test_orders_report_scope_roles_and_bad_input(world: tuple[ApiWorld, dict[str, Any]]) -> None:
    w, _ = world
    c = w.client
    st1 = await bearer(c, "sup-st1")
    rep = (await c.get("/api/v1/reports/orders?month=2026-12", headers=st1)).json()
    assert rep["summary"]["orders"] == 2 and [g["key"] for g in rep["by_station"]] == ["cm1"]
    assert (
        await c.get("/api/v1/reports/orders?month=2026-12&station_id=cm2", headers=st1)
    ).status_code == 404
    assert (
        await c.get("/api/v1/reports/orders?month=2026-12", headers=await bearer(c, "op-cm1"))
    ).status_code == 403
    county_op = await bearer(c, "op-county")
    assert (await c.get("/api/v1/reports/orders?month=2026-12", headers=county_op)).json()["summary"][
        "orders"
    ] == 3
    for bad in ("2026-13", "26-12-1", "2026/12"):
        assert (await c.get(f"/api/v1/reports/orders?month={bad}", headers=st1)).status_code == 422, bad
    assert (await c.get("/api/v1/reports/orders?month=2026-12&by=colour", headers=st1)).status_code == 422


async def test_visit_compliance_agrees_with_the_visits_report(world: tuple[ApiWorld, dict[str, Any]]) -> None:
    w, _ = world
    sup = await bearer(w.client, "sup-county")
    for month in ("2026-11", "2026-12"):
        ours = (await w.client.get(f"/api/v1/reports/visit-compliance?month={month}", headers=sup)).json()
        table = (await w.client.get(f"/api/v1/reports/visits?month={month}", headers=sup)).json()
        assert ours["stations"], month
        assert [{k: st[k] for k in ("station_id", *COUNTS)} for st in ours["stations"]] == [
            {k: st[k] for k in ("station_id", *COUNTS)} for st in table["stations"]
        ]
        assert [
            [nv["resident_id"] for nv in ours["not_visited"] if nv["station_id"] == st["station_id"]]
            for st in ours["stations"]
        ] == [st["residents_not_visited"] for st in table["stations"]]
    dec = (await w.client.get("/api/v1/reports/visit-compliance?month=2026-12", headers=sup)).json()
    cm2 = next(st for st in dec["stations"] if st["station_id"] == "cm2")
    assert (cm2["due"], cm2["done_on_time"], cm2["not_visited"], cm2["on_time_pct"]) == (1, 1, 0, 100.0)


async def test_downloads_have_translated_headers(world: tuple[ApiWorld, dict[str, Any]]) -> None:
    w, _ = world
    sup = await bearer(w.client, "sup-county")
    r = await w.client.get("/api/v1/reports/orders?month=2026-12&format=csv&lang=zh-CN", headers=sup)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    head = r.content.decode("utf-8-sig").splitlines()[0]
    assert "派单数" in head and "时限内接单率 %" in head and "平均满意度" in head
    r = await w.client.get(
        "/api/v1/reports/orders?month=2026-12&by=cancellations&format=csv&lang=en", headers=sup
    )
    assert r.content.decode("utf-8-sig").splitlines() == ["reason,orders", "家属取消,1"]
    r = await w.client.get("/api/v1/reports/visit-compliance?month=2026-12&format=xlsx&lang=en", headers=sup)
    assert r.status_code == 200
    sheet = load_workbook(io.BytesIO(r.content)).active
    assert sheet is not None
    header = [cell.value for cell in next(sheet.iter_rows(max_row=1))]
    assert "visits due" in header and "done on time" in header and "missed" in header
    r = await w.client.get(
        "/api/v1/reports/visit-compliance?month=2026-11&table=not_visited&format=csv&lang=zh-CN", headers=sup
    )
    assert r.content.decode("utf-8-sig").splitlines()[0] == "站点编号,站点,老人编号,老人"


async def test_the_monthly_report_has_orders_and_visits_in_both_languages(
    world: tuple[ApiWorld, dict[str, Any]],
) -> None:
    w, _ = world
    sup = await bearer(w.client, "sup-county")
    zh = (await w.client.get("/api/v1/reports/monthly?month=2026-12&lang=zh-CN", headers=sup)).text
    en = (await w.client.get("/api/v1/reports/monthly?month=2026-12&lang=en", headers=sup)).text
    assert (
        "服务派单" in zh
        and "助餐" in zh
        and "家属取消" in zh
        and "探访达标情况" in zh
        and "未探访的老人" in zh
    )
    assert "Service orders" in en and "Meals" in en and "Welfare visit compliance" in en
    assert "Residents not visited" in en and "accepted within level %" in en
    nov = (await w.client.get("/api/v1/reports/monthly?month=2026-11&lang=en", headers=sup)).text
    assert "王秀英" in nov  # r1's week of Nov 30 was not visited


async def test_the_cli_gives_the_same_figures(
    world: tuple[ApiWorld, dict[str, Any]], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _ = world
    sup = await bearer(w.client, "sup-county")
    api = (await w.client.get("/api/v1/reports/orders?month=2026-12&by=station", headers=sup)).json()
    visits = (await w.client.get("/api/v1/reports/visit-compliance?month=2026-12", headers=sup)).json()
    monkeypatch.setenv("CARECALL_DATABASE_URL", db_url)
    as_of = ["--as-of", (T0 + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")]
    res = await cli("orders", "--month", "2026-12", "--by", "station", "--format", "json", *as_of)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"] == api["rows"]
    res = await cli("visits", "--month", "2026-12", "--format", "json", *as_of)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["stations"] == visits["stations"]
    res = await cli("visits", "--month", "2026-12", "--format", "csv", "--lang", "en", *as_of)
    assert res.stdout.splitlines()[0].startswith("station id,station,visits due,done on time,late,missed")
    table = (await cli("orders", "--month", "2026-12", *as_of)).stdout
    assert table.splitlines()[0].split()[:3] == ["label", "orders", "done"]
    bad = await cli("orders", "--month", "2026-13")
    assert bad.exit_code == 2 and "no such month" in bad.output
    bad = await cli("orders", "--month", "2026-12", "--by", "colour")
    assert bad.exit_code == 2 and "--by must be" in bad.output
