"""Serving the responder's phone app: ``/m/`` (the page), ``/m/static/…``, the web app
manifest and the service worker (served from ``/m/`` so its scope is the app).

Every asset is ours, like the console's: a phone on a weak night-time signal must still
open the app shell from its cache.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse

from dispatcher.console.pages import RevalidatedFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
_NO_CACHE = {"Cache-Control": "no-cache"}
# The app's page may ask for the phone's position (a visit's check-in), for itself only;
# every other page keeps the server-wide policy (geolocation=()), which this one replaces.
PHONE_PERMISSIONS = "camera=(), microphone=(), geolocation=(self)"


def mount_phone(app: FastAPI) -> None:
    app.mount("/m/static", RevalidatedFiles(directory=STATIC_DIR), name="phone-static")

    @app.get("/m", include_in_schema=False)
    async def phone_no_slash() -> RedirectResponse:
        return RedirectResponse("/m/", status_code=307)

    @app.get("/m/", include_in_schema=False)
    async def phone_page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html",
            headers={**_NO_CACHE, "Permissions-Policy": PHONE_PERMISSIONS},
        )

    @app.get("/m/manifest.webmanifest", include_in_schema=False)
    async def manifest() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "manifest.webmanifest", media_type="application/manifest+json", headers=_NO_CACHE
        )

    @app.get("/m/sw.js", include_in_schema=False)
    async def service_worker() -> FileResponse:
        # served from /m/ so the worker's scope is the whole app; never cached by HTTP,
        # so a new release's worker is picked up on the next visit
        return FileResponse(
            STATIC_DIR / "sw.js",
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/m/"},
        )
