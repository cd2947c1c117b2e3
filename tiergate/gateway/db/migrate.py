"""Alembic, driven from code: the migrations ship inside the package.

`upgrade` applies pending migrations (`tiergate db upgrade`, and `tiergate serve` on SQLite); `check` is what
a PostgreSQL-backed gateway runs at startup: it refuses to serve on a schema that is behind.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from tiergate.gateway.db.engine import open_engine, redact

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Alembic narrates every step at INFO; tiergate reports what changed itself.
logging.getLogger("alembic").setLevel(logging.WARNING)


class SchemaBehind(RuntimeError):
    """The database schema is older than this version of tiergate."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current(url: str) -> str | None:
    engine = open_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, target: str) -> None:
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, target)


async def upgrade(url: str, target: str = "head") -> tuple[str | None, str]:
    """Apply pending migrations; returns (revision before, revision after)."""
    engine = open_engine(url)
    try:
        async with engine.begin() as conn:
            before = await conn.run_sync(_current)
            await conn.run_sync(_upgrade, target)
            after = await conn.run_sync(_current)
    finally:
        await engine.dispose()
    return before, after or ""


async def check(url: str) -> None:
    """Raise SchemaBehind, with what to run, unless the database is at the head revision."""
    at, wanted = await current(url), head()
    if at != wanted:
        state = "has no tiergate tables" if at is None else f"is at migration {at}"
        raise SchemaBehind(
            f"the database {redact(url)} {state}, this tiergate needs {wanted}: run "
            "`tiergate db upgrade --config FILE` (a deploy step) before starting the gateway"
        )


async def autogenerate(message: str) -> list[str]:
    """Write a new migration that brings a database at head to the current models; returns its file(s)."""
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/scratch.db"
        await upgrade(url)
        engine = open_engine(url)
        written: list[Any] = []

        def run(connection: Connection) -> None:
            config = _config()
            config.attributes["connection"] = connection
            script = command.revision(config, message, autogenerate=True)
            written.extend(script if isinstance(script, list) else [script])

        try:
            async with engine.begin() as conn:
                await conn.run_sync(run)
        finally:
            await engine.dispose()
    return [s.path for s in written if s is not None]
