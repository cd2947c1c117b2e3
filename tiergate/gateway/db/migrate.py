"""Alembic, driven from code: the migrations ship inside the package.

`upgrade` applies pending migrations (`tiergate db upgrade`, and `tiergate serve` on SQLite); `require_current` is what
a PostgreSQL-backed gateway runs at startup: it refuses to serve on a schema that is behind.

Alembic (with Mako and Pygments, ~12 MB) is imported only when there is something to migrate: a gateway
finds out whether its schema is at head by reading `alembic_version` and the revision ids of the shipped
migration files, which `tests/admin/test_storage.py` checks against Alembic's own answer.
"""

from __future__ import annotations

import ast
import functools
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from tiergate.gateway.db.engine import open_engine, redact_url

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Alembic narrates every step at INFO; tiergate reports what changed itself.
logging.getLogger("alembic").setLevel(logging.WARNING)


class SchemaBehind(RuntimeError):
    """The database schema is older than this version of tiergate."""


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _literal(tree: ast.Module, name: str) -> Any:
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == name and getattr(node, "value", None) is not None:
            return ast.literal_eval(node.value)  # type: ignore[attr-defined]
    raise ValueError(f"a migration without `{name}`")


# Parsed once per process: the shipped migrations cannot change while it runs, and CPython 3.11's ast.parse
# shares its recursion counter between threads, so one beside another thread's parse (a background import
# at an app's start) can fail with "AST constructor recursion depth mismatch".
@functools.cache
def head() -> str:
    """The newest revision of the shipped migrations: the one no other revision revises."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        revisions.add(_literal(tree, "revision"))
        down = _literal(tree, "down_revision")
        revised.update([down] if isinstance(down, str) else down or ())
    heads = revisions - revised
    if len(heads) != 1:
        raise RuntimeError(f"the shipped migrations must have one head, not {sorted(heads)}")
    return heads.pop()


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def current(url: str) -> str | None:
    """The database's revision, read from `alembic_version` (None: no tiergate tables yet)."""
    engine = open_engine(url)
    try:
        async with engine.connect() as conn:
            try:
                return (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar_one_or_none()
            except Exception:  # no such table: an empty database
                return None
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, target: str) -> None:
    from alembic import command

    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, target)


async def upgrade(url: str, target: str = "head") -> tuple[str | None, str]:
    """Apply pending migrations; returns (revision before, revision after)."""
    if target == "head":
        at = await current(url)
        if at == head():
            return at, at
    engine = open_engine(url)
    try:
        async with engine.begin() as conn:
            before = await conn.run_sync(_current)
            await conn.run_sync(_upgrade, target)
            after = await conn.run_sync(_current)
    finally:
        await engine.dispose()
    return before, after or ""


async def require_current(url: str) -> None:
    """Raise SchemaBehind, with what to run, unless the database is at the head revision."""
    at, wanted = await current(url), head()
    if at != wanted:
        state = "has no tiergate tables" if at is None else f"is at migration {at}"
        raise SchemaBehind(
            f"the database {redact_url(url)} {state}, this tiergate needs {wanted}: run "
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
            from alembic import command

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
