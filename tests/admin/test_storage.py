"""The storage layer on both databases: migrations, tenants and keys, budget counters, ledger and reports."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import ADMIN, config, serve
from tests.support import ROOT
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import async_url


def test_plain_urls_get_async_drivers() -> None:
    assert (
        async_url("postgresql://u@h:5432/db?sslmode=require")
        == "postgresql+asyncpg://u@h:5432/db?ssl=require"
    )
    assert async_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert async_url("sqlite:///./x.db") == "sqlite+aiosqlite:///./x.db"


async def test_migrations_then_keys_budgets_ledger_and_reports(empty_database_url: str) -> None:
    if empty_database_url.startswith("postgresql"):
        with pytest.raises(migrate.SchemaBehind, match="tiergate db upgrade"):
            await migrate.require_current(empty_database_url)
        assert await migrate.upgrade(empty_database_url) == (None, migrate.head())
    async with serve(config(empty_database_url)) as s:
        # 100,000 nano: 5 requests at 20,000; the cache override is a JSON column (migration 0004)
        tenant = await s.new_tenant(budget_usd=0.0001, cache={"semantic": {"threshold": 0.95}})
        got = await s.client.get(f"/admin/tenants/{tenant['id']}", headers=ADMIN)
        assert got.json()["cache"] == {"semantic": {"threshold": 0.95}}
        key = await s.new_key(tenant["id"])
        results = await asyncio.gather(*(s.chat(key["key"], max_tokens=5) for _ in range(12)))
        statuses = [r.status_code for r in results]
        assert statuses.count(200) <= 5 and set(statuses) <= {200, 429}
        await s.flushed()
        report = (
            await s.client.get(f"/admin/reports/cost?tenant_id={tenant['id']}&group_by=day", headers=ADMIN)
        ).json()
        assert report["total"]["requests"] == statuses.count(200)
        assert report["total"]["cost_usd"] == pytest.approx(statuses.count(200) * 20_000 / 1e9)
        await s.client.delete(f"/admin/keys/{key['id']}", headers=ADMIN)
        assert (await s.chat(key["key"])).status_code == 401
    await migrate.require_current(empty_database_url)


def test_the_head_read_from_the_migration_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    assert migrate.head() == ScriptDirectory.from_config(migrate._config()).get_current_head()


def test_a_database_at_head_is_not_migrated_and_alembic_is_never_imported(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'at-head.db'}"
    asyncio.run(migrate.upgrade(url))
    # A fresh interpreter, as a restarting gateway: its schema is current, so Alembic (~12 MB) stays out.
    script = (
        "import asyncio, sys\n"
        "from tiergate.gateway.db import migrate\n"
        f"before, after = asyncio.run(migrate.upgrade({url!r}))\n"
        "asyncio.run(migrate.require_current(" + repr(url) + "))\n"
        "print(before == after == migrate.head(), 'alembic' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert done.stdout.split() == ["True", "False"]


async def test_the_migrations_build_the_models_schema_and_the_newest_one_downgrades(
    empty_database_url: str,
) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.engine import Connection

    from tiergate.gateway.db.engine import open_engine
    from tiergate.gateway.db.schema import metadata

    def differences(connection: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    def downgrade(connection: Connection) -> None:
        config = migrate._config()
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")

    await migrate.upgrade(empty_database_url)
    engine = open_engine(empty_database_url)
    try:
        async with engine.begin() as conn:
            assert await conn.run_sync(differences) == []
            await conn.run_sync(downgrade)
    finally:
        await engine.dispose()
    head = migrate.head()
    assert await migrate.upgrade(empty_database_url) == (str(int(head) - 1).zfill(4), head)
