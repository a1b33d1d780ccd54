"""Loading the inputs of the oversight figures from the database, with scope applied.

Each report is a handful of set-based queries, whatever the number of calls: one pass
over the audit log groups the moments of every call in the window with conditional
aggregates (the same on SQLite and PostgreSQL), one query reads the calls and homes, one
the first event of each call. The pure modules then do the arithmetic, so the figures
are the same whichever database answered.

Scope: a call belongs to a supervisor's subtree when its home's station or the station
it was first assigned to lies in it; a home or device when its home's station does.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, and_, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from carecall.core.clock import as_utc
from device_gateway.models import DeviceEvent
from dispatcher.audit.chain import AuditKind
from dispatcher.audit.models import AuditRow
from dispatcher.auth.principals import station_subtree
from dispatcher.calls.models import Call, CallEvent
from dispatcher.oversight.figures import (
    CallFigures,
    CallInfo,
    CallMarks,
    Period,
    figures_maker,
    in_period,
    utc_window,
)
from dispatcher.oversight.review import TimelineEntry
from dispatcher.oversight.targets import Targets
from dispatcher.registry.models import Home, Station

__all__ = [
    "StationInfo",
    "call_in_scope",
    "epoch_us",
    "gc_paused",
    "home_timezone",
    "load_call_figures",
    "load_stations",
    "load_timelines",
    "narrow_scope",
    "utc_value",
    "visible",
]


@dataclass(frozen=True, slots=True)
class StationInfo:
    id: str
    name: str
    tier: str
    parent_id: str | None
    timezone: str
    area: str
    lat: float
    lon: float
    street_id: str | None
    county_id: str | None


async def load_stations(session: AsyncSession) -> dict[str, StationInfo]:
    """Every station with the street and county above it (itself when it is one)."""
    rows = (
        await session.execute(
            select(
                Station.id,
                Station.name,
                Station.tier,
                Station.parent_id,
                Station.timezone,
                Station.area,
                Station.lat,
                Station.lon,
            )
        )
    ).all()
    raw = {r.id: r for r in rows}

    def up(sid: str, tier: str) -> str | None:
        seen: set[str] = set()
        cur: str | None = sid
        while cur is not None and cur in raw and cur not in seen:
            if raw[cur].tier == tier:
                return cur
            seen.add(cur)
            cur = raw[cur].parent_id
        return None

    return {
        r.id: StationInfo(
            r.id,
            r.name,
            r.tier,
            r.parent_id,
            r.timezone or "Asia/Shanghai",
            r.area,
            r.lat,
            r.lon,
            up(r.id, "street"),
            up(r.id, "county"),
        )
        for r in rows
    }


async def narrow_scope(
    session: AsyncSession, scope: frozenset[str] | None, station_id: str | None
) -> frozenset[str] | None:
    """The caller's scope narrowed to one station's subtree (a report for that station).

    Raises LookupError when the station is unknown or outside the caller's scope, so the
    API can answer 404 without telling whether it exists.
    """
    if station_id is None:
        return scope
    if scope is not None and station_id not in scope:
        raise LookupError(station_id)
    sub = await station_subtree(session, station_id=station_id)
    if not sub:
        raise LookupError(station_id)
    return sub if scope is None else sub & scope


class epoch_us(FunctionElement[int]):
    """A timestamp as integer microseconds since 1970 UTC, on every backend we run on.

    Report queries return hundreds of thousands of moments; an integer crosses the
    driver and SQLAlchemy's result processing several times cheaper than a timezone-
    aware datetime, and durations computed from it are exact.
    """

    type = BigInteger()
    inherit_cache = True
    name = "epoch_us"


@compiles(epoch_us, "postgresql")
def _epoch_us_pg(element: epoch_us, compiler: Any, **kw: Any) -> str:
    # EXTRACT returns an exact numeric (PostgreSQL 14+), so no microsecond is lost.
    return f"CAST(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) * 1000000 AS BIGINT)"


@compiles(epoch_us)
def _epoch_us_default(element: epoch_us, compiler: Any, **kw: Any) -> str:
    # SQLite keeps UTC timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text (SQLAlchemy's
    # storage format, always six digits): whole seconds from strftime over the first 19
    # characters (given the fraction, it rounds to the nearest second), microseconds
    # from the digits after the point.
    x = compiler.process(element.clauses, **kw)
    return (
        f"(CAST(strftime('%s', substr({x}, 1, 19)) AS INTEGER) * 1000000 + CAST(substr({x}, 21) AS INTEGER))"
    )


def _first(cond: Any) -> Any:
    return epoch_us(func.min(case((cond, AuditRow.at))))


_gc_pauses = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a report builds its per-call tuples.

    A month over 100,000 calls allocates a million small objects, none in a cycle;
    the collector would walk the growing heap again and again (a third of the CPU
    time). Reference counting still frees everything. Nests, and concurrent reports
    on one loop share the pause; the collector resumes when the last one ends.
    """
    global _gc_pauses, _gc_was_enabled
    if _gc_pauses == 0:
        _gc_was_enabled = gc.isenabled()
        gc.disable()
    _gc_pauses += 1
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0 and _gc_was_enabled:
            gc.enable()


_K = AuditKind
_MARK_KINDS = [
    _K.event_received.value,
    _K.call_opened.value,
    _K.acknowledged.value,
    _K.responder_dispatched.value,
    _K.on_scene.value,
    _K.resolved.value,
    _K.cancelled.value,
    _K.restored.value,
    _K.escalated.value,
]


def _marks_query(candidates: Any, lo: datetime) -> Any:
    """Every candidate call's moments (and first assigned station) in one grouped pass:
    the set-based twin of figures.marks_from_rows."""
    ar = AuditRow
    closing = ar.kind.in_((_K.resolved.value, _K.cancelled.value, _K.restored.value))
    return (
        select(
            ar.call_id.label("call_id"),
            _first(ar.kind == _K.event_received.value).label("received"),
            _first(ar.kind == _K.call_opened.value).label("opened"),
            _first(ar.kind == _K.acknowledged.value).label("ack"),
            _first(and_(ar.kind.in_((_K.resolved.value, _K.cancelled.value)), ar.actor.like("user:%"))).label(
                "op_close"
            ),
            _first(ar.kind == _K.responder_dispatched.value).label("dispatched"),
            _first(ar.kind == _K.on_scene.value).label("on_scene"),
            _first(closing).label("closed"),
            func.sum(case((ar.kind == _K.escalated.value, 1), else_=0)).label("escalations"),
            func.min(case((ar.kind == _K.call_opened.value, ar.station_id))).label("first_station"),
        )
        # Every row of a call is at or after its start, so rows before the window
        # cannot belong to a candidate: over a year of audit rows, the index on `at`
        # keeps the pass to the period's part of the log.
        .where(ar.call_id.in_(candidates), ar.kind.in_(_MARK_KINDS), ar.at >= lo)
        .group_by(ar.call_id)
        .subquery("marks")
    )


def utc_value(value: datetime | str | None) -> datetime | None:
    """Aggregates over a UTC column come back typed on PostgreSQL; on SQLite min() of a
    CASE can come back as the stored text, so both are accepted."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


def visible(scope: frozenset[str] | None, *station_ids: str | None) -> bool:
    return scope is None or any(s is not None and s in scope for s in station_ids)


async def load_call_figures(
    session: AsyncSession,
    *,
    period: Period,
    scope: frozenset[str] | None,
    targets: Targets,
    now: datetime,
) -> list[CallFigures]:
    """Figures of every call in scope that started in the period (by its station's day).

    Two statements: the grouped pass over the audit rows (an index-only scan on
    PostgreSQL, migration 0005), joined to the call, its home and its first event's
    type; and the few escalation rows, for which reached the county. The rest is one
    small tuple per call in Python.
    """
    lo, hi = utc_window(period)
    candidates = (
        select(AuditRow.call_id)
        .where(
            AuditRow.kind == _K.event_received.value,
            AuditRow.at >= lo,
            AuditRow.at < hi,
            AuditRow.call_id.is_not(None),
        )
        .scalar_subquery()
    )
    m = _marks_query(candidates, lo)
    first_ev = (
        select(CallEvent.call_id.label("cid"), func.min(CallEvent.event_pk).label("pk"))
        .where(CallEvent.call_id.in_(candidates))
        .group_by(CallEvent.call_id)
        .subquery("first_ev")
    )
    stmt = (
        select(
            m,
            Call.priority,
            Call.event_class,
            Call.status,
            Call.outcome,
            Call.home_id,
            Home.station_id,
            Home.area,
            DeviceEvent.type,
        )
        .select_from(m)
        .join(Call, Call.id == m.c.call_id)
        .join(Home, Home.id == Call.home_id)
        .outerjoin(first_ev, first_ev.c.cid == m.c.call_id)
        .outerjoin(DeviceEvent, DeviceEvent.id == first_ev.c.pk)
    )
    stations = await load_stations(session)
    if session.get_bind().dialect.name == "postgresql":
        # The driver prepares statements and PostgreSQL switches a statement run five
        # times to a generic plan, blind to the window's bounds: the same report then
        # took 2.4 s instead of 1.6. Plan this one for its parameters, every time.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    with gc_paused():
        # Core execution (no ORM row loading): plain tuples for a hundred thousand rows.
        rows = (await (await session.connection()).execute(stmt)).all()
        # Which escalations reached for the county is in the row's JSON detail, which the
        # covering index does not hold: read those rows alone (few) and decide in Python,
        # the same on every database's JSON dialect.
        county: set[int] = set()
        for cid, detail in (
            await session.execute(
                select(AuditRow.call_id, AuditRow.detail).where(
                    AuditRow.call_id.in_(candidates),
                    AuditRow.kind == _K.escalated.value,
                    AuditRow.at >= lo,
                )
            )
        ).all():
            if isinstance(detail, dict) and detail.get("to") == "county":
                county.add(int(cid))
        return _build_figures(rows, stations, county, period=period, scope=scope, targets=targets, now=now)


def _build_figures(
    rows: Sequence[Any],
    stations: dict[str, StationInfo],
    to_county: set[int],
    *,
    period: Period,
    scope: frozenset[str] | None,
    targets: Targets,
    now: datetime,
) -> list[CallFigures]:
    # Registry facts per (home station, first station): a county has a few hundred.
    places: dict[tuple[str, str | None], tuple[Any, ...]] = {}
    figs: list[CallFigures] = []
    make = figures_maker(targets, now)
    for (
        cid,
        rec,
        opened,
        ack,
        op_close,
        disp,
        scene,
        closed,
        esc,
        first_station,
        prio,
        cls,
        status,
        outcome,
        home_id,
        home_station,
        area,
        ev_type,
    ) in rows:
        if rec is None and opened is None:
            continue
        if not visible(scope, home_station, first_station):
            continue
        place = places.get((home_station, first_station))
        if place is None:
            hs = stations.get(home_station)
            fs = stations.get(first_station or "") or hs
            street = stations.get(hs.street_id or "") if hs else None
            county = stations.get(hs.county_id or "") if hs else None
            place = places[(home_station, first_station)] = (
                fs.id if fs else None,
                fs.name if fs else "",
                street.id if street else None,
                street.name if street else "",
                county.id if county else None,
                county.name if county else "",
                fs.timezone if fs else "Asia/Shanghai",
            )
        st_id, st_name, street_id, street_name, county_id, county_name, tz = place
        info = CallInfo(
            cid,
            st_id,
            st_name,
            home_id,
            home_station,
            street_id,
            street_name,
            county_id,
            county_name,
            tz,
            area,
            prio,
            ev_type or cls,
            cls,
            status,
            outcome,
        )
        marks = CallMarks(
            rec,
            opened,
            ack if ack is not None else op_close,
            disp,
            scene,
            closed,
            int(esc or 0),
            cid in to_county,
        )
        figs.append(make(info, marks))
    figs = in_period(figs, period)
    figs.sort(key=lambda f: (f.marks.start_us or 0, f.info.call_id))
    return figs


async def load_timelines(session: AsyncSession, call_ids: Sequence[int]) -> dict[int, list[TimelineEntry]]:
    """The audit rows of the given calls, in chain order."""
    out: dict[int, list[TimelineEntry]] = {cid: [] for cid in call_ids}
    if not call_ids:
        return out
    for chunk_start in range(0, len(call_ids), 1000):
        chunk = list(call_ids[chunk_start : chunk_start + 1000])
        rows = (
            await session.scalars(select(AuditRow).where(AuditRow.call_id.in_(chunk)).order_by(AuditRow.seq))
        ).all()
        for r in rows:
            if r.call_id is not None:
                out[r.call_id].append(
                    TimelineEntry(
                        r.seq, utc_value(r.at) or r.at, r.kind, r.actor, r.station_id, r.detail or {}
                    )
                )
    return out


async def call_in_scope(session: AsyncSession, call_id: int, scope: frozenset[str] | None) -> bool:
    """Whether a call exists and belongs to the scope (home station or first station)."""
    home_station = await session.scalar(
        select(Home.station_id).join(Call, Call.home_id == Home.id).where(Call.id == call_id)
    )
    if home_station is None:
        return False
    first_station = await session.scalar(
        select(AuditRow.station_id)
        .where(AuditRow.call_id == call_id, AuditRow.kind == _K.call_opened.value)
        .order_by(AuditRow.seq)
        .limit(1)
    )
    return visible(scope, home_station, first_station)


def home_timezone(stations: dict[str, StationInfo], station_id: str | None) -> str:
    """The time zone reports for a station's subtree are read in (the whole county's,
    when no station is given)."""
    if station_id and station_id in stations:
        return stations[station_id].timezone
    counties = sorted(s.id for s in stations.values() if s.tier == "county")
    return stations[counties[0]].timezone if counties else "Asia/Shanghai"
