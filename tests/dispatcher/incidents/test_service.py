"""Mass offline on the dispatcher shell (SQLite, hand-driven clock): many devices of one
street offline within seconds are one incident call, not a call per home; all back, it
resolves itself; two devices offline are ordinary per-home trouble calls as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from config.settings import load_settings
from device_gateway.models import BrokerOutage, Device
from device_gateway.store import EventRow, insert_events
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.calls.models import OPEN_STATUSES, Call, EventIntake
from dispatcher.engine.process import Dispatcher
from dispatcher.incidents.models import IncidentDevice, MassOfflineIncident
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.registry.models import Home, Resident, Staff, Station
from tests.support.clock import ManualClock

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
STREET_HOMES = 50  # five communities of ten homes under street st1


def dev(i: int) -> str:
    return f"d{i:03d}"


async def add_county(maker: async_sessionmaker[AsyncSession]) -> None:
    """county → st1 (cm1..cm5, ten homes each) and st2 (cm6, three homes); one hub a home."""
    async with maker() as s, s.begin():
        s.add(Station(id="county", name="县中心", tier="county", kind="county_centre", lat=32.68, lon=112.84))
        await s.flush()
        for st_id in ("st1", "st2"):
            s.add(
                Station(
                    id=st_id,
                    name=f"{st_id}街道中心",
                    tier="street",
                    kind="street_centre",
                    parent_id="county",
                    lat=32.69,
                    lon=112.85,
                )
            )
        await s.flush()
        for c in range(1, 7):
            s.add(
                Station(
                    id=f"cm{c}",
                    name=f"社区{c}",
                    tier="community",
                    kind="day_care_centre",
                    parent_id="st1" if c <= 5 else "st2",
                    lat=32.69 + c / 1000,
                    lon=112.85,
                )
            )
        await s.flush()
        for c in range(1, 7):
            s.add(
                Staff(
                    id=f"cm{c}-r1",
                    station_id=f"cm{c}",
                    name="李师傅",
                    role="responder",
                    phone="13800000001",
                    on_duty=True,
                )
            )
        homes = [(i, f"cm{i // 10 + 1}") for i in range(STREET_HOMES)] + [(50 + j, "cm6") for j in range(3)]
        for i, station in homes:
            s.add(Home(id=f"h{i:03d}", station_id=station, address=f"路{i}号", lat=32.69, lon=112.851))
        await s.flush()
        for i, _ in homes:
            s.add(
                Resident(
                    id=f"r{i:03d}",
                    home_id=f"h{i:03d}",
                    name="王",
                    sex="F",
                    birth_date=datetime(1940, 1, 1).date(),
                    capacity_level=2,
                )
            )
            s.add(Device(id=dev(i), home_id=f"h{i:03d}", kind="hub", heartbeat_s=60, created_at=T0))


async def store(
    maker: async_sessionmaker[AsyncSession],
    items: list[tuple[int, str, datetime]],
    source: str = "supervision",
) -> None:
    """(device number, offline/online/sos, received at) as the gateway stores them."""
    async with maker() as s, s.begin():
        await insert_events(
            s,
            [
                EventRow(
                    device_id=dev(i),
                    event_id=f"{kind}-{int(at.timestamp() * 1000)}",
                    home_id=f"h{i:03d}",
                    type=kind,
                    event_class="emergency"
                    if kind == "sos"
                    else ("trouble" if kind == "offline" else "info"),
                    sensor=None,
                    data={"cause": "will"} if kind == "offline" else {},
                    source="device" if kind == "sos" else source,
                    device_ts=None,
                    received_at=at,
                    clock_skew_s=None,
                    clock_suspect=False,
                    gateway="gw-test",
                )
                for i, kind, at in items
            ],
        )


@pytest.fixture
async def setup(
    maker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[tuple[Dispatcher, ManualClock]]:
    await add_county(maker)
    settings = load_settings(database_url="sqlite:///unused.db")
    clock = ManualClock(T0)
    yield (
        Dispatcher(
            settings=settings, maker=maker, bus=MemoryBus(), clock=clock, mqtt=None, notifier=LogNotifier()
        ),
        clock,
    )


async def drain(d: Dispatcher, batch: int = 25) -> None:
    while await d.intake_once(batch):
        pass


async def open_calls(maker: async_sessionmaker[AsyncSession]) -> list[Call]:
    async with maker() as s:
        return list(
            (
                await s.scalars(
                    select(Call).where(Call.status.in_([st.value for st in OPEN_STATUSES])).order_by(Call.id)
                )
            ).all()
        )


async def test_fifty_devices_of_one_street_are_one_incident_then_resolve_when_back(
    setup: tuple[Dispatcher, ManualClock], maker: async_sessionmaker[AsyncSession]
) -> None:
    d, clock = setup
    # the first few arrive and are handled on their own, before anybody could know
    first = [(i, "offline", T0 + timedelta(seconds=i * 0.2)) for i in range(5)]
    await store(maker, first)
    clock.advance(1)
    await drain(d)
    assert [c.event_class for c in await open_calls(maker)] == ["trouble"] * 5
    rest = [(i, "offline", T0 + timedelta(seconds=i * 0.2)) for i in range(5, STREET_HOMES)]
    await store(maker, rest)
    clock.advance(9)
    await drain(d, batch=7)  # several batches, so the incident opens in one and others join it
    still = await open_calls(maker)
    assert len(still) == 1, [(c.id, c.event_class, c.home_id) for c in still]
    inc = still[0]
    assert inc.event_class == "mass_offline" and inc.priority == "P4"
    assert inc.station_id == "st1" and inc.tier == "street" and inc.status == "assigned"
    async with maker() as s:
        row = await s.get(MassOfflineIncident, inc.id)
        assert row is not None and row.area_station_id == "st1" and row.cause == "mass_offline"
        members = (await s.scalars(select(IncidentDevice).where(IncidentDevice.call_id == inc.id))).all()
        assert sorted(m.device_id for m in members) == [dev(i) for i in range(STREET_HOMES)]
        folded = (await s.scalars(select(Call).where(Call.event_class == "trouble"))).all()
        assert len(folded) == 5 and {c.status for c in folded} == {"cancelled"}
        assert {c.outcome for c in folded} == {"merged_into_incident"}
        for c in folded:
            detail = await s.scalar(
                select(AuditRow.detail).where(AuditRow.call_id == c.id, AuditRow.kind == "cancelled")
            )
            assert detail is not None and detail["incident_call_id"] == inc.id
        merged = {m.merged_call_id for m in members if m.merged_call_id is not None}
        assert merged == {c.id for c in folded}
        opened = await s.scalar(
            select(AuditRow.detail).where(AuditRow.call_id == inc.id, AuditRow.kind == "call_opened")
        )
        assert opened is not None and opened["cause"] == "mass_offline" and opened["policy"] == "mass_offline"
        decisions = dict(
            (await s.execute(select(EventIntake.decision, func.count()).group_by(EventIntake.decision))).all()
        )
        assert decisions == {"opened": 5, "incident": STREET_HOMES - 5}

    # all but one back: still open, counted; the last back: resolved by itself
    back = [(i, "online", T0 + timedelta(seconds=60 + i * 0.1)) for i in range(STREET_HOMES)]
    await store(maker, back[:-1])
    clock.advance(60)
    await drain(d)
    assert [c.id for c in await open_calls(maker)] == [inc.id]
    await store(maker, back[-1:])
    clock.advance(5)
    await drain(d)
    assert await open_calls(maker) == []
    async with maker() as s:
        done = await s.get(Call, inc.id)
        assert done is not None and done.status == "resolved" and done.outcome == "restored"
        last = (
            await s.scalars(
                select(AuditRow).where(AuditRow.call_id == inc.id).order_by(AuditRow.seq.desc()).limit(2)
            )
        ).all()
        assert last[0].kind == "restored" and last[0].detail["devices_back"] == STREET_HOMES
        assert last[1].kind == "event_joined" and last[1].detail["devices_back"] == STREET_HOMES
        assert (await s.scalar(select(func.count()).select_from(Call))) == 6  # 5 folded + the incident
    assert (await verify_log(maker)).ok


async def test_two_devices_offline_are_ordinary_trouble_calls(
    setup: tuple[Dispatcher, ManualClock], maker: async_sessionmaker[AsyncSession]
) -> None:
    d, clock = setup
    await store(maker, [(0, "offline", T0), (11, "offline", T0 + timedelta(seconds=1))])
    clock.advance(2)
    await drain(d)
    got = await open_calls(maker)
    assert [(c.event_class, c.home_id, c.priority) for c in got] == [
        ("trouble", "h000", "P4"),
        ("trouble", "h011", "P4"),
    ]
    async with maker() as s:
        assert (await s.scalar(select(func.count()).select_from(MassOfflineIncident))) == 0
    await store(maker, [(0, "online", T0 + timedelta(seconds=30))])
    clock.advance(30)
    await drain(d)
    assert [c.home_id for c in await open_calls(maker)] == ["h011"]  # a restore clears its own call


async def test_an_observed_broker_outage_is_one_broker_restart_incident_for_the_county(
    setup: tuple[Dispatcher, ManualClock], maker: async_sessionmaker[AsyncSession]
) -> None:
    d, clock = setup
    async with maker() as s, s.begin():
        s.add(BrokerOutage(gateway="gw-test", lost_at=T0, back_at=T0 + timedelta(seconds=3)))
    # three devices of two streets: far below min_devices, but the platform saw why
    await store(
        maker,
        [
            (0, "offline", T0 + timedelta(seconds=0.5)),
            (22, "offline", T0 + timedelta(seconds=1)),
            (51, "offline", T0 + timedelta(seconds=4)),
        ],
    )
    clock.advance(5)
    await drain(d, batch=1)
    got = await open_calls(maker)
    assert len(got) == 1 and got[0].event_class == "mass_offline" and got[0].station_id == "county"
    async with maker() as s:
        row = await s.get(MassOfflineIncident, got[0].id)
        assert row is not None and row.cause == "broker_restart" and row.outage_id is not None
        opened = await s.scalar(
            select(AuditRow.detail).where(AuditRow.call_id == got[0].id, AuditRow.kind == "call_opened")
        )
        assert opened is not None and opened["label"] == "broker restart"
        assert opened["outage"]["gateway"] == "gw-test"


async def test_sos_during_a_mass_offline_still_opens_its_own_call_and_cancel_leaves_the_incident(
    setup: tuple[Dispatcher, ManualClock], maker: async_sessionmaker[AsyncSession]
) -> None:
    d, clock = setup
    await store(maker, [(i, "offline", T0 + timedelta(seconds=i * 0.1)) for i in range(30)])
    await store(maker, [(0, "sos", T0 + timedelta(seconds=4))])
    clock.advance(5)
    await drain(d)
    got = await open_calls(maker)
    assert sorted(c.event_class for c in got) == ["emergency", "mass_offline"]
    inc = next(c for c in got if c.event_class == "mass_offline")
    # a resident's cancel from the incident's anchor home cancels the SOS, never the incident
    async with maker() as s, s.begin():
        await insert_events(
            s,
            [
                EventRow(
                    device_id=dev(int(inc.home_id[1:])),
                    event_id="cancel-1",
                    home_id=inc.home_id,
                    type="cancel",
                    event_class="cancel",
                    sensor=None,
                    data={},
                    source="device",
                    device_ts=None,
                    received_at=T0 + timedelta(seconds=6),
                    clock_skew_s=None,
                    clock_suspect=False,
                    gateway="gw-test",
                )
            ],
        )
    clock.advance(2)
    await drain(d)
    assert [c.id for c in await open_calls(maker)] == [inc.id]


async def test_the_incident_is_one_line_in_the_queue_and_its_detail_lists_devices_and_counts(
    setup: tuple[Dispatcher, ManualClock],
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from argon2 import PasswordHasher

    import dispatcher.auth.passwords as auth
    from carecall.shell.app import create_app
    from dispatcher.auth.tokens import TokenSigner
    from dispatcher.auth.users import create_user
    from dispatcher.engine.process import load_context

    d, clock = setup
    monkeypatch.setattr(
        auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1), raising=False
    )
    async with maker() as s, s.begin():
        await create_user(
            s,
            username="op-st1",
            password="password-123",
            role="operator",
            station_id="st1",
            display_name="x",
            now=T0,
        )
    await store(maker, [(i, "offline", T0 + timedelta(seconds=i * 0.1)) for i in range(25)])
    await store(maker, [(i, "online", T0 + timedelta(seconds=30)) for i in range(10)])
    clock.advance(31)
    await drain(d)
    settings = load_settings(database_url="sqlite:///unused.db")
    app = create_app(
        maker, signer=TokenSigner(b"k" * 32), ctx=load_context(settings), clock=clock, bus=MemoryBus()
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        tok = (
            await client.post("/api/v1/auth/token", data={"username": "op-st1", "password": "password-123"})
        ).json()
        headers = {"Authorization": f"Bearer {tok['access_token']}"}
        queue = (await client.get("/api/v1/calls", headers=headers)).json()
        assert [(c["event_class"], c["station_id"], c["priority"]) for c in queue] == [
            ("mass_offline", "st1", "P4")
        ]
        detail = (await client.get(f"/api/v1/calls/{queue[0]['id']}", headers=headers)).json()
        joined = [row["detail"] for row in detail["timeline"] if row["kind"] == "event_joined"]
        assert sorted(j["device_id"] for j in joined if j["type"] == "offline") == [dev(i) for i in range(25)]
        assert {j["home_id"] for j in joined} >= {f"h{i:03d}" for i in range(25)}
        assert joined[-1]["devices_total"] == 25 and joined[-1]["devices_back"] == 10
        # devices still away: the station closes the incident by hand, like any call
        r = await client.post(
            f"/api/v1/calls/{queue[0]['id']}/resolve",
            headers=headers,
            json={"outcome": "other", "note": "visited"},
        )
        assert r.status_code == 200, r.text
    assert await open_calls(maker) == []
