"""Serving the console: ``/console/`` (the page), ``/console/static/…`` (its files), and
``/`` redirecting to it, so the address ``carecall demo`` prints opens the console.

Every script, style, catalogue and icon lives in ``static/`` and is served from here: a
county network at night may have no internet, and the console must still open.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.staticfiles import PathLike
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The page shell must never be stale after an upgrade; its modules are small and are
# revalidated by ETag, so "no-cache" (revalidate, not "never store") is enough.
_NO_CACHE = {"Cache-Control": "no-cache"}


class RevalidatedFiles(StaticFiles):
    """Static files that the browser revalidates on every load (cheap 304s), so a new
    release is picked up without anyone clearing a cache on a night shift."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_NO_CACHE)
        return response


def mount_console(app: FastAPI) -> None:
    """Add the console's pages to ``app`` (API routes are added separately)."""
    app.mount("/console/static", RevalidatedFiles(directory=STATIC_DIR), name="console-static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    @app.get("/console", include_in_schema=False)
    async def console_no_slash() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    @app.get("/console/", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_NO_CACHE)
