"""SQLite budget counters on the event loop must never wait inside SQLite for the file's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from tiergate.gateway.accounting.budget_sql import SqliteBudget
from tiergate.gateway.accounting.limits import BudgetCheck

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
