"""SQLite's writers queue in the event loop, the alarm path first (carecall/core/sqlite_gate.py).

In the embedded target the gateway's event commits raced the dispatcher's loops for
SQLite's one write lock in SQLite's busy handler, and lost for seconds during a storm
(issue 15). Here: a writer waiting behind another waits on the engine's gate, and the
one marked ``alarm_first`` goes before an ordinary writer that came first.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from carecall.core.db import make_engine
from carecall.core.sqlite_gate import WriteGate, alarm_first, write_gate


async def _settle(cond: object, turns: int = 2000) -> None:
    """Let the loop run until ``cond()`` holds (bounded by loop turns, not time)."""
    for _ in range(turns):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_gate_serves_alarms_first_then_arrival_order() -> None:
    gate = WriteGate()
    a, b, c, d = object(), object(), object(), object()
    assert await gate.acquire(a)
    order: list[str] = []

    async def take(name: str, owner: object, alarm: bool) -> None:
        await gate.acquire(owner, alarm=alarm)
        order.append(name)

    tasks = [
        asyncio.create_task(take("b", b, False)),
        asyncio.create_task(take("d", d, False)),
        asyncio.create_task(take("c", c, True)),
    ]
    await _settle(lambda: gate.waiting == 3)
    gate.release(a)
    await _settle(lambda: order == ["c"])
    gate.release(c)
    await _settle(lambda: order == ["c", "b"])
    gate.release(b)
    await asyncio.gather(*tasks)
    assert order == ["c", "b", "d"]
    assert gate.holder is d


async def test_a_cancelled_waiter_passes_the_gate_on() -> None:
    gate = WriteGate()
    a, b, c = object(), object(), object()
    assert await gate.acquire(a)
    tb = asyncio.create_task(gate.acquire(b))
    tc = asyncio.create_task(gate.acquire(c))
    await _settle(lambda: gate.waiting == 2)
    tb.cancel()
    gate.release(a)
    assert await tc
    assert gate.holder is c


async def test_a_waiter_goes_on_without_the_gate_after_wait_s() -> None:
    gate = WriteGate(wait_s=0.01)
    a, b = object(), object()
    assert await gate.acquire(a)
    assert await gate.acquire(b) is False  # SQLite's own busy timeout decides then
    assert gate.holder is a and gate.timeouts == 1


async def _insert(engine: AsyncEngine, who: str, done: list[str]) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t (who) VALUES (:who)"), {"who": who})
    done.append(who)


async def test_engine_writers_wait_on_the_gate_and_the_alarm_commits_first(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)"))
        gate = write_gate(engine.sync_engine)
        assert gate is not None
        done: list[str] = []
        async with engine.connect() as holder:
            await holder.execute(text("INSERT INTO t (who) VALUES ('holder')"))  # the write lock
            assert gate.holder is not None
            ordinary = asyncio.create_task(_insert(engine, "ordinary", done))
            await _settle(lambda: gate.waiting == 1)  # not asleep in SQLite's busy handler

            async def alarm() -> None:
                with alarm_first():
                    await _insert(engine, "alarm", done)

            urgent = asyncio.create_task(alarm())
            await _settle(lambda: gate.waiting == 2)
            await holder.commit()
            await asyncio.gather(ordinary, urgent)
        assert done == ["alarm", "ordinary"]
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT who FROM t ORDER BY id"))).scalars().all()
        assert rows == ["holder", "alarm", "ordinary"]
        assert gate.holder is None and gate.waiting == 0
    finally:
        await engine.dispose()


async def test_reads_never_take_the_gate_not_even_a_cte(tmp_path: Path) -> None:
    """A read (a recursive CTE included, as the console's station subtree) must not hold
    the writers back for as long as its session stays open."""
    from sqlalchemy import Integer, column, literal, select, table

    engine = make_engine(f"sqlite:///{tmp_path / 'reads.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)"))
        gate = write_gate(engine.sync_engine)
        assert gate is not None
        t = table("t", column("id", Integer))
        tree = select(literal(1).label("n")).cte("tree", recursive=True)
        tree = tree.union_all(select((tree.c.n + 1).label("n")).where(tree.c.n < 3))
        async with engine.connect() as reader:
            assert len((await reader.execute(select(tree.c.n))).all()) == 3
            await reader.execute(select(t.c.id))
            await reader.execute(text("WITH x AS (SELECT 1) SELECT * FROM x"))
            assert gate.holder is None
            await _insert(engine, "writer", [])  # not held back by the open reader
    finally:
        await engine.dispose()
