"""Registry files uploaded from the console (admins only): ``POST /api/v1/registry/import``.

The same import as ``carecall import`` (``dispatcher.registry.importing``): every row is
checked in one transaction and nothing is written when any row fails. The file travels
as the raw request body (the console sends the picked file as it is) with its name in the
query, because the name says the kind (``homes.csv``) and the type (.csv or .xlsx); the
HTTP body limit bounds its size.

Answers: 200 with what each file became, or 422 with every problem as
``{file, row, column, value, reason}`` (the reasons the command line prints).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from carecall.core.bus import Bus
from dispatcher.auth.principals import Principal
from dispatcher.registry.crud import ADMIN, Maker
from dispatcher.registry.files import KINDS
from dispatcher.registry.importing import ImportReport, import_files
from dispatcher.registry.row_errors import error_dicts

# A plain file name: no folders, no control characters (it becomes a temporary file's name).
FILENAME_RE = re.compile(r"^[^/\\\x00-\x1f]{1,200}$")


def _report_dict(report: ImportReport) -> dict[str, Any]:
    return {
        "file": report.file,
        "kind": report.kind,
        "status": report.status,
        "rows": report.rows,
        "created": report.created,
        "updated": report.updated,
    }


def _write_upload(folder: str, filename: str, body: bytes) -> Path:
    path = Path(folder) / filename
    path.write_bytes(body)
    return path


def import_router(maker: Maker, bus: Bus | None) -> APIRouter:
    router = APIRouter(tags=["registry"])

    @router.post("/registry/import")
    async def import_upload(
        request: Request,
        p: Annotated[Principal, Depends(ADMIN)],
        filename: Annotated[str, Query(max_length=200, description="e.g. homes.csv or residents.xlsx")],
        kind: Annotated[
            str | None,
            Query(max_length=32, description=f"one of {', '.join(KINDS)}, when the name does not say it"),
        ] = None,
    ) -> dict[str, Any]:
        """Import one registry file sent as the request body; all of it or nothing."""
        name = filename.strip()
        if not FILENAME_RE.match(name) or name in (".", ".."):
            raise HTTPException(422, detail="filename must be a plain file name such as homes.csv")
        body = await request.body()
        if not body:
            raise HTTPException(422, detail="the request body is empty: send the file's bytes")
        with tempfile.TemporaryDirectory(prefix="carecall-import-") as folder:
            path = await asyncio.to_thread(_write_upload, folder, name, body)
            reports = await import_files(maker, [path], kind=kind, bus=bus, by=p.username)
        errors = [e for r in reports for e in r.errors]
        files = [_report_dict(r) for r in reports]
        if errors:
            raise HTTPException(
                422,
                detail={
                    "message": f"import refused: {len(errors)} problem(s); nothing was written",
                    "errors": error_dicts(errors),
                    "files": files,
                },
            )
        return {"status": "applied", "files": files}

    return router
