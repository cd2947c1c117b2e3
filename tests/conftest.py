from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import service_unavailable

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _reachable(host: str, port: int) -> str | None:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    problem = _reachable(POSTGRES_HOST, POSTGRES_PORT)
    if problem:
        service_unavailable(f"PostgreSQL on {POSTGRES_HOST}:{POSTGRES_PORT}", problem)
    return os.environ.get(
        "TIERGATE_TEST_POSTGRES", f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"
    )


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test (dropped afterwards), so tests never see each other's rows."""
    import asyncio

    import asyncpg

    name = "tiergate_t_" + uuid.uuid4().hex[:12]
    base, _, _ = postgres_admin_url.rpartition("/")

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(postgres_admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    problem = _reachable(REDIS_HOST, REDIS_PORT)
    if problem:
        service_unavailable(f"Redis on {REDIS_HOST}:{REDIS_PORT}", problem)
    return os.environ.get("TIERGATE_TEST_REDIS", f"redis://{REDIS_HOST}:{REDIS_PORT}/0")


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to one test: tests (and parallel runs) share the server, never keys."""
    return f"tgtest:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of the test's own."""
    return f"sqlite:///{tmp_path}/tiergate.db"


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Both databases, not migrated: for tests of the migrations themselves or that migrate on their own."""
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    return url
