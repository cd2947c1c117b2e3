"""SQLite budget counters on the event loop must never wait inside SQLite for the file's write lock; no amount
given to the SQL counters overflows their 64-bit integers."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tiergate.gateway.accounting.budget_sql import PostgresBudget, SqliteBudget
from tiergate.gateway.accounting.keys import Limits
from tiergate.gateway.accounting.limits import BudgetCheck, LocalLimiter
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.db.migrate import upgrade
from tiergate.gateway.errors import InsufficientQuota
from tiergate.policies.budget import MAX_BUDGET_NANO, Budget

SCHEMA = """
CREATE TABLE budget_counters (scope TEXT, period_start INTEGER, spent_nano INTEGER, reserved_nano INTEGER,
                              PRIMARY KEY (scope, period_start));
CREATE TABLE ledger (key_id TEXT, tenant_id TEXT, ts_ms INTEGER, cost_nano INTEGER, kind TEXT);
"""


async def test_a_write_lock_held_across_the_event_loop_is_waited_for_not_deadlocked(tmp_path: Path) -> None:
    path = str(tmp_path / "b.db")
    with sqlite3.connect(path) as setup:
        setup.executescript(SCHEMA)
    budget = SqliteBudget(path)
    check = (BudgetCheck("k:key1", 0, None, 1_000_000),)
    # Another connection (as the ledger writer does through aiosqlite) opens a write transaction whose COMMIT
    # only happens when the event loop gets to run it.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO ledger VALUES ('key2', 't', 1, 5, 'request')")

    async def commit_soon() -> None:
        await asyncio.sleep(0.05)
        other.execute("COMMIT")

    started = time.monotonic()
    committer = asyncio.ensure_future(commit_soon())
    assert await budget.reserve("r1", check, 100, now_s=0) is None  # would block the loop, then fail
    await committer
    assert time.monotonic() - started < 2
    await budget.settle("r1", check, 100, 40)
    row = other.execute("SELECT spent_nano, reserved_nano FROM budget_counters").fetchone()
    assert row == (40, 0)  # the settled cost, nothing left reserved
    other.close()
    await budget.aclose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def counters_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database holding budget counters: a SQLite file, or a migrated PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        with sqlite3.connect(tmp_path / "b.db") as setup:
            setup.executescript(SCHEMA)
        return str(tmp_path / "b.db")
    url: str = request.getfixturevalue("postgres_url")
    asyncio.run(upgrade(url))
    return url


async def test_amounts_beyond_the_largest_budget_never_reach_the_database(counters_url: str) -> None:
    sqlite = "://" not in counters_url
    engine = None if sqlite else open_engine(counters_url)
    limiter = LocalLimiter(SqliteBudget(counters_url) if engine is None else PostgresBudget(engine))
    limits = Limits("k:a", "t:a", key_budget=Budget(MAX_BUDGET_NANO, "total"))
    with pytest.raises(InsufficientQuota):  # more than 64 bits once: an OverflowError, a 500
        await limiter.admit(limits, now_s=0, tokens=0, reserve_nano=2**70)
    ticket = await limiter.admit(limits, now_s=0, tokens=0, reserve_nano=MAX_BUDGET_NANO // 2)
    assert not await limiter.top_up(ticket, 2**70, 0)
    await limiter.settle(ticket, tokens=0, cost_nano=2**70)  # an upstream's absurd usage
    query = "SELECT spent_nano, reserved_nano FROM budget_counters"
    if engine is None:
        with sqlite3.connect(counters_url) as conn:
            rows = conn.execute(query).fetchall()
    else:
        async with engine.connect() as conn:
            rows = [tuple(r) for r in await conn.execute(text(query))]
        await engine.dispose()
    assert rows == [(MAX_BUDGET_NANO, 0)]
    await limiter.aclose()
