"""``carecall bench``'s console: a real Server-Sent Events client of the console's live feed
(issue 15: "event → call on a console p99, measured through a real SSE client").

The bench signs in over HTTP as a county operator (who sees every call of the county),
gets a stream ticket (``POST /api/v1/auth/stream-ticket``) and reads
``GET /api/v1/stream?ticket=…`` with httpx in a thread of its own, recording the first
monotonic time each call id appears in a ``snapshot`` or ``calls`` event. A stream ends
by itself after the server's ``max_stream_s`` with a ``reconnect`` event; the client then
reopens it at once with a fresh ticket and ``Last-Event-ID``, as the console page does,
so the calls changed in between come in the new stream's first event. ``bye`` (the
sign-in no longer counts) and a refused ticket sign in again.

CLOCK_MONOTONIC is system-wide on Linux, so the bench subtracts its own send times.
The server is the platform's own web app: ``carecall serve`` in a worker of its own on the
real target, the embedded process itself on the embedded target.

``BusConsole`` keeps the older, cheaper figure beside it: the first sight of a call id on
the Redis ``carecall:calls`` channel the web app relays (the "bus" figure, real target).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from carecall.shell.fleet_registry import Fleet

CONSOLE_USER = "bench-console"
STREAM_PATH = "/api/v1/stream"
CALL_EVENTS = ("snapshot", "calls")


# --------------------------------------------------------------------------- SSE frames


@dataclass
class SseFrame:
    event: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class SseParser:
    """Lines of a ``text/event-stream`` → frames (the WHATWG rules the console's
    ``EventSource`` follows, for the fields the server sends: id, event, data, retry)."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None
    _seen_field: bool = False

    def feed(self, line: str) -> SseFrame | None:
        """One line without its end; a frame when the line ends one (a blank line)."""
        if line == "":
            if not self._seen_field:
                return None
            frame = SseFrame(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id, self._seen_field = "", [], None, False
            return frame if frame.data or frame.event != "message" else None
        if line.startswith(":"):
            return None  # a comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        else:
            return None  # retry, unknown fields
        self._seen_field = True
        return None


def call_ids(frame: SseFrame) -> list[int]:
    """The call ids a ``snapshot`` or ``calls`` frame shows (not its ``gone`` ones)."""
    if frame.event not in CALL_EVENTS:
        return []
    try:
        body = json.loads(frame.data)
    except ValueError:
        return []
    calls = body.get("calls") if isinstance(body, dict) else None
    if not isinstance(calls, list):
        return []
    return [c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), int)]


# --------------------------------------------------------------------------- the account


def create_console_operator(db_url: str, station_id: str, password: str) -> None:
    """The console's login: an operator of the county-tier station ``station_id`` (a
    county user's scope is the whole county, so the stream shows every call)."""
    from carecall.core.db import make_engine, make_sessionmaker
    from dispatcher.auth.models import Role
    from dispatcher.auth.users import create_user

    async def go() -> None:
        engine = make_engine(db_url)
        try:
            async with make_sessionmaker(engine)() as s, s.begin():
                await create_user(
                    s,
                    username=CONSOLE_USER,
                    password=password,
                    role=Role.operator,
                    station_id=station_id,
                    display_name="bench console",
                    now=datetime.now(UTC),
                )
        finally:
            await engine.dispose()

    asyncio.run(go())


@dataclass(frozen=True)
class WebConsole:
    """Where the bench's console signs in: the web app's address, the county operator's
    password, and the settings of the process that serves it (its port, and the token
    key every copy shares)."""

    url: str
    password: str
    env: dict[str, str]
    via: str = f"SSE GET {STREAM_PATH} as county operator {CONSOLE_USER}"

    @classmethod
    def for_fleet(cls, db_url: str, fleet: Fleet) -> WebConsole:
        """A free 127.0.0.1 port, and the operator at the fleet's county centre (the
        phases' own fleets are counties of their own: a county user sees them all)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        password = secrets.token_urlsafe(18)
        create_console_operator(db_url, f"{fleet.prefix}-county", password)
        env = {
            "CARECALL_HTTP_HOST": "127.0.0.1",
            "CARECALL_HTTP_PORT": str(port),
            "CARECALL_SECRET_KEY": secrets.token_hex(32),
        }
        return cls(f"http://127.0.0.1:{port}", password, env)

    def connect(self, timeout_s: float = 30.0) -> SseConsole:
        return SseConsole(self.url, CONSOLE_USER, self.password).start(timeout_s)


# --------------------------------------------------------------------------- the client


class SseConsole:
    """A console page's live feed, read in a thread: first monotonic sight per call id."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self._username = username
        self._password = password
        self.first_seen: dict[int, float] = {}
        self.streams = 0  # streams opened
        self.frames = 0  # snapshot/calls frames read
        self.snapshots = 0  # of which snapshots: 1 when every reopen resumed from its last id
        self.errors = 0  # failed requests or broken streams (each retried)
        self.last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._opened = threading.Event()  # the first stream's first event arrived
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-sse-console")

    def start(self, timeout_s: float = 30.0) -> SseConsole:
        """Start reading; returns once the first stream showed its opening event."""
        self._thread.start()
        if not self._opened.wait(timeout_s):
            self.close()
            raise RuntimeError(
                f"bench console: no SSE stream from {self.base_url}{STREAM_PATH} within {timeout_s:g} s"
                + (f" ({self.last_error})" if self.last_error else "")
            )
        return self

    def snapshot(self) -> dict[int, float]:
        with self._lock:
            return dict(self.first_seen)

    def stats(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "frames": self.frames,
            "snapshots": self.snapshots,
            "errors": self.errors,
            "last_error": self.last_error,
        }

    def _run(self) -> None:
        # read timeout above the server's heartbeat (5 s): a silent stream is a dead one
        timeout = httpx.Timeout(10.0, read=20.0)
        token: str | None = None
        last_id: str | None = None
        with httpx.Client(base_url=self.base_url, timeout=timeout) as client:
            while not self._stop.is_set():
                try:
                    if token is None:
                        token = self._sign_in(client)
                    ticket = self._ticket(client, token)
                    if ticket is None:  # the sign-in ended: sign in again
                        token = None
                        continue
                    last_id, ok = self._read(client, ticket, last_id)
                    if not ok:
                        token = None
                except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                    if self._stop.is_set():
                        return
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    self._stop.wait(0.2)

    def _sign_in(self, client: httpx.Client) -> str:
        r = client.post("/api/v1/auth/token", data={"username": self._username, "password": self._password})
        if r.status_code != 200:
            raise RuntimeError(f"sign-in answered {r.status_code}: {r.text[:200]}")
        return str(r.json()["access_token"])

    def _ticket(self, client: httpx.Client, token: str) -> str | None:
        r = client.post("/api/v1/auth/stream-ticket", headers={"Authorization": f"Bearer {token}"})
        if r.status_code == 401:
            return None
        if r.status_code != 200:
            raise RuntimeError(f"stream ticket answered {r.status_code}: {r.text[:200]}")
        return str(r.json()["ticket"])

    def _read(self, client: httpx.Client, ticket: str, last_id: str | None) -> tuple[str | None, bool]:
        """One stream until it ends; (last event id, whether the sign-in still counts)."""
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        parser = SseParser()
        with client.stream("GET", STREAM_PATH, params={"ticket": ticket}, headers=headers) as r:
            if r.status_code == 401:
                return last_id, False
            if r.status_code != 200:
                raise RuntimeError(f"stream answered {r.status_code}")
            self._response = r
            self.streams += 1
            try:
                for line in r.iter_lines():
                    frame = parser.feed(line)
                    if frame is None:
                        if self._stop.is_set():
                            break
                        continue
                    now = time.monotonic()
                    if frame.id is not None:
                        last_id = frame.id
                    if frame.event in CALL_EVENTS:
                        self.frames += 1
                        self.snapshots += frame.event == "snapshot"
                        ids = call_ids(frame)
                        with self._lock:
                            for cid in ids:
                                self.first_seen.setdefault(cid, now)
                        self._opened.set()
                    elif frame.event == "bye":
                        return last_id, False
                    elif frame.event == "reconnect":
                        break
                    if self._stop.is_set():
                        break
            finally:
                self._response = None
        return last_id, True

    def close(self) -> None:
        self._stop.set()
        r = self._response
        if r is not None:  # unblock a read waiting for the next heartbeat
            with contextlib.suppress(Exception):
                r.close()
        self._thread.join(8)


class BusConsole:
    """A subscriber of the Redis ``carecall:calls`` channel (the push the web app relays):
    first sight per call id. The real target's secondary "bus" figure."""

    def __init__(self, url: str) -> None:
        import redis

        self._r = redis.Redis.from_url(url)
        self._ps = self._r.pubsub(ignore_subscribe_messages=True)
        self._ps.subscribe("carecall:calls")
        self.first_seen: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-bus-console")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._ps.get_message(timeout=0.2)
            if msg is None or msg.get("type") != "message":
                continue
            now = time.monotonic()
            with contextlib.suppress(ValueError, TypeError):
                for cid in json.loads(msg["data"]).get("ids", []):
                    with self._lock:
                        self.first_seen.setdefault(int(cid), now)

    def snapshot(self) -> dict[int, float]:
        with self._lock:
            return dict(self.first_seen)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._ps.close()
        self._r.close()


@dataclass
class Consoles:
    """The bench's console clients, closed together: the SSE one (the console figure)
    and, where there is one, the bus subscriber (the bus figure)."""

    sse: SseConsole | None = None
    bus: BusConsole | None = None

    def close(self) -> None:
        for c in (self.sse, self.bus):
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()
