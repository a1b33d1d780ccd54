"""``/docs`` and ``/redoc`` work with no way out to the internet: every script, style and
icon they name is served by CareCall itself, and their policy allows nothing else."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from carecall.core.db import make_engine, make_sessionmaker
from carecall.shell.app import DOCS_ASSETS, create_app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    engine = make_engine("sqlite+aiosqlite:///:memory:")
    app = create_app(make_sessionmaker(engine))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c
    await engine.dispose()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_name_only_files_served_here(client: httpx.AsyncClient, page: str) -> None:
    r = await client.get(page)
    assert r.status_code == 200
    html = r.text
    assert "//" not in re.sub(r"(?s)<script>.*?</script>", "", html).replace("<!DOCTYPE html>", ""), html
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(ref.startswith(DOCS_ASSETS + "/") for ref in refs), refs
    for ref in refs:
        asset = await client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 1000, ref
    assert "http://" not in html and "https://" not in html
    csp = r.headers["content-security-policy"]
    assert "http" not in csp and "default-src 'self'" in csp


async def test_the_openapi_document_the_pages_read_is_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200 and r.json()["info"]["title"] == "CareCall"
    redirect = await client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200


async def test_the_viewers_scripts_fetch_nothing_from_outside_by_themselves(
    client: httpx.AsyncClient,
) -> None:
    """ReDoc's bundle shows a logo from cdn.redoc.ly: served here, it names a local file."""
    redoc = await client.get(f"{DOCS_ASSETS}/redoc.standalone.js")
    assert redoc.status_code == 200 and redoc.headers["content-type"].startswith("text/javascript")
    assert b"cdn.redoc.ly" not in redoc.content
    assert f'src:"{DOCS_ASSETS}/favicon.png"'.encode() in redoc.content
    swagger = await client.get(f"{DOCS_ASSETS}/swagger-ui-bundle.js")
    assert swagger.status_code == 200 and b"cdn.jsdelivr.net" not in swagger.content
