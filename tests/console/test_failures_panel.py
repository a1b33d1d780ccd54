"""The "Could not be processed" panel in a real browser against a real ``carecall demo``:
an event the dispatcher set aside is listed with its error for the station's operator;
an admin retries it, and the dispatcher then turns it into a call."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from carecall.core.db import make_engine, make_sessionmaker
from device_gateway.models import DeviceEvent
from device_gateway.store import EventRow, insert_events
from dispatcher.calls.models import EventIntake, IntakeFailure
from tests.console.conftest import DemoServer
from tests.console.test_browser import pick_home, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ERROR = "ProgrammingError: could not identify an equality operator for type json"


async def set_aside_event(demo: DemoServer, device_id: str, home_id: str) -> int:
    """An SOS stored and set aside after three failed attempts, as the dispatcher leaves it."""
    engine = make_engine(f"sqlite:///{demo.workdir / 'carecall.db'}")
    maker = make_sessionmaker(engine)
    now = datetime.now(UTC)
    try:
        async with maker() as s, s.begin():
            await insert_events(
                s,
                [
                    EventRow(
                        device_id=device_id,
                        event_id=f"poison-{time.time_ns()}",
                        home_id=home_id,
                        type="sos",
                        event_class="emergency",
                        sensor=None,
                        data={},
                        source="device",
                        device_ts=now,
                        received_at=now,
                        clock_skew_s=0.0,
                        clock_suspect=False,
                        gateway="test",
                    )
                ],
            )
            pk = int((await s.scalar(select(DeviceEvent.id).order_by(DeviceEvent.id.desc()).limit(1))) or 0)
            s.add(
                EventIntake(event_pk=pk, decision="failed", call_id=None, handled_at=now, handled_by="test")
            )
            s.add(
                IntakeFailure(
                    kind="event",
                    ref=pk,
                    attempts=3,
                    error=ERROR,
                    first_failed_at=now,
                    last_failed_at=now,
                    next_attempt_at=now,
                    set_aside_at=now,
                    failed_by="test",
                )
            )
        return pk
    finally:
        await engine.dispose()


async def test_set_aside_event_is_shown_and_an_admin_retries_it(browser: Any, demo: DemoServer) -> None:
    home = pick_home(demo, skip=3)
    [(home_id,)] = demo.query(f"select home_id from devices where id = '{home['device']}'")
    pk = await set_aside_event(demo, home["device"], str(home_id))
    demo.create_user("fail-op", home["station"])

    op = await signed_in(browser, demo, "fail-op")
    await op.wait_for_selector("#failures:not([hidden])")
    text = await op.inner_text("#failures")
    assert home["device"] in text and ERROR in text
    assert await op.locator(".fail-retry").count() == 0, "only admins retry"

    admin = await signed_in(browser, demo, "admin", "admin-password-1")
    await admin.wait_for_selector("#failures:not([hidden])")
    await admin.click(f'.fail-retry[data-ref="{pk}"]')
    await admin.wait_for_selector("#failures", state="hidden")
    deadline = time.monotonic() + 20
    while True:
        rows = demo.query(f"select decision from event_intake where event_pk = {pk}")
        if rows and rows[0][0] in ("opened", "joined"):
            break
        assert time.monotonic() < deadline, f"the event put back was not handled: {rows}"
        await asyncio.sleep(0.2)
    await op.context.close()
    await admin.context.close()
