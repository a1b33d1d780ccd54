"""Browser-test support: Debian's Chromium through Playwright, and a real ``carecall
demo`` server in a temporary working folder that can be stopped and started again.

Browser tests skip (saying why) when Chromium or Playwright is missing on a developer's
machine, and fail in CI (``CI`` set), where a missing browser is a broken pipeline.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from carecall.core.db import make_engine, make_sessionmaker
from tests.support.ports import free_port

CHROMIUM = os.environ.get("CARECALL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-test-pw"
DEMO_ENV_ADMIN_PASSWORD = "admin-password-1"  # CARECALL_ADMIN_PASSWORD of every DemoServer
CARECALL = str(Path(sys.executable).with_name("carecall"))


def browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    why = browser_missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {why}")
        pytest.skip(why)
    return CHROMIUM


class _Chromium:
    """One Chromium for the run (for each xdist worker), launched again should it have
    died: launching it costs a second or more of CPU, paid once instead of per test."""

    def __init__(self, pw: Any, path: str) -> None:
        self._pw = pw
        self._path = path
        self._browser: Any = None

    async def get(self) -> Any:
        if self._browser is None or not self._browser.is_connected():
            self._browser = await self._pw.chromium.launch(executable_path=self._path, args=CHROMIUM_ARGS)
        return self._browser

    async def close(self) -> None:
        if self._browser is not None and self._browser.is_connected():
            await self._browser.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _chromium(chromium_path: str) -> AsyncIterator[_Chromium]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = _Chromium(pw, chromium_path)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def browser(_chromium: _Chromium) -> AsyncIterator[Any]:
    """Debian's Chromium through Playwright (never a downloaded browser), with no context
    open: a test opens its own contexts (each a fresh profile: no cookies, storage, cache
    or permissions of another), and every context it left open is closed after it."""
    b = await _chromium.get()
    for ctx in list(b.contexts):  # a test that failed in its teardown may have left one
        await ctx.close()
    try:
        yield b
    finally:
        if b.is_connected():
            for ctx in list(b.contexts):
                await ctx.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests run on the session's event loop, the one the shared Chromium's
    Playwright connection lives on (a Playwright object works on its own loop only)."""
    here = Path(__file__).parent
    for item in items:
        if item.get_closest_marker("asyncio") is not None and here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


@dataclass
class DemoServer:
    """``carecall demo --no-sim`` as a child process; ``stop``/``start`` keep the folder
    and the ports, as an operator's server restarting would."""

    workdir: Path
    http_port: int
    mqtt_port: int
    proc: subprocess.Popen[bytes] | None = None
    log: list[Path] = field(default_factory=list)
    terminating: bool = False  # SIGTERM sent (begin_stop), not waited for yet

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 40.0) -> None:
        logfile = self.workdir / f"demo-{len(self.log)}.log"
        self.log.append(logfile)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CARECALL_ADMIN_PASSWORD": DEMO_ENV_ADMIN_PASSWORD}
        env.pop("CARECALL_CONFIG", None)
        with logfile.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    CARECALL,
                    "demo",
                    "--no-sim",
                    "--port",
                    str(self.http_port),
                    "--mqtt-port",
                    str(self.mqtt_port),
                ],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"carecall demo exited: {logfile.read_text(errors='replace')[-2000:]}")
            if "CareCall demo is running" in logfile.read_text(errors="replace"):
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(
            f"carecall demo did not start in {timeout}s: {logfile.read_text(errors='replace')[-2000:]}"
        )

    def stop(self, timeout: float = 25.0, *, crash: bool = False) -> None:
        """SIGTERM and wait (a graceful stop drains open streams within their lifetime),
        or with ``crash`` SIGKILL: the server vanishing mid-shift."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if crash or not self.terminating:  # a second SIGTERM could cut a graceful stop short
            self.proc.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.terminating = False

    def begin_stop(self) -> None:
        """SIGTERM without waiting: ``stop`` later waits for the graceful stop to end."""
        if self.proc is not None and self.proc.poll() is None and not self.terminating:
            self.proc.send_signal(signal.SIGTERM)
            self.terminating = True

    def create_user(
        self,
        username: str,
        station: str,
        role: str = "operator",
        staff: str | None = None,
        *,
        cli: bool = False,
    ) -> None:
        """A login with PASSWORD, made as ``carecall users create`` makes it (the same
        ``create_user``, production password hashing) straight into the demo's database,
        which the server reads at sign-in. A CLI process per login cost over a second of
        CPU, two dozen times a run; ``cli=True`` goes through the command itself (a test
        of that path: tests/console/test_phone_browser.py, test_stall_banner.py)."""
        if cli:
            self._create_user_cli(username, station, role, staff)
            return
        from dispatcher.auth.users import create_user

        async def go() -> None:
            engine = make_engine(f"sqlite:///{self.workdir / 'carecall.db'}")
            try:
                async with make_sessionmaker(engine)() as s, s.begin():
                    await create_user(
                        s,
                        username=username,
                        password=PASSWORD,
                        role=role,
                        station_id=station,
                        display_name=username,
                        staff_id=staff,
                        now=datetime.now(UTC),
                    )
            finally:
                await engine.dispose()

        # a loop of its own: the callers are sync helpers, some inside the session's loop
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, go()).result(60)

    def _create_user_cli(self, username: str, station: str, role: str, staff: str | None) -> None:
        env = {**os.environ, "CARECALL_NEW_USER_PASSWORD": PASSWORD}
        extra = ["--staff", staff] if staff else []
        subprocess.run(
            [
                CARECALL,
                "users",
                "create",
                username,
                "--role",
                role,
                "--station",
                station,
                "--name",
                username,
                *extra,
            ],
            cwd=self.workdir,
            env=env,
            check=True,
            capture_output=True,
        )

    def query(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.workdir / "carecall.db") as db:
            return list(db.execute(sql).fetchall())


async def _first_start_data(workdir: Path) -> None:
    """What ``carecall demo``'s first start writes before anyone can sign in, through the
    same functions ``run_demo`` calls (carecall/shell/demo.py): the migrated database, the
    demo county with its device secrets, the admin and the demo's two logins. A demo
    started on a copy finds them all and adds nothing, as a demo restarted on its folder."""
    from carecall.shell.demo import DEMO_SECRETS_FILE, demo_login, demo_responder_login, ensure_demo_county
    from carecall.shell.runtime import open_core
    from config.settings import load_settings

    settings = load_settings(
        database_url=f"sqlite:///{workdir / 'carecall.db'}", admin_password=DEMO_ENV_ADMIN_PASSWORD
    )
    core = await open_core(settings)
    try:
        await ensure_demo_county(core, workdir / DEMO_SECRETS_FILE)
        await demo_login(core)
        await demo_responder_login(core)
    finally:
        await core.close()


@pytest.fixture(scope="session")
def demo_first_start(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as a demo's first start leaves it, made once per run: each module's demo
    starts on a copy (fresh: nothing any test did is in it) instead of migrating, loading
    the county and hashing its logins' passwords again, seconds of CPU per module."""
    workdir = tmp_path_factory.mktemp("demo-first-start")
    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(1) as pool:
        mp.delenv("CARECALL_CONFIG", raising=False)  # as in the demo's own environment (start)
        pool.submit(asyncio.run, _first_start_data(workdir)).result(300)
    return workdir


@pytest.fixture(scope="session")
def _demos_stopping() -> Iterator[list[DemoServer]]:
    """The demos of finished modules: told to stop as their module ends and waited for at
    the end of the run, so each one's graceful stop (a second or so) overlaps the next
    module instead of holding it up."""
    stopping: list[DemoServer] = []
    yield stopping
    for server in stopping:
        server.stop()


@pytest.fixture(scope="module")
def demo(
    demo_first_start: Path, _demos_stopping: list[DemoServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoServer]:
    if shutil.which(CARECALL) is None and not Path(CARECALL).exists():
        pytest.fail(f"the carecall command is missing next to {sys.executable}")
    workdir = tmp_path_factory.mktemp("demo")
    for f in demo_first_start.iterdir():  # the database (and a WAL, if one is left), the secrets
        if not f.name.endswith("-shm"):  # SQLite rebuilds a closed database's shared memory
            shutil.copy2(f, workdir / f.name)
    server = DemoServer(workdir, free_port(), free_port())
    server.start()
    try:
        yield server
    finally:
        server.begin_stop()
        _demos_stopping.append(server)
