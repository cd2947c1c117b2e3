"""`SqlRouteTableStore` on SQLite and PostgreSQL: append-only versions, conditional writes, history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.routing.router import Router
from tiergate.gateway.routing.table_store import SqlRouteTableStore, VersionConflict, refresh_or_keep
from tiergate.policies.route_table import RouteTableDoc

E0 = (1.0,) + (0.0,) * 383


@pytest.fixture
async def engines(empty_database_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on one database: two replicas, each with its own connections."""
    await migrate.upgrade(empty_database_url)
    pair = (open_engine(empty_database_url), open_engine(empty_database_url))
    try:
        yield pair
    finally:
        for engine in pair:
            await engine.dispose()


async def test_versions_content_and_history(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    store = SqlRouteTableStore(engines[0])
    assert await store.latest_version() == 0 and await store.get() is None and await store.history(5) == []
    first = await store.append(
        RouteTableDoc({"billing": "student"}, {"billing": E0}, "promote billing"),
        author="master",
        base_version=0,
    )
    second = await store.append(
        RouteTableDoc({"billing": "teacher"}), author="promote-job", base_version=None
    )
    assert (first.version, second.version) == (1, 2) and await store.latest_version() == 2
    # What comes back from the database is what went in (the vectors too).
    one = await store.get(1)
    assert one is not None and one.doc == first.doc and one.author == "master" and one.created_ms > 0
    assert one.doc.centroids["billing"] == E0 and one.doc.note == "promote billing"
    newest = await store.get()
    assert newest is not None and newest.version == 2 and newest.author == "promote-job"
    assert await store.get(3) is None and await store.get(0) is None
    assert [s.version for s in await store.history(5)] == [2, 1]
    assert [s.version for s in await store.history(1)] == [2]


async def test_a_stale_base_version_is_a_conflict_and_writes_nothing(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    store = SqlRouteTableStore(engines[0])
    await store.append(RouteTableDoc({"a": "student"}), author="x", base_version=None)
    for stale in (0, 2, 7):
        with pytest.raises(VersionConflict) as conflict:
            await store.append(RouteTableDoc({"a": "teacher"}), author="x", base_version=stale)
        assert conflict.value.latest == 1
    assert await store.latest_version() == 1 and [s.version for s in await store.history(10)] == [1]


async def test_a_rollback_is_a_new_version_with_the_old_content(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    store = SqlRouteTableStore(engines[0])
    for tier in ("student", "ta", "teacher"):
        await store.append(RouteTableDoc({"billing": tier}), author="x", base_version=None)
    older = await store.get(1)
    assert older is not None
    back = await store.append(older.doc, author="rollback", base_version=3)
    assert back.version == 4
    history = await store.history(10)
    assert [s.version for s in history] == [4, 3, 2, 1]
    assert [s.doc.routes["billing"] for s in history] == ["student", "teacher", "ta", "student"]


async def test_two_replicas_writing_on_the_same_base_make_one_version_and_one_conflict(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    stores = [SqlRouteTableStore(e) for e in engines]
    await stores[0].append(RouteTableDoc({"a": "student"}), author="r0", base_version=0)
    for _ in range(5):  # each round races both replicas on the same base
        base = await stores[0].latest_version()
        results = await asyncio.gather(
            *(
                s.append(RouteTableDoc({"a": "ta"}), author=f"r{i}", base_version=base)
                for i, s in enumerate(stores)
            ),
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        conflicts = [r for r in results if isinstance(r, VersionConflict)]
        assert len(wins) == 1 and len(conflicts) == 1, results
        assert wins[0].version == base + 1 and conflicts[0].latest == base + 1
    assert [s.version for s in await stores[1].history(100)] == [6, 5, 4, 3, 2, 1]


async def test_unconditional_writes_at_once_all_land_on_their_own_versions(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    stores = [SqlRouteTableStore(e) for e in engines]
    written = await asyncio.gather(
        *(
            stores[i % 2].append(RouteTableDoc({"a": "student"}), author=f"w{i}", base_version=None)
            for i in range(4)
        )
    )
    assert sorted(s.version for s in written) == [1, 2, 3, 4]
    assert {s.author for s in await stores[0].history(10)} == {"w0", "w1", "w2", "w3"}


async def test_a_replica_installs_what_another_wrote_and_survives_an_unreachable_store(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    from tiergate.gateway.config.settings import parse_settings
    from tiergate.gateway.upstream.fleet import Fleet

    settings = parse_settings({"master_key": "m"}, env={})
    router = Router(settings.routing, Fleet(()), settings.escalation)
    await SqlRouteTableStore(engines[0]).append(RouteTableDoc({"general": "ta"}), author="r0", base_version=0)
    reader = SqlRouteTableStore(engines[1])
    await refresh_or_keep(reader, router)
    assert router.snapshot.table.version == 1 and router.snapshot.table.routes == {"general": "ta"}
    unreachable = open_engine("postgresql://nobody@127.0.0.1:9/none")
    try:
        # Logs, does not raise: the installed table keeps serving.
        await refresh_or_keep(SqlRouteTableStore(unreachable), router)
    finally:
        await unreachable.dispose()
    assert router.snapshot.table.version == 1
