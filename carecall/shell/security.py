"""HTTP hardening in one ASGI middleware: bounded bodies, no NUL characters, no deep
JSON, security headers on every response, and no stack trace or bare 500 to a client.

Why a middleware and not per-route checks: the dangerous inputs arrive before any route
runs. A NUL byte in a path, a query or a JSON string reaches PostgreSQL, which refuses
it (``invalid byte sequence``) and the request ends in a 500; JSON nested a thousand
deep makes Python's parser raise ``RecursionError``; a 10 MB body is read whole into
memory. One place at the edge handles all of them for every route, including routes
added later, and answers 400/413/422 with a message a client can act on.

The headers: the console is served by this same app and loads nothing from elsewhere,
so ``default-src 'self'`` with no inline script or style. FastAPI's ``/docs`` and
``/redoc`` pages are the exception: they load Swagger UI / ReDoc from jsDelivr and start
it with an inline script, so those two pages (and only they) get a CSP allowing that.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("carecall.http")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Our own bodies nest 3-4 levels deep; 32 leaves room and stays far from the parser's
# recursion limit.
MAX_JSON_DEPTH = 32
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DOCS_PATHS = ("/docs", "/redoc")

# A JSON string literal (escapes included): removed before counting brackets.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")
# \u0000 in JSON text, not preceded by another backslash (an escaped backslash + "u0000"
# is harmless text)
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests arrays/objects deeper than ``limit`` (brackets inside
    strings do not count). Cheap: bodies with fewer brackets than the limit are not scanned."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", body)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def has_nul(body: bytes, content_type: str) -> bool:
    """A NUL character in a body: raw, JSON-escaped (``\\u0000``) or form-encoded (``%00``)."""
    if b"\x00" in body:
        return True
    if "json" in content_type:
        return _JSON_NUL.search(body) is not None
    if "x-www-form-urlencoded" in content_type:
        return b"%00" in body
    return False


def url_has_nul(scope: Scope) -> bool:
    path = scope.get("path", "")
    raw_path: bytes = scope.get("raw_path") or b""
    query: bytes = scope.get("query_string") or b""
    return "\x00" in path or b"%00" in raw_path or b"\x00" in query or b"%00" in query


def origin_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL (a tile server), else None."""
    if not url:
        return None
    parts = urlsplit(url.replace("{", "").replace("}", ""))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def _style_hashes() -> list[str]:
    """CSP hashes of the inline styles we ship: the monthly report's ``<style>`` (the
    console opens that report as a blob page, which inherits the console's policy)."""
    from dispatcher.oversight.render import _CSS

    digest = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
    return [f"'sha256-{digest}'"]


def console_csp(extra_img: Iterable[str] = ()) -> str:
    img = " ".join(["'self'", "data:", *extra_img])
    style = " ".join(["'self'", *_style_hashes()])
    return (
        f"default-src 'self'; script-src 'self'; style-src {style}; "
        f"img-src {img}; connect-src 'self'; font-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


# /docs and /redoc: their files are served by CareCall itself (carecall/shell/app.py), so
# nothing is allowed from elsewhere; the pages start their viewer with an inline script.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; img-src 'self' data:; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


@functools.cache
def _console_csp_for(tile_url: str | None) -> str:
    return console_csp([o for o in [origin_of(tile_url)] if o])


@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_depth: int = MAX_JSON_DEPTH
    tile_url: str | None = None


def security_headers(path: str, limits: HttpLimits) -> list[tuple[bytes, bytes]]:
    csp = DOCS_CSP if path in _DOCS_PATHS else _console_csp_for(limits.tile_url)
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    ]


class _TooLarge(Exception):
    pass


class SecurityMiddleware:
    """See the module docstring. Outermost in the stack, so its headers reach every
    response: API answers, static files, redirects, 404s and errors alike."""

    def __init__(self, app: ASGIApp, limits: HttpLimits | None = None) -> None:
        self.app = app
        self.limits = limits or HttpLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope.get("path", ""), self.limits)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in extra:
                    if name.decode() not in headers:
                        headers.append(name.decode(), value.decode())
            await send(message)

        async def refuse(status: int, detail: str) -> None:
            body = json.dumps({"detail": detail}).encode()
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_headers({"type": "http.response.body", "body": body})

        if url_has_nul(scope):
            await refuse(400, "NUL characters are not accepted in a URL")
            return
        app_receive = receive
        if scope.get("method") in _BODY_METHODS:
            headers = {k.lower(): v for k, v in scope.get("headers", [])}
            ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
            length = headers.get(b"content-length", b"")
            limit = self.limits.max_body_bytes
            if length.isdigit() and int(length) > limit:
                await refuse(413, f"the request body is larger than {limit} bytes")
                return
            try:
                body = await self._read_body(receive, limit)
            except _TooLarge:
                await refuse(413, f"the request body is larger than {limit} bytes")
                return
            if has_nul(body, ctype):
                await refuse(422, "NUL characters are not accepted in a request body")
                return
            if "json" in ctype and json_too_deep(body, self.limits.max_json_depth):
                await refuse(422, f"JSON nested deeper than {self.limits.max_json_depth} levels")
                return
            app_receive = _replay(body, receive)
        try:
            await self.app(scope, app_receive, send_with_headers)
        except Exception:
            log.exception("http_unhandled_error", path=scope.get("path"), method=scope.get("method"))
            if started:
                raise  # the response is half sent: the server closes the connection
            await refuse(500, "internal error; it has been logged")

    @staticmethod
    async def _read_body(receive: Receive, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body over once, then waits on the real
    connection (for the disconnect a streaming route listens for)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return replay


def install(app: Any, limits: HttpLimits) -> None:
    """Add the middleware to a FastAPI/Starlette app (outermost of the user middleware)."""
    app.add_middleware(SecurityMiddleware, limits=limits)
