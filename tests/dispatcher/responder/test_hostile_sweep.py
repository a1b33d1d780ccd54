"""A hostile sweep of what a responder's phone and a family's link can send: every
/api/v1/m route signed in as a RESPONDER (so the handlers run, not just the auth check),
and the family pages /f/… (not in OpenAPI) with malformed, tampered and oversized tokens
and bodies. Never a 5xx; input that cannot be right gets a 4xx. Deterministic (a seeded
generator), no external service: a normal test."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.paging.models import Page
from dispatcher.paging.policy import PagingMode
from dispatcher.responder.views import PHONE_ACTIONS
from tests.dispatcher.family.test_views import contact_links
from tests.dispatcher.family.test_views import world as family_world
from tests.dispatcher.responder.test_views import login, open_call_and_page, world

__all__ = ["family_world", "world"]

Maker = async_sessionmaker[AsyncSession]
pytestmark = pytest.mark.usefixtures("cheap_argon2")

ROUNDS = 160  # requests per sweep (each a few ms on SQLite)

BAD_IDS = [
    "-1",
    "0",
    str(2**31),
    str(2**63),
    str(2**64 + 7),
    "-" + "9" * 40,
    "1e3",
    "0x10",
    "abc",
    "%00",
    "1%20OR%201=1",
    "１２",  # full-width digits
    "%F0%9F%92%A9",
    "9" * 400,
]
BAD_ACTIONS = [
    "accept",
    "decline",
    "ACCEPT",
    "x" * 300,
    "%2e%2e",
    "resolve%00",
    "note;",
    "%E5%87%BA%E5%8F%91",
]
JUNK_BODIES: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"{",
    b'"string"',
    b"1e999999",
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"outcome": 5, "note": [], "reason": {}}',
    b'{"note": "' + b"x" * 20000 + b'"}',
    b'{"reason": "' + b"y" * 201 + b'"}',
    b'{"availability": "sleeping"}',
    b'{"availability": null}',
    b'{"availability": ["on_duty"]}',
    b"\xff\xfe\x00garbage\x80",
    b'{"outcome": "resolved\\u0000"}',
    b"availability=on_duty",
    bytes(range(256)),
    b"x" * 300_000,
]
GOOD_BODIES: list[bytes] = [
    b'{"availability": "on_duty"}',
    b'{"availability": "busy"}',
    b'{"reason": "at another home"}',
    b'{"note": "\xe5\xb7\xb2\xe5\x88\xb0\xe5\x9c\xba"}',
    b'{"outcome": "resolved"}',
]
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    None,
]


def _tampered_tokens(token: str, rng: random.Random) -> Iterator[str]:
    i = rng.randrange(len(token))
    flip = "A" if token[i] != "A" else "B"
    yield token[:i] + flip + token[i + 1 :]
    yield token[: len(token) // 2]
    yield token + token
    yield token + "." + token
    yield "x" * 8192
    yield token.replace(".", "..")
    yield "%00" + token
    yield "王" * 300
    yield token.upper()


async def _send(
    c: httpx.AsyncClient,
    method: str,
    url: str,
    body: bytes | None,
    ctype: str | None,
    headers: dict[str, str],
) -> httpx.Response:
    h = dict(headers)
    if ctype is not None:
        h["Content-Type"] = ctype
    return await c.request(method, url, content=body, headers=h)


def _phone_case(rng: random.Random, page_id: int, call_id: int) -> tuple[str, str, bytes | None, bool]:
    """(method, path, body, must_be_4xx)."""
    good_id = rng.random() < 0.5
    pid = str(page_id) if good_id else rng.choice(BAD_IDS)
    cid = str(call_id) if good_id else rng.choice(BAD_IDS)
    good_body = rng.random() < 0.4
    body = rng.choice(GOOD_BODIES if good_body else JUNK_BODIES)
    kind = rng.randrange(6)
    if kind == 0:
        return "PUT", "/api/v1/m/availability", body, not good_body
    if kind == 1:
        return "POST", f"/api/v1/m/pages/{pid}/accept", body, not good_id
    if kind == 2:
        return "POST", f"/api/v1/m/pages/{pid}/decline", body, not (good_id and good_body)
    if kind == 3:
        good_action = rng.random() < 0.6
        action = rng.choice(PHONE_ACTIONS if good_action else BAD_ACTIONS)
        return "POST", f"/api/v1/m/calls/{cid}/{action}", body, not (good_id and good_action)
    if kind == 4:
        query = rng.choice(["", "?x=" + "%" * 50, "?limit=-1", "?" + "a=1&" * 500])
        return "GET", rng.choice(["/api/v1/m/cards", "/api/v1/m/me"]) + query, None, False
    ticket = rng.choice(["", "x" * 2000, "%00", "a.b.c"])
    return "GET", f"/api/v1/m/stream?ticket={ticket}", None, True


async def test_the_phone_api_signed_in_as_a_responder_never_fails_with_a_5xx(
    world: dict[str, Any], maker: Maker
) -> None:
    c: httpx.AsyncClient = world["client"]
    call_id = await open_call_and_page(world, maker, PagingMode.all_at_once)
    li = await login(c, "li")
    async with maker() as s:
        page_id = int(await s.scalar(select(Page.id).where(Page.staff_id == "cm1-r1")) or 0)
        other_page = int(await s.scalar(select(Page.id).where(Page.staff_id == "cm1-r2")) or 0)
    assert page_id and other_page
    rng = random.Random(20261206)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    token = li["Authorization"].removeprefix("Bearer ")
    for n in range(ROUNDS):
        method, path, body, bad = _phone_case(rng, page_id if n % 7 else other_page, call_id)
        headers = dict(li)
        if n % 11 == 0:  # now and then a tampered sign-in: refused, never a crash
            headers = {"Authorization": "Bearer " + next(_tampered_tokens(token, rng))}
            bad = True
        r = await _send(c, method, path, body, rng.choice(CONTENT_TYPES), headers)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if r.status_code >= 500 or (bad and not 400 <= r.status_code < 500):
            failures.append(f"{method} {path[:80]} body={body[:40] if body else body!r} -> {r.status_code}")
    assert not failures, "\n".join(failures)
    # the handlers ran, not just the sign-in: answers past auth and validation came back
    assert statuses.get(200, 0) >= 10, statuses
    assert sum(v for k, v in statuses.items() if k in (404, 409)) >= 5, statuses


async def test_the_family_pages_survive_tampered_tokens_and_junk_bodies(
    family_world: dict[str, Any], maker: Maker
) -> None:
    c: httpx.AsyncClient = family_world["client"]
    links = await contact_links(family_world, maker)
    token = links["王小明"].removeprefix("/f/")
    rng = random.Random(6122026)
    failures: list[str] = []
    tampered = [*_tampered_tokens(token, rng), "", ".", "..", "%2e%2e%2f", "a" * 60_000]
    answers = [
        b"answer=going",
        b"answer=cannot",
        b"answer=call_me",
        b"answer=",
        b"answer=going&answer=cannot",
    ]
    for n in range(ROUNDS):
        good = n % 4 == 0
        t = token if good else rng.choice(tampered)
        body = rng.choice(answers) if rng.random() < 0.5 else rng.choice(JUNK_BODIES)
        lang = rng.choice(["en", "zh-CN", "xx" * 500, "*", "\x00", "en;q=abc"])
        if rng.random() < 0.5:
            answered = rng.choice(["going", "x" * 3000, "<script>"])
            r = await c.get(f"/f/{t}", params={"answered": answered}, headers={"Accept-Language": lang})
        else:
            r = await _send(c, "POST", f"/f/{t}/answer", body, rng.choice(CONTENT_TYPES), {})
        # a bad token never shows the call (200) nor records an answer (303); a path the
        # router normalises (/f/..) may redirect, a malformed one may be a plain 400
        if r.status_code >= 500 or (not good and r.status_code in (200, 303)):
            failures.append(f"{r.request.method} /f/{t[:40]}… body={body[:30]!r} -> {r.status_code}")
        if "<script>" in r.text:
            failures.append(f"reflected markup in /f/{t[:40]}")
    assert not failures, "\n".join(failures)
    assert (await c.get(links["王小明"])).status_code == 200  # the real link still works
    assert json.dumps(links)  # the links themselves were JSON-safe strings
