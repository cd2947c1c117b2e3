"""Budget counters in the database, for a gateway without Redis (one process).

Reservation and settlement are each one SQL statement over the key's and the tenant's counter rows, so
they are atomic without any lock of ours. On SQLite the statement runs on a plain `sqlite3` connection on
the event loop: a local WAL write of ~15 µs, far cheaper than a trip through a thread pool. That connection
never waits inside SQLite for the file's write lock: the lock may be held by a transaction (the ledger
writer's) whose COMMIT needs this very event loop to run, so a blocking wait would stall every request and
end in "database is locked". A busy file is retried after yielding to the loop instead. A counter row is
created the first time its (scope, period) is seen, seeded with the spend the ledger already holds for it.
Reservations of a process that died are released when the next one starts: without Redis the file has a
single gateway process (several processes or replicas need Redis, see limits_redis.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.accounting.limits import BudgetCheck

# How long a statement keeps retrying a busy file before giving up (the ledger's batches take milliseconds).
_BUSY_DEADLINE_S = 5.0

_SPEND = "SELECT COALESCE(SUM(cost_nano), 0) FROM ledger WHERE {column} = {id} AND ts_ms >= {since} AND kind = 'request'"


def _spend_query(scope: str, placeholder: str) -> str:
    column = "key_id" if scope.startswith("k:") else "tenant_id"
    return _SPEND.format(column=column, id=placeholder.format("id"), since=placeholder.format("since"))


class SqliteBudget:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, timeout=0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("UPDATE budget_counters SET reserved_nano = 0 WHERE reserved_nano != 0")
        self._ensured: set[tuple[str, int]] = set()
        self._statements: dict[int, tuple[str, str, str]] = {}

    async def _execute(self, sql: str, params: Any) -> sqlite3.Cursor:
        """Run one statement; when another connection holds the write lock, yield and retry."""
        deadline = time.monotonic() + _BUSY_DEADLINE_S
        delay = 0.0005
        while True:
            try:
                return self._db.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)

    async def _ensure(self, budgets: tuple[BudgetCheck, ...]) -> None:
        for b in budgets:
            if (b.scope, b.period_start) in self._ensured:
                continue
            spent = (
                await self._execute(
                    _spend_query(b.scope, ":{}"), {"id": b.scope[2:], "since": b.period_start * 1000}
                )
            ).fetchone()[0]
            await self._execute(
                "INSERT OR IGNORE INTO budget_counters (scope, period_start, spent_nano, reserved_nano) VALUES (?, ?, ?, 0)",
                (b.scope, b.period_start, spent),
            )
            self._ensured.add((b.scope, b.period_start))

    def _sql(self, n: int) -> tuple[str, str, str]:
        sql = self._statements.get(n)
        if sql is None:
            rows = " OR ".join(["(scope = ? AND period_start = ?)"] * n)
            over = " OR ".join(
                ["(scope = ? AND period_start = ? AND spent_nano + reserved_nano + ? > ?)"] * n
            )
            reserve = (
                f"UPDATE budget_counters SET reserved_nano = reserved_nano + ? WHERE ({rows}) "
                f"AND NOT EXISTS (SELECT 1 FROM budget_counters WHERE {over})"
            )
            settle = (
                "UPDATE budget_counters SET spent_nano = spent_nano + ?, "
                f"reserved_nano = MAX(reserved_nano - ?, 0) WHERE {rows}"
            )
            sql = self._statements[n] = (reserve, settle, f"SELECT scope FROM budget_counters WHERE {over}")
        return sql

    async def reserve(
        self, reservation_id: str, budgets: tuple[BudgetCheck, ...], amount_nano: int, now_s: float
    ) -> int | None:
        await self._ensure(budgets)
        reserve, _, over = self._sql(len(budgets))
        rows: list[Any] = [v for b in budgets for v in (b.scope, b.period_start)]
        limits: list[Any] = [v for b in budgets for v in (b.scope, b.period_start, amount_nano, b.limit_nano)]
        if (await self._execute(reserve, [amount_nano, *rows, *limits])).rowcount == len(budgets):
            return None
        refused = {r[0] for r in await self._execute(over, limits)}
        return next((i for i, b in enumerate(budgets) if b.scope in refused), 0)

    async def settle(
        self, reservation_id: str, budgets: tuple[BudgetCheck, ...], reserved_nano: int, cost_nano: int
    ) -> None:
        _, settle, _ = self._sql(len(budgets))
        await self._execute(
            settle, [cost_nano, reserved_nano, *(v for b in budgets for v in (b.scope, b.period_start))]
        )

    async def aclose(self) -> None:
        self._db.close()


class PostgresBudget:
    """The same counters on PostgreSQL (one replica without Redis): row-checked updates in one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._ensured: set[tuple[str, int]] = set()

    async def start(self) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(text("UPDATE budget_counters SET reserved_nano = 0 WHERE reserved_nano != 0"))

    async def _ensure(self, budgets: tuple[BudgetCheck, ...]) -> None:
        missing = [b for b in budgets if (b.scope, b.period_start) not in self._ensured]
        if not missing:
            return
        async with self._engine.begin() as conn:
            for b in missing:
                spent = (
                    await conn.execute(
                        text(_spend_query(b.scope, ":{}")),
                        {"id": b.scope[2:], "since": b.period_start * 1000},
                    )
                ).scalar_one()
                await conn.execute(
                    text(
                        "INSERT INTO budget_counters (scope, period_start, spent_nano, reserved_nano) "
                        "VALUES (:s, :p, :spent, 0) ON CONFLICT DO NOTHING"
                    ),
                    {"s": b.scope, "p": b.period_start, "spent": spent},
                )
        self._ensured.update((b.scope, b.period_start) for b in missing)

    async def reserve(
        self, reservation_id: str, budgets: tuple[BudgetCheck, ...], amount_nano: int, now_s: float
    ) -> int | None:
        await self._ensure(budgets)
        statement = text(
            "UPDATE budget_counters SET reserved_nano = reserved_nano + :a WHERE scope = :s AND period_start = :p "
            "AND spent_nano + reserved_nano + :a <= :l RETURNING scope"
        )
        # Rows locked in one order everywhere, so two transactions never wait on each other in a cycle.
        order = sorted(range(len(budgets)), key=lambda i: budgets[i].scope)
        async with self._engine.connect() as conn:
            transaction = await conn.begin()
            for i in order:
                b = budgets[i]
                params = {"a": amount_nano, "s": b.scope, "p": b.period_start, "l": b.limit_nano}
                if (await conn.execute(statement, params)).first() is None:
                    await transaction.rollback()
                    return i
            await transaction.commit()
        return None

    async def settle(
        self, reservation_id: str, budgets: tuple[BudgetCheck, ...], reserved_nano: int, cost_nano: int
    ) -> None:
        statement = text(
            "UPDATE budget_counters SET spent_nano = spent_nano + :c, reserved_nano = GREATEST(reserved_nano - :r, 0) "
            "WHERE scope = :s AND period_start = :p"
        )
        async with self._engine.begin() as conn:
            for b in sorted(budgets, key=lambda b: b.scope):
                await conn.execute(
                    statement, {"c": cost_nano, "r": reserved_nano, "s": b.scope, "p": b.period_start}
                )

    async def aclose(self) -> None:
        return None
