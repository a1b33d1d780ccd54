"""Service-order figures from audit rows, against a month computed by hand.

Levels: meal accept ≤ 600 s, done ≤ 3600 s after check-in; escort accept ≤ 1800 s,
done ≤ 7200 s. The month is November 2026 in Asia/Shanghai; "now" is 2026-12-01 02:00 UTC.

| order | kind   | station | provider      | accept         | start→done       | confirm    | cancel               |
| 1     | meal   | cm1     | p1            | 300 met        | 3000 met         | 5          |                      |
| 2     | meal   | cm1     | p1 → p2       | 900 missed     | 4000 missed      | 3          |                      |
| 3     | escort | cm2     | station:cm2   | 1800 met       | 7200 met         | not_done   |                      |
| 4     | meal   | cm1     | p1            | n/a (100 s)    | n/a              |            | family cancelled     |
| 5     | escort | cm2     | (none)        | missed (2000)  | n/a              |            | resident in hospital |
| 6     | meal   | cm2     | p2            | 60 met         | missed (waiting) |            |                      |
| 9     | meal   | cm1     | (none)        | missed (open)  | n/a              |            |                      |
Orders 7 and 8 were booked one second before and at the first instant of the
neighbouring local months; order 10 has no known levels; none of them count.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dispatcher.oversight.orders_figures import (
    OrderAuditRow,
    cancellations,
    group_orders,
    order_figures,
    orders_from_rows,
    orders_summary,
)

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
MEAL = {"accept_within_s": 600, "start_by_s": 7200, "start_grace_s": 900, "done_within_s": 3600}
ESCORT = {"accept_within_s": 1800, "start_by_s": 86400, "start_grace_s": 900, "done_within_s": 7200}


def _row(oid: int, kind: str, at: datetime, station: str, **detail: Any) -> OrderAuditRow:
    return OrderAuditRow(at=at, kind=f"order_{kind}", station_id=station, detail={"order_id": oid, **detail})


def _order(oid: int, service: str, station: str, t0: datetime, steps: list[tuple[str, int, dict[str, Any]]]):
    rows = [_row(oid, "created", t0, station, service_kind=service, source="operator")]
    rows += [_row(oid, k, t0 + timedelta(seconds=s), station, **d) for k, s, d in steps]
    return rows


D = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)
ROWS: list[OrderAuditRow] = [
    *_order(
        1,
        "meal",
        "cm1",
        D,
        [
            ("assign", 0, {"provider_id": "p1"}),
            ("accept", 300, {}),
            ("assign", 400, {"staff_id": "u1"}),
            ("start", 1000, {}),
            ("done", 4000, {"duration_s": 3000}),
            ("confirm", 5000, {"satisfaction": 5, "not_done": False}),
            ("close", 5100, {}),
        ],
    ),
    *_order(
        2,
        "meal",
        "cm1",
        D + timedelta(hours=1),
        [
            ("assign", 0, {"provider_id": "p1"}),
            ("assign", 500, {"provider_id": "p2"}),
            ("accept", 900, {}),
            ("start", 1200, {}),
            ("done", 5200, {}),
            ("confirm", 6000, {"satisfaction": 3, "not_done": False}),
        ],
    ),
    *_order(
        3,
        "escort",
        "cm2",
        D + timedelta(hours=2),
        [
            ("assign", 10, {"assignee_station_id": "cm2"}),
            ("accept", 1800, {}),
            ("start", 2000, {}),
            ("done", 9200, {}),
            ("confirm", 9300, {"satisfaction": None, "not_done": True}),
        ],
    ),
    *_order(
        4,
        "meal",
        "cm1",
        D + timedelta(hours=3),
        [
            ("assign", 0, {"provider_id": "p1"}),
            ("cancel", 100, {"reason": "family cancelled"}),
        ],
    ),
    *_order(
        5, "escort", "cm2", D + timedelta(hours=4), [("cancel", 2000, {"reason": "  resident in hospital "})]
    ),
    *_order(
        6,
        "meal",
        "cm2",
        datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        [
            ("assign", 0, {"provider_id": "p2"}),
            ("accept", 60, {}),
            ("start", 100, {}),
        ],
    ),
    *_order(7, "meal", "cm1", datetime(2026, 10, 31, 15, 59, 59, tzinfo=UTC), []),
    *_order(8, "meal", "cm1", datetime(2026, 11, 30, 16, 0, tzinfo=UTC), []),
    *_order(9, "meal", "cm1", datetime(2026, 10, 31, 16, 0, tzinfo=UTC), []),
    *_order(10, "meal", "cm1", D, []),
    # rows that are not order steps are ignored
    OrderAuditRow(at=D, kind="acknowledged", station_id="cm1", detail={}),
    OrderAuditRow(at=D, kind="order_created", station_id="cm1", detail={"order_id": "x"}),
]
LEVELS = {1: MEAL, 2: MEAL, 3: ESCORT, 4: MEAL, 5: ESCORT, 6: MEAL, 7: MEAL, 8: MEAL, 9: MEAL}


def _figs():
    return orders_from_rows(reversed(ROWS), LEVELS, month="2026-11", now=NOW, tz=TZ)


def test_the_month_holds_the_orders_booked_in_it_by_local_time() -> None:
    assert [f.order_id for f in _figs()] == [1, 2, 3, 4, 5, 6, 9]
    every = orders_from_rows(ROWS, LEVELS, month=None, now=NOW, tz=TZ)
    assert [f.order_id for f in every] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert {f.order_id: f.month for f in every}[7] == "2026-10"
    assert {f.order_id: f.month for f in every}[8] == "2026-12"


def test_each_order_against_its_levels() -> None:
    f = {x.order_id: x for x in _figs()}
    assert (f[1].accept_s, f[1].accept_met, f[1].completion_s, f[1].completion_met) == (300, True, 3000, True)
    assert (f[2].accept_s, f[2].accept_met, f[2].completion_s, f[2].completion_met) == (
        900,
        False,
        4000,
        False,
    )
    assert (f[3].accept_met, f[3].completion_s, f[3].completion_met) == (
        True,
        7200,
        True,
    )  # exactly at the level
    assert (f[4].accept_met, f[4].completion_met, f[4].cancel_reason) == (None, None, "family cancelled")
    assert (f[5].accept_met, f[5].cancel_reason) == (False, "resident in hospital")
    assert (f[6].accept_met, f[6].completion_s, f[6].completion_met) == (True, None, False)
    assert (f[9].accept_s, f[9].accept_met) == (None, False)
    assert [f[i].provider for i in (1, 2, 3, 4, 5, 6, 9)] == [
        "p1",
        "p2",
        "station:cm2",
        "p1",
        "(none)",
        "p2",
        "(none)",
    ]
    assert (f[1].satisfaction, f[3].satisfaction, f[3].not_done) == (5, None, True)


def test_the_hand_computed_month() -> None:
    s = orders_summary(_figs())
    assert s == {
        "orders": 7,
        "done": 3,
        "cancelled": 2,
        "open": 2,
        "accept_n": 4,
        "accept_median_s": 300.0,
        "accept_p90_s": 1800.0,
        "accept_within_level_met": 3,
        "accept_within_level_eligible": 6,
        "accept_within_level_pct": 50.0,
        "completion_n": 3,
        "completion_median_s": 4000.0,
        "completion_p90_s": 7200.0,
        "completion_within_level_met": 2,
        "completion_within_level_eligible": 4,
        "completion_within_level_pct": 50.0,
        "satisfaction_n": 2,
        "satisfaction_mean": 4.0,
        "satisfaction_1": 0,
        "satisfaction_2": 0,
        "satisfaction_3": 1,
        "satisfaction_4": 0,
        "satisfaction_5": 1,
        "not_done": 1,
    }
    assert cancellations(_figs()) == [
        {"reason": "family cancelled", "orders": 1},
        {"reason": "resident in hospital", "orders": 1},
    ]


def test_by_kind_provider_and_station() -> None:
    kinds = {r["key"]: r for r in group_orders(_figs(), "kind")}
    assert {k: r["orders"] for k, r in kinds.items()} == {"escort": 2, "meal": 5}
    assert (kinds["meal"]["accept_within_level_met"], kinds["meal"]["accept_within_level_eligible"]) == (2, 4)
    assert (kinds["escort"]["accept_within_level_met"], kinds["escort"]["accept_within_level_eligible"]) == (
        1,
        2,
    )
    assert kinds["meal"]["satisfaction_mean"] == 4.0 and kinds["escort"]["not_done"] == 1
    providers = group_orders(_figs(), "provider")
    assert [(r["key"], r["orders"]) for r in providers] == [
        ("(none)", 2),
        ("p1", 2),
        ("p2", 2),
        ("station:cm2", 1),
    ]
    stations = {r["key"]: r for r in group_orders(_figs(), "station")}
    assert {k: (r["orders"], r["done"], r["cancelled"], r["open"]) for k, r in stations.items()} == {
        "cm1": (4, 2, 1, 1),
        "cm2": (3, 1, 1, 1),
    }
    with pytest.raises(ValueError, match="group orders by"):
        group_orders(_figs(), "type")  # type: ignore[arg-type]


def test_bad_levels_and_missing_creation() -> None:
    assert order_figures(99, [_row(99, "accept", D, "cm1")], MEAL, now=NOW, tz=TZ) is None
    with pytest.raises(ValueError, match="accept_within_s"):
        order_figures(1, ROWS[:3], {"done_within_s": 60}, now=NOW, tz=TZ)
    empty = orders_summary([])
    assert (empty["orders"], empty["accept_median_s"], empty["satisfaction_mean"]) == (0, None, None)
