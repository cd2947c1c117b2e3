"""Database URLs and engines.

Users write plain URLs (`sqlite:///./tiergate.db`, `postgresql://user@host:5432/db`); the async drivers are
chosen here: aiosqlite for SQLite and asyncpg for PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.fieldtypes import database_url_problem
from tiergate.gateway.errors import ServiceUnavailable

# aiosqlite logs every statement with its parameters at DEBUG: row values (trace content) must not reach logs.
logging.getLogger("aiosqlite").setLevel(logging.INFO)
# What a database that cannot be reached right now raises - refused or reset connections, timeouts, a pool
# with no connection to give, a server starting or shutting down - as opposed to a bad statement.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    exc.OperationalError,
    exc.InterfaceError,
    exc.DisconnectionError,
    exc.TimeoutError,
)
_ASYNCPG_UNREACHABLE = ("PostgresConnectionError", "InterfaceError", "CannotConnectNowError")


def async_url(url: str) -> str:
    """The SQLAlchemy URL with an async driver for a user's database URL."""
    problem = database_url_problem(url)
    if problem is not None:
        raise ConfigError(f"database_url: {problem}", "database_url")
    scheme, _, rest = url.partition("://")
    base = scheme.split("+", 1)[0].lower()
    if base == "sqlite":
        return "sqlite+aiosqlite://" + rest
    # PostgreSQL: database_url_problem accepts no other scheme.
    parts = urlsplit("postgresql+asyncpg://" + rest)
    # libpq's sslmode is spelled ssl for asyncpg.
    query = [("ssl" if k == "sslmode" else k, v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def check_database_url(url: str) -> None:
    """Raise ConfigError if `url` cannot work whatever the database's state: a scheme without a driver, an
    in-memory SQLite database, a SQLite file in a directory that does not exist."""
    async_url(url)
    if is_sqlite(url):
        directory = os.path.dirname(sqlite_path(url)) or "."
        if not os.path.isdir(directory):
            raise ConfigError(
                f"database_url: the directory {directory} of the SQLite file does not exist", "database_url"
            )


def is_sqlite(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0].lower() == "sqlite"


def sqlite_path(url: str) -> str:
    """The file of a sqlite URL (`sqlite:///./x.db` -> ./x.db, `sqlite:////abs/x.db` -> /abs/x.db)."""
    rest = url.partition("://")[2]
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        raise ConfigError(
            "database_url must name a SQLite file: an in-memory database is not shared by connections"
        )
    return path


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def database_error_types() -> tuple[type[Exception], ...]:
    """Every exception type a database call may raise (for handlers that then ask `database_unreachable`)."""
    asyncpg = sys.modules.get("asyncpg.exceptions")
    extra = (asyncpg.PostgresError, asyncpg.InterfaceError) if asyncpg is not None else ()
    return (OSError, TimeoutError, exc.SQLAlchemyError, *extra)


def database_unreachable(error: BaseException) -> bool:
    if isinstance(error, _UNREACHABLE):
        return True
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    asyncpg = sys.modules.get("asyncpg.exceptions")  # not loaded: not an asyncpg error (SQLite installs)
    return asyncpg is not None and isinstance(
        error, tuple(getattr(asyncpg, name) for name in _ASYNCPG_UNREACHABLE)
    )


def database_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("the database is unreachable; try again shortly", code="database_unavailable")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (reports) run beside the writer; NORMAL sync is durable across process crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_engine(url: str) -> AsyncEngine:
    # Parameters are row values (trace content, prompts): never in SQLAlchemy's logs or error messages.
    check_database_url(url)
    if is_sqlite(url):
        engine = create_async_engine(async_url(url), hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        async_url(url), pool_size=10, max_overflow=10, pool_pre_ping=True, hide_parameters=True
    )
