"""API security (issue 10, items 8-10): sign-in throttling and lockout, logout and
revocation, stream tickets, bad requests that must not answer 5xx, size limits, security
headers, the overview's scope, masked phone numbers in logs, and personal data by role."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.shell.app import create_app
from carecall.shell.security import HttpLimits, json_too_deep
from device_gateway.models import Device
from dispatcher.audit import service as audit
from dispatcher.audit.models import AuditRow
from dispatcher.auth.lockout import LoginPolicy, unlock_user
from dispatcher.auth.models import User
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import create_user
from dispatcher.console.stream import StreamConfig
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.registry.models import Contact
from tests.conftest import add_small_registry
from tests.support.api import api_world
from tests.support.events import store_event
from tests.support.registry import PW, add_logins, add_second_street, staff_row

Maker = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
POLICY = LoginPolicy(max_failures=3, lock_s=600, throttle_ip="12/minute", throttle_user="6/minute")


pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def world(maker: Maker) -> AsyncIterator[dict[str, Any]]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        await add_second_street(s)
        s.add(staff_row("cm1-r1"))
        s.add(Contact(resident_id="r1", name="王小红", relation="女儿", phone="13912345678", priority=1))
        await create_user(
            s,
            username="admin",
            password="admin-password",
            role="admin",
            station_id=None,
            display_name="",
            now=T0,
        )
        await add_logins(
            s,
            [("op-cm1", "operator", "cm1"), ("sup-cm1", "supervisor", "cm1"), ("op-cm2", "operator", "cm2")],
            now=T0,
        )
    async with api_world(
        maker,
        T0,
        stream_config=StreamConfig(heartbeat_s=0.05, max_stream_s=0.5, retry_ms=100),
        login_policy=POLICY,
        http_limits=HttpLimits(max_body_bytes=64 * 1024),
    ) as w:
        yield {"client": w.client, "dispatcher": w.dispatcher, "app": w.app}


async def login(c: httpx.AsyncClient, username: str, password: str = PW) -> httpx.Response:
    return await c.post("/api/v1/auth/token", data={"username": username, "password": password})


async def token(c: httpx.AsyncClient, username: str, password: str = PW) -> str:
    r = await login(c, username, password)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def user_id(maker: Maker, username: str) -> int:
    async with maker() as s:
        uid = await s.scalar(select(User.id).where(User.username == username))
    assert uid is not None
    return uid


async def open_call(world: dict[str, Any], maker: Maker) -> int:
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    assert await world["dispatcher"].intake_once() is not None
    async with maker() as s:
        from dispatcher.calls.models import Call

        return int(await s.scalar(select(Call.id).order_by(Call.id.desc()).limit(1)) or 0)


# ------------------------------------------------------------------ sign-in


async def test_failed_logins_lock_the_account_until_an_admin_unlocks_it(
    world: dict[str, Any], maker: Maker
) -> None:
    c: httpx.AsyncClient = world["client"]
    for _ in range(POLICY.max_failures - 1):
        assert (await login(c, "op-cm1", "wrong-password")).status_code == 401
    r = await login(c, "op-cm1", "wrong-password")
    assert r.status_code == 423, r.text
    assert "locked" in r.json()["detail"] and "try again" in r.json()["detail"]
    assert int(r.headers["retry-after"]) > 500
    # even the right password is refused while locked, with the same clear message
    r = await login(c, "op-cm1")
    assert r.status_code == 423 and "administrator" in r.json()["detail"]
    admin = await token(c, "admin", "admin-password")
    uid = await user_id(maker, "op-cm1")
    # only admins unlock
    op2 = await token(c, "op-cm2")
    assert (await c.post(f"/api/v1/users/{uid}/unlock", headers=bearer(op2))).status_code == 403
    r = await c.post(f"/api/v1/users/{uid}/unlock", headers=bearer(admin))
    assert r.status_code == 200, r.text
    assert (await login(c, "op-cm1")).status_code == 200
    async with maker() as s:
        kinds = list(
            await s.scalars(select(AuditRow.kind).where(AuditRow.call_id.is_(None)).order_by(AuditRow.seq))
        )
        details = [
            r.detail for r in (await s.scalars(select(AuditRow).where(AuditRow.call_id.is_(None)))).all()
        ]
    assert kinds == ["login_locked", "login_unlocked"], kinds
    assert all(d.get("username") == "op-cm1" for d in details)
    assert (await audit.verify_log(maker)).ok  # the rows extend the hash chain properly


async def test_a_success_resets_the_count_of_failures(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    # 4 failures in all (more than max_failures) but never max_failures in a row
    for _ in range(2):
        for _ in range(POLICY.max_failures - 1):
            assert (await login(c, "op-cm2", "wrong-password")).status_code == 401
        assert (await login(c, "op-cm2")).status_code == 200


async def test_failures_are_throttled_per_username_and_per_address(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    # an unknown username cannot be locked, but is throttled
    codes = [(await login(c, "nobody-here", "x-password")).status_code for _ in range(8)]
    assert codes[:6] == [401] * 6 and codes[6:] == [429, 429], codes
    r = await login(c, "nobody-here", "x-password")
    assert "too many failed sign-ins" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1
    # other names from the same address: the address limit (12) ends it
    codes = [(await login(c, f"guess-{i}", "x-password")).status_code for i in range(8)]
    assert 429 in codes and codes.index(429) == 6, codes
    # the address is throttled even for a real user with the right password
    assert (await login(c, "op-cm1")).status_code == 429


async def test_the_cli_unlocks_an_account(world: dict[str, Any], maker: Maker) -> None:
    c: httpx.AsyncClient = world["client"]
    for _ in range(POLICY.max_failures):
        await login(c, "op-cm1", "wrong-password")
    assert (await login(c, "op-cm1")).status_code == 423
    await unlock_user(maker, username="op-cm1", actor="cli", now=datetime.now(UTC))
    assert (await login(c, "op-cm1")).status_code == 200
    with pytest.raises(ValueError, match="no user"):
        await unlock_user(maker, username="nobody", actor="cli", now=datetime.now(UTC))


# ------------------------------------------------------------------ tokens


async def test_logout_revokes_only_that_token(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    first, second = await token(c, "op-cm1"), await token(c, "op-cm1")
    assert (await c.get("/api/v1/auth/me", headers=bearer(first))).status_code == 200
    assert (await c.post("/api/v1/auth/logout", headers=bearer(first))).status_code == 204
    r = await c.get("/api/v1/auth/me", headers=bearer(first))
    assert r.status_code == 401 and "signed out" in r.json()["detail"]
    assert (await c.get("/api/v1/auth/me", headers=bearer(second))).status_code == 200


async def test_admin_revokes_every_token_of_a_user(world: dict[str, Any], maker: Maker) -> None:
    c: httpx.AsyncClient = world["client"]
    toks = [await token(c, "op-cm1") for _ in range(2)]
    admin = await token(c, "admin", "admin-password")
    uid = await user_id(maker, "op-cm1")
    assert (await c.post(f"/api/v1/users/{uid}/revoke-tokens", headers=bearer(toks[0]))).status_code == 403
    assert (await c.post(f"/api/v1/users/{uid}/revoke-tokens", headers=bearer(admin))).status_code == 204
    for t in toks:
        assert (await c.get("/api/v1/auth/me", headers=bearer(t))).status_code == 401
    assert (await c.get("/api/v1/auth/me", headers=bearer(admin))).status_code == 200
    assert (await login(c, "op-cm1")).status_code == 200  # signing in again works


async def test_a_password_change_ends_older_tokens(world: dict[str, Any], maker: Maker) -> None:
    c: httpx.AsyncClient = world["client"]
    old = await token(c, "op-cm1")
    r = await c.post(
        "/api/v1/auth/password",
        headers=bearer(old),
        json={"current_password": "not-it-at-all", "new_password": "new-password-1"},
    )
    assert r.status_code == 403
    r = await c.post(
        "/api/v1/auth/password",
        headers=bearer(old),
        json={"current_password": PW, "new_password": "new-password-1"},
    )
    assert r.status_code == 200, r.text
    fresh = r.json()["access_token"]
    assert (await c.get("/api/v1/auth/me", headers=bearer(old))).status_code == 401
    assert (await c.get("/api/v1/auth/me", headers=bearer(fresh))).status_code == 200
    # an admin setting the password ends the user's tokens too
    admin = await token(c, "admin", "admin-password")
    uid = await user_id(maker, "op-cm1")
    r = await c.patch(f"/api/v1/users/{uid}", headers=bearer(admin), json={"password": "third-password"})
    assert r.status_code == 200, r.text
    assert (await c.get("/api/v1/auth/me", headers=bearer(fresh))).status_code == 401
    assert (await login(c, "op-cm1", "third-password")).status_code == 200


async def test_the_stream_takes_a_ticket_not_the_token(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    tok = await token(c, "op-cm1")
    assert (await c.get("/api/v1/stream", params={"token": tok})).status_code in (401, 422)
    assert (await c.get("/api/v1/stream", params={"ticket": tok})).status_code == 401
    r = await c.post("/api/v1/auth/stream-ticket", headers=bearer(tok))
    assert r.status_code == 200, r.text
    ticket, ttl = r.json()["ticket"], r.json()["expires_in"]
    assert 0 < ttl <= 60
    r = await c.get("/api/v1/stream", params={"ticket": ticket})
    assert r.status_code == 200 and "event: snapshot" in r.text
    # a ticket is good for nothing else
    assert (await c.get("/api/v1/auth/me", headers=bearer(ticket))).status_code == 401
    # signing out ends the tickets of that sign-in
    assert (await c.post("/api/v1/auth/logout", headers=bearer(tok))).status_code == 204
    assert (await c.get("/api/v1/stream", params={"ticket": ticket})).status_code == 401


# ------------------------------------------------------------------ bad requests


async def test_nul_bytes_anywhere_are_refused_not_crashed(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    admin = await token(c, "admin", "admin-password")
    r = await c.get("/api/v1/residents/r%001", headers=bearer(admin))
    assert r.status_code == 400 and "NUL" in r.json()["detail"]
    r = await c.get("/api/v1/residents", params={"home_id": "h\x001"}, headers=bearer(admin))
    assert r.status_code == 400
    r = await c.post("/api/v1/auth/token", data={"username": "op\x00", "password": PW})
    assert r.status_code == 422
    r = await c.post("/api/v1/auth/token", json={"username": "op\u0000", "password": PW})
    assert r.status_code == 422
    r = await c.post("/api/v1/auth/token", data={"username": "op-cm1", "password": "p" * 100_000})
    assert r.status_code in (413, 422)
    r = await c.post("/api/v1/auth/token", data={"username": "op-cm1", "password": "p" * 20_000})
    assert r.status_code == 422 and "too long" in r.json()["detail"]
    r = await c.patch("/api/v1/residents/r1", headers=bearer(admin), json={"notes": "a\u0000b"})
    assert r.status_code == 422
    # an escaped backslash followed by the text u0000 is ordinary text
    r = await c.patch("/api/v1/residents/r1", headers=bearer(admin), json={"notes": "path C:\\u0000"})
    assert r.status_code == 200, r.text


async def test_deeply_nested_json_is_refused(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    deep = "[" * 1000 + "]" * 1000
    r = await c.post("/api/v1/auth/token", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "nested" in r.json()["detail"]
    body = '{"username": ' + "{" * 50 + "}" * 50 + "}"
    r = await c.post("/api/v1/auth/token", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert json_too_deep(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') is False
    assert json_too_deep(b"[" * 40 + b"]" * 40) is True


async def test_size_limits(world: dict[str, Any], maker: Maker) -> None:
    c: httpx.AsyncClient = world["client"]
    admin = await token(c, "admin", "admin-password")
    cid = await open_call(world, maker)
    op = await token(c, "op-cm1")
    # a million staff ids: refused at the edge, quickly
    huge = json.dumps({"staff_ids": ["x"] * 1_000_000})
    r = await c.post(
        f"/api/v1/calls/{cid}/dispatch",
        headers={**bearer(op), "content-type": "application/json"},
        content=huge,
    )
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    # under the byte limit, the list itself is bounded
    r = await c.post(
        f"/api/v1/calls/{cid}/dispatch", headers=bearer(op), json={"staff_ids": ["cm1-r1"] * 200}
    )
    assert r.status_code == 422

    # a body that lies about its size (no content-length) is cut off too
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    r = await c.patch(
        "/api/v1/residents/r1",
        headers={**bearer(admin), "content-type": "application/json"},
        content=chunks(),
    )
    assert r.status_code == 413
    # text fields have sensible maxima
    r = await c.patch("/api/v1/residents/r1", headers=bearer(admin), json={"notes": "很" * 5000})
    assert r.status_code == 422
    r = await c.patch("/api/v1/residents/r1", headers=bearer(admin), json={"conditions": ["x"] * 500})
    assert r.status_code == 422
    r = await c.patch("/api/v1/homes/h1", headers=bearer(admin), json={"notes": "n" * 5000})
    assert r.status_code == 422
    r = await c.patch("/api/v1/residents/r1", headers=bearer(admin), json={"notes": "ok"})
    assert r.status_code == 200


# ------------------------------------------------------------------ responses


HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


async def test_security_headers_on_every_kind_of_response(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    tok = await token(c, "op-cm1")
    responses = [
        await c.get("/healthz"),
        await c.get("/api/v1/auth/me"),  # 401
        await c.get("/api/v1/auth/me", headers=bearer(tok)),
        await c.get("/api/v1/calls/999999", headers=bearer(tok)),  # 404
        await c.get("/console/"),
        await c.get("/console/static/app.js"),
        await c.get("/console/static/nope.js"),
        await c.get("/"),  # redirect
        await c.get("/no/such/route"),
        await c.get("/openapi.json"),
        await c.get("/api/v1/residents/%00", headers=bearer(tok)),  # 400 from the middleware
        await c.post("/api/v1/auth/token", content=b"x" * 70_000),  # 413
        await c.get("/api/v1/stream", params={"ticket": "forged"}),
    ]
    for r in responses:
        for name, value in HEADERS.items():
            assert r.headers.get(name) == value, (r.request.url, r.status_code, name)
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
    assert (
        responses[-4].status_code == 200
        and "script-src 'self'" in responses[4].headers["content-security-policy"]
    )
    docs = await c.get("/docs")
    # the docs' files are served locally: the docs' policy allows nothing from elsewhere
    assert docs.status_code == 200 and "https:" not in docs.headers["content-security-policy"]
    assert docs.headers["x-frame-options"] == "DENY"


async def test_an_unhandled_error_is_a_plain_500_with_headers(world: dict[str, Any]) -> None:
    app = world["app"]

    @app.get("/boom-for-test")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    r = await world["client"].get("/boom-for-test")
    assert r.status_code == 500 and "secret internals" not in r.text
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_the_overview_is_scoped(world: dict[str, Any], maker: Maker) -> None:
    c: httpx.AsyncClient = world["client"]
    await open_call(world, maker)
    async with maker() as s, s.begin():
        s.add(Device(id="h2-btn", home_id="h2", kind="button", heartbeat_s=60, enabled=True, created_at=T0))
    whole = (
        await c.get("/api/v1/overview", headers=bearer(await token(c, "admin", "admin-password")))
    ).json()
    assert (whole["stations"], whole["homes"], whole["devices"]) == (5, 2, 2)
    assert whole["events_stored"] == 1
    cm2 = (await c.get("/api/v1/overview", headers=bearer(await token(c, "op-cm2")))).json()
    assert (cm2["stations"], cm2["homes"], cm2["devices"], cm2["events_stored"]) == (1, 1, 1, 0)
    assert cm2["events_by_class"] == {}
    cm1 = (await c.get("/api/v1/overview", headers=bearer(await token(c, "op-cm1")))).json()
    assert (cm1["stations"], cm1["homes"], cm1["devices"], cm1["events_stored"]) == (1, 1, 1, 1)


# ------------------------------------------------------------------ personal data by role


async def test_supervisors_see_no_health_data_or_relatives_phones(
    world: dict[str, Any], maker: Maker
) -> None:
    c: httpx.AsyncClient = world["client"]
    cid = await open_call(world, maker)
    op, sup = await token(c, "op-cm1"), await token(c, "sup-cm1")

    full = (await c.get("/api/v1/residents/r1", headers=bearer(op))).json()
    assert full["name"] == "王秀英" and full["conditions"] == ["高血压"]
    assert full["contacts"][0]["phone"] == "13912345678"

    seen = (await c.get("/api/v1/residents/r1", headers=bearer(sup))).json()
    assert seen["name"] == "王**" and seen["conditions"] == [] and seen["notes"] == ""
    assert seen["birth_date"] is None
    assert seen["contacts"][0]["phone"] == "139****5678" and seen["contacts"][0]["name"] == "王**"
    listed = (await c.get("/api/v1/residents", headers=bearer(sup))).json()["items"]
    assert listed[0]["conditions"] == [] and "13912345678" not in json.dumps(listed)

    ctx = (await c.get(f"/api/v1/console/calls/{cid}/context", headers=bearer(sup))).json()
    assert ctx["resident"]["conditions"] == [] and ctx["resident"]["name"] == "王**"
    assert "13912345678" not in json.dumps(ctx, ensure_ascii=False)
    detail = (await c.get(f"/api/v1/calls/{cid}", headers=bearer(sup))).json()
    assert detail["resident_name"] == "王**"
    op_ctx = (await c.get(f"/api/v1/console/calls/{cid}/context", headers=bearer(op))).json()
    assert op_ctx["resident"]["contacts"][0]["phone"] == "13912345678"


async def test_every_read_of_a_resident_is_recorded_for_admins(world: dict[str, Any], maker: Maker) -> None:
    c: httpx.AsyncClient = world["client"]
    cid = await open_call(world, maker)
    op, sup = await token(c, "op-cm1"), await token(c, "sup-cm1")
    await c.get("/api/v1/residents/r1", headers=bearer(op))
    await c.get(f"/api/v1/calls/{cid}", headers=bearer(sup))
    await c.get(f"/api/v1/console/calls/{cid}/context", headers=bearer(op))
    await c.get("/api/v1/residents/nope", headers=bearer(op))  # a 404 reads nothing
    assert (await c.get("/api/v1/record-reads", headers=bearer(op))).status_code == 403
    admin = await token(c, "admin", "admin-password")
    r = await c.get("/api/v1/record-reads", headers=bearer(admin), params={"resident_id": "r1"})
    assert r.status_code == 200, r.text
    rows = r.json()["items"]
    got = sorted((x["username"], x["route"], x["call_id"]) for x in rows)
    assert got == [
        ("op-cm1", "GET /api/v1/console/calls/{call_id}/context", cid),
        ("op-cm1", "GET /api/v1/residents/{resident_id}", None),
        ("sup-cm1", "GET /api/v1/calls/{call_id}", cid),
    ], got
    assert all(x["resident_id"] == "r1" and x["at"] for x in rows)


# ------------------------------------------------------------------ logs


async def test_the_log_notifier_masks_phone_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    from carecall.core.logs import configure_logging
    from dispatcher.notifications.notifiers import Message

    configure_logging("INFO", "json")
    await LogNotifier().send(
        Message(notification_id=1, call_id=7, purpose="notify_contact", target="phone:13912345678", body={})
    )
    err = capsys.readouterr().err
    assert "13912345678" not in err
    assert "phone:139****5678" in err


def test_every_log_line_masks_phone_like_values(capsys: pytest.CaptureFixture[str]) -> None:
    import structlog

    from carecall.core.logs import configure_logging, mask_phone

    configure_logging("INFO", "json")
    structlog.get_logger("t").info(
        "contact 13800000002 rang back",
        body={"contacts": [{"phone": "+86 139-1234-5678"}, "0377-61234567"]},
        device="btn-00042",
        at="2026-12-06T10:00:00+00:00",
        event_id=1733472000123,
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    text = json.dumps(line)
    for number in ("13800000002", "1234-5678", "61234567"):
        assert number not in text, text
    assert line["event"] == "contact 138****0002 rang back"
    assert line["device"] == "btn-00042" and line["at"] == "2026-12-06T10:00:00+00:00"
    assert line["event_id"] == 1733472000123
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("call 12 at 10:00, order 20261206") == "call 12 at 10:00, order 20261206"


def test_cli_unlocks_and_revokes(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from typer.testing import CliRunner

    from carecall.core.db import make_engine, make_sessionmaker
    from carecall.shell.cli import app as cli
    from dispatcher.auth.models import LoginState

    async def setup() -> None:
        engine = make_engine(db_url)
        maker = make_sessionmaker(engine)
        async with maker() as s, s.begin():
            user = await create_user(
                s, username="locked-op", password=PW, role="admin", station_id=None, display_name="", now=T0
            )
            state = await s.get(LoginState, user.id)
            assert state is not None
            state.failed_logins, state.locked_until = 5, datetime(2100, 1, 1, tzinfo=UTC)
        await engine.dispose()

    async def state() -> tuple[int, datetime | None, int, list[str]]:
        engine = make_engine(db_url)
        async with make_sessionmaker(engine)() as s:
            row = (await s.scalars(select(LoginState))).one()
            kinds = list(await s.scalars(select(AuditRow.kind).order_by(AuditRow.seq)))
        await engine.dispose()
        return row.failed_logins, row.locked_until, row.token_version, kinds

    asyncio.run(setup())
    monkeypatch.setenv("CARECALL_DATABASE_URL", db_url)
    result = CliRunner().invoke(cli, ["users", "unlock", "locked-op"])
    assert result.exit_code == 0 and "unlocked" in result.output, result.output
    result = CliRunner().invoke(cli, ["users", "revoke", "locked-op"])
    assert result.exit_code == 0, result.output
    assert asyncio.run(state()) == (0, None, 1, ["login_unlocked", "tokens_revoked"])
    result = CliRunner().invoke(cli, ["users", "unlock", "nobody"])
    assert result.exit_code == 2 and "no user 'nobody'" in result.output


async def test_the_monthly_reports_inline_style_is_allowed_by_the_console_csp(world: dict[str, Any]) -> None:
    """The console opens the monthly report as a blob page, which inherits its CSP; the
    report's one inline <style> is allowed by hash, nothing else inline is."""
    import base64
    import hashlib
    import re

    c: httpx.AsyncClient = world["client"]
    admin = await token(c, "admin", "admin-password")
    r = await c.get("/api/v1/reports/monthly", params={"month": "2026-11"}, headers=bearer(admin))
    assert r.status_code == 200, r.text
    styles = re.findall(r"<style>(.*?)</style>", r.text, re.DOTALL)
    assert len(styles) == 1 and " style=" not in r.text and "<script" not in r.text
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    csp = (await c.get("/console/")).headers["content-security-policy"]
    assert f"'sha256-{digest}'" in csp


async def test_signing_out_ends_an_open_stream(maker: Maker, world: dict[str, Any]) -> None:
    import asyncio

    app = create_app(
        maker,
        signer=TokenSigner(b"k" * 32),
        bus=MemoryBus(),
        stream_config=StreamConfig(heartbeat_s=0.05, max_stream_s=20.0, retry_ms=100),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        tok = await token(c, "op-cm1")
        ticket = (await c.post("/api/v1/auth/stream-ticket", headers=bearer(tok))).json()["ticket"]
        started = asyncio.get_running_loop().time()
        reading = asyncio.create_task(c.get("/api/v1/stream", params={"ticket": ticket}))
        await asyncio.sleep(0.3)
        assert (await c.post("/api/v1/auth/logout", headers=bearer(tok))).status_code == 204
        r = await asyncio.wait_for(reading, timeout=15)
    assert "event: bye" in r.text and "event: reconnect" not in r.text
    assert asyncio.get_running_loop().time() - started < 15
