"""The console's basemap: one PMTiles archive served whole, by HTTP range requests.

The browser (``static/map.js`` with the vendored ``pmtiles`` library) reads the archive's
header and directories and then each tile it shows with a ``Range: bytes=…`` request to
:data:`BASEMAP_URL`; no tile server and no outside service. Starlette's ``FileResponse``
answers ranges (206 with ``Content-Range``, 416 outside the file) and gives a strong
``ETag`` the library uses to notice a replaced file.

Which file: the ``basemap_file`` setting (a deployment's extract of its own county), or,
unset, the generated map of the demo county shipped in ``static/basemap/``. A missing file
is a 404, and the console then draws its map without streets.

The archive is public map data, like the console's scripts: no sign-in needed, so the
map's requests need no token.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

__all__ = ["BASEMAP_URL", "DEMO_BASEMAP", "basemap_router", "resolve_basemap"]

BASEMAP_URL = "/console/basemap.pmtiles"
# the generated demo county (``carecall basemap`` rebuilds it; dispatcher/console/basemap.py)
DEMO_BASEMAP = Path(__file__).resolve().parent / "static" / "basemap" / "demo-county.pmtiles"
# Revalidate on each load (a cheap 304 or a range answer): a file replaced by an upgrade
# or a new county extract is picked up without clearing a cache.
_HEADERS = {"Cache-Control": "no-cache"}
MEDIA_TYPE = "application/vnd.pmtiles"


def resolve_basemap(configured: Path | None) -> Path:
    """The archive to serve: the configured one, else the demo county's."""
    return configured if configured is not None else DEMO_BASEMAP


def basemap_router(configured: Path | None = None) -> APIRouter:
    """``GET``/``HEAD`` :data:`BASEMAP_URL` → the archive, with range support."""
    path = resolve_basemap(configured)
    router = APIRouter()

    @router.api_route(BASEMAP_URL, methods=["GET", "HEAD"], include_in_schema=False)
    async def basemap() -> FileResponse:
        # checked per request: an archive can be put in place (or rebuilt) while running
        if not path.is_file():
            raise HTTPException(status_code=404, detail="no basemap file (setting basemap_file)")
        return FileResponse(path, media_type=MEDIA_TYPE, headers=_HEADERS)

    return router
