"""The basemap route: the whole archive, or any byte range of it, from the configured file."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from dispatcher.console.tiles import BASEMAP_URL, DEMO_BASEMAP, basemap_router, resolve_basemap

# not a real archive: the route serves bytes, it does not read them
BODY = bytes(range(256)) * 80  # 20 480 bytes, each offset's value known


def client_for(path: Path | None) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(basemap_router(path))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    p = tmp_path / "county.pmtiles"
    p.write_bytes(BODY)
    return p


async def test_whole_file(archive: Path) -> None:
    async with client_for(archive) as c:
        r = await c.get(BASEMAP_URL)
    assert r.status_code == 200
    assert r.content == BODY
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "application/vnd.pmtiles"
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["etag"].startswith('"')  # strong: pmtiles uses it to notice a new file


async def test_range_gives_206_and_exactly_those_bytes(archive: Path) -> None:
    async with client_for(archive) as c:
        first = await c.get(BASEMAP_URL, headers={"Range": "bytes=0-16383"})
        middle = await c.get(BASEMAP_URL, headers={"Range": "bytes=1000-1099"})
        tail = await c.get(BASEMAP_URL, headers={"Range": "bytes=-10"})
    assert first.status_code == 206
    assert first.content == BODY[:16384]
    assert first.headers["content-range"] == f"bytes 0-16383/{len(BODY)}"
    assert middle.status_code == 206
    assert middle.content == BODY[1000:1100]
    assert middle.headers["content-length"] == "100"
    assert middle.headers["content-range"] == f"bytes 1000-1099/{len(BODY)}"
    assert tail.status_code == 206
    assert tail.content == BODY[-10:]


async def test_first_read_larger_than_a_small_archive(tmp_path: Path) -> None:
    """pmtiles asks for the first 16 KiB; a smaller archive must still answer (clamped)."""
    small = tmp_path / "small.pmtiles"
    small.write_bytes(BODY[:5000])
    async with client_for(small) as c:
        r = await c.get(BASEMAP_URL, headers={"Range": "bytes=0-16383"})
    assert r.status_code == 206
    assert r.content == BODY[:5000]
    assert r.headers["content-range"] == "bytes 0-4999/5000"


async def test_range_outside_the_file_is_416(archive: Path) -> None:
    async with client_for(archive) as c:
        r = await c.get(BASEMAP_URL, headers={"Range": f"bytes={len(BODY)}-{len(BODY) + 10}"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(BODY)}"


async def test_head(archive: Path) -> None:
    async with client_for(archive) as c:
        r = await c.head(BASEMAP_URL)
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(BODY))
    assert r.content == b""


async def test_missing_file_is_404(tmp_path: Path) -> None:
    async with client_for(tmp_path / "nowhere.pmtiles") as c:
        r = await c.get(BASEMAP_URL)
        ranged = await c.get(BASEMAP_URL, headers={"Range": "bytes=0-16383"})
    assert r.status_code == 404
    assert ranged.status_code == 404


async def test_file_put_in_place_while_running(tmp_path: Path) -> None:
    later = tmp_path / "later.pmtiles"
    async with client_for(later) as c:
        assert (await c.get(BASEMAP_URL)).status_code == 404
        later.write_bytes(BODY[:100])
        r = await c.get(BASEMAP_URL, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == BODY[10:20]


def test_unset_setting_means_the_demo_map(tmp_path: Path) -> None:
    assert resolve_basemap(None) == DEMO_BASEMAP
    assert resolve_basemap(tmp_path / "x.pmtiles") == tmp_path / "x.pmtiles"


def test_the_setting_exists_and_defaults_to_unset() -> None:
    from config.settings import Settings

    assert Settings().basemap_file is None
    assert Settings(basemap_file=Path("/srv/county.pmtiles")).basemap_file == Path("/srv/county.pmtiles")
