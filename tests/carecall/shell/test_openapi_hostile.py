"""Every route of the OpenAPI schema against the inputs that used to answer 500: a NUL
byte in each path and query parameter, in every string field of a JSON body, JSON nested
1,000 deep, and a body over the size limit. Nothing may answer 5xx.

``sweep`` is shared with the PostgreSQL run (tests/integration/test_api_hostile_pg.py):
PostgreSQL is where a NUL byte in text actually fails, so that run is the one that
reproduces the original 500s; this SQLite run keeps the routes covered on every commit.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.shell.app import create_app
from carecall.shell.security import HttpLimits
from config.settings import load_settings
from dispatcher.auth import passwords as auth
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import create_user
from dispatcher.console.stream import StreamConfig
from dispatcher.engine.process import load_context
from tests.conftest import add_small_registry

NUL = "a\x00b"
LIMIT = 32 * 1024
BODY_METHODS = ("post", "put", "patch")


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        node: Any = spec
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return dict(node)
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            resolved = _resolve(option, spec)
            if resolved.get("properties") or resolved.get("type") == "array":
                return resolved
    return schema


def _benign(param: dict[str, Any]) -> str:
    kind = (param.get("schema") or {}).get("type")
    # ids that exist nowhere, so no sweep request changes a real record
    return "999999" if kind == "integer" else "nosuch-1"


def cases(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    """(method, url, extra headers, request kwargs) for every route and hostile input."""
    out: list[tuple[str, str, dict[str, str], dict[str, Any]]] = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = op.get("parameters", [])
            path_params = [p for p in params if p["in"] == "path"]
            query_params = [p for p in params if p["in"] == "query"]

            def url(nul_in: str | None = None, path: str = path, path_params: list[Any] = path_params) -> str:
                u = path
                for p in path_params:
                    value = NUL if p["name"] == nul_in else _benign(p)
                    u = u.replace("{" + p["name"] + "}", quote(value, safe=""))
                return u

            for p in path_params:
                out.append((method, url(p["name"]), {}, {}))
            for q in query_params:
                out.append((method, url(), {}, {"params": {q["name"]: NUL}}))
            if method in BODY_METHODS:
                body_schema: dict[str, Any] = {}
                content = (op.get("requestBody") or {}).get("content", {})
                if "application/json" in content:
                    body_schema = _resolve(content["application/json"].get("schema", {}), spec)
                elif "application/x-www-form-urlencoded" in content:
                    body_schema = content["application/x-www-form-urlencoded"].get("schema", {})
                props = body_schema.get("properties") or {"x": {}}
                nul_body = {name: NUL for name in props}
                json_headers = {"content-type": "application/json"}
                out.append((method, url(), json_headers, {"content": json.dumps(nul_body)}))
                out.append((method, url(), {}, {"data": nul_body}))
                out.append((method, url(), json_headers, {"content": "[" * 1000 + "]" * 1000}))
                out.append((method, url(), json_headers, {"content": '{"a":' * 1000 + "1" + "}" * 1000}))
                out.append((method, url(), json_headers, {"content": b" " * (LIMIT + 1)}))
    return out


async def sweep(client: httpx.AsyncClient, app: FastAPI, headers: dict[str, str]) -> int:
    """Run every case; returns how many requests were made. Fails listing every 5xx."""
    spec = app.openapi()
    bad: list[str] = []
    done = 0
    for method, url, extra, kwargs in cases(spec):
        r = await client.request(method.upper(), url, headers={**headers, **extra}, **kwargs)
        done += 1
        if r.status_code >= 500:
            bad.append(
                f"{method.upper()} {url} {kwargs.get('params') or ''} -> {r.status_code} {r.text[:120]}"
            )
    assert not bad, "\n".join(bad)
    return done


async def hostile_app(maker: async_sessionmaker[AsyncSession]) -> tuple[FastAPI, str]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        await create_user(
            s,
            username="sweep-admin",
            password="sweep-password",
            role="admin",
            station_id=None,
            display_name="",
            now=datetime.now(UTC),
        )
    settings = load_settings(database_url="sqlite:///unused.db")
    app = create_app(
        maker,
        signer=TokenSigner(b"s" * 32),
        ctx=load_context(settings),
        bus=MemoryBus(),
        stream_config=StreamConfig(heartbeat_s=0.05, max_stream_s=0.2, retry_ms=100),
        http_limits=HttpLimits(max_body_bytes=LIMIT),
    )
    return app, "sweep-password"


@pytest.fixture
async def hostile(
    maker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, dict[str, str]]]:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    app, password = await hostile_app(maker)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        r = await c.post("/api/v1/auth/token", data={"username": "sweep-admin", "password": password})
        assert r.status_code == 200, r.text
        yield app, c, {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_no_route_answers_5xx_to_hostile_input(
    hostile: tuple[FastAPI, httpx.AsyncClient, dict[str, str]],
) -> None:
    app, client, headers = hostile
    n = await sweep(client, app, headers)
    assert n > 150  # every route was reached, not a handful
    # and the admin's token still works: the sweep changed nothing it should not have
    assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 200
