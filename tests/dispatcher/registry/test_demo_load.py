from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from device_gateway.credentials import verify_secret
from device_gateway.models import Device
from dispatcher.registry.demo_county import DemoCounty
from dispatcher.registry.demo_load import load_demo_county, rekey_devices
from dispatcher.registry.service import registry_counts

from .support import NOW, Maker


async def test_load_issues_secrets_and_is_idempotent(
    demo_db: tuple[Maker, dict[str, str]], county: DemoCounty
) -> None:
    maker, secrets = demo_db
    async with maker() as session:
        counts = await registry_counts(session)
        result = await session.execute(select(Device.id, Device.secret_hash))
        hashes = {device_id: secret_hash for device_id, secret_hash in result.all()}
    assert counts["stations"] == 85
    assert counts["homes"] == 210
    assert counts["residents"] == len(county.residents)
    assert counts["devices"] == counts["devices_keyed"] == len(county.devices) == len(secrets)
    assert counts["contacts"] == sum(len(r.contacts) for r in county.residents)
    assert verify_secret(secrets["h0001-hub"], hashes["h0001-hub"])
    assert not verify_secret(secrets["h0001-hub"], hashes["h0002-hub"])

    assert await load_demo_county(maker, county, now=NOW) == {}
    async with maker() as session:
        assert await registry_counts(session) == counts


async def test_rekey_devices(demo_db: tuple[Maker, dict[str, str]]) -> None:
    maker, old = demo_db
    new = await rekey_devices(maker, ["h0001-hub", "h0002-hub"], now=NOW + timedelta(hours=1))
    assert set(new) == {"h0001-hub", "h0002-hub"}
    async with maker() as session:
        device = await session.get(Device, "h0001-hub")
    assert device is not None
    assert verify_secret(new["h0001-hub"], device.secret_hash)
    assert not verify_secret(old["h0001-hub"], device.secret_hash)
    assert device.rekeyed_at == NOW + timedelta(hours=1)
    with pytest.raises(ValueError, match="unknown device"):
        await rekey_devices(maker, ["nope"], now=NOW)


async def test_load_stores_phones_and_hand_off_facts(
    demo_db: tuple[Maker, dict[str, str]], county: DemoCounty
) -> None:
    from dispatcher.registry.models import Home, Resident

    maker, _ = demo_db
    async with maker() as session:
        lines = dict((await session.execute(select(Home.id, Home.phone))).all())
        facts = {
            rid: (phone, meds, allergies, access)
            for rid, phone, meds, allergies, access in (
                await session.execute(
                    select(
                        Resident.id,
                        Resident.phone,
                        Resident.medications,
                        Resident.allergies,
                        Resident.access_notes,
                    )
                )
            ).all()
        }
    assert lines == {h.id: h.phone for h in county.homes}
    assert facts == {r.id: (r.phone, r.medications, r.allergies, r.access_notes) for r in county.residents}
