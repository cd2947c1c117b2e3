"""How stored responses reach the `responses` table: one batch of rows per call, committed before it returns.

On SQLite the rows go through a plain `sqlite3` connection in a worker thread: one thread hop per batch,
where the async driver makes one per statement step (connect, begin, execute, commit, reset), which cost
several times the insert itself. PostgreSQL (asyncpg, no threads) goes through the engine. Reads always do.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any, Protocol

import orjson
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.db.engine import database_unreachable
from tiergate.gateway.db.models import StoredResponse

_T = StoredResponse.__table__  # type: ignore[attr-defined]
_COLUMNS = (
    "id",
    "tenant_id",
    "key_id",
    "previous_id",
    "created_ms",
    "model",
    "status",
    "input_items",
    "response",
)
_JSON_COLUMNS = frozenset({"input_items", "response"})


class RowWriter(Protocol):
    async def write(self, rows: list[dict[str, Any]]) -> None:
        """Commit `rows` in one transaction (all or none)."""
        ...

    def unreachable(self, error: BaseException) -> bool:
        """Whether `error` says the database is away (rather than that it refused a row)."""
        ...

    def close(self) -> None: ...


class EngineWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def write(self, rows: list[dict[str, Any]]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(_T), rows)

    def unreachable(self, error: BaseException) -> bool:
        return database_unreachable(error)

    def close(self) -> None:
        pass  # the engine is the accounting's, closed with it


class SqliteWriter:
    """Rows written by one `sqlite3` connection, used by one batch at a time (the store writes one at once)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        names = ", ".join(_COLUMNS)
        self._sql = f"INSERT INTO {_T.name} ({names}) VALUES ({', '.join('?' * len(_COLUMNS))})"

    def _write(self, values: list[tuple[Any, ...]]) -> None:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")  # the ledger and traces write to the same file
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(self._sql, values)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def write(self, rows: list[dict[str, Any]]) -> None:
        values = [
            tuple(orjson.dumps(row[c]).decode() if c in _JSON_COLUMNS else row[c] for c in _COLUMNS)
            for row in rows
        ]
        await asyncio.to_thread(self._write, values)

    def unreachable(self, error: BaseException) -> bool:
        # Locked past the busy timeout, disk I/O, a file that went away; a refused value is not one of those.
        return isinstance(error, OSError | sqlite3.OperationalError) and not isinstance(
            error, sqlite3.IntegrityError
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_writer(engine: AsyncEngine) -> RowWriter:
    if engine.dialect.name == "sqlite" and engine.url.database:
        return SqliteWriter(engine.url.database)
    return EngineWriter(engine)
