"""Versioned route tables: where they are kept, and how a running gateway picks up a new one.

Versions are append-only (a rollback writes a new version with an older content), so the history says
what was served when. Every replica polls the store's newest version number every `routing.refresh_s`
seconds and installs a newer table without a restart; a request sees either the old or the new table.

`RouteTableStore` is the seam to storage; `SqlRouteTableStore` keeps the versions in the gateway's database
(the SQLite file of the embedded default, or the PostgreSQL that replicas share), so they survive restarts.
The table is global: one history for every tenant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Row, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.db.models import RouteTableVersion
from tiergate.gateway.routing.router import CentroidMismatch, Router
from tiergate.policies.route_table import RouteTableDoc, parse_sampling
from tiergate.policies.routing import RouteTable

log = logging.getLogger("tiergate.route_table")


class VersionConflict(Exception):
    """The table changed since the version the writer based its change on."""

    def __init__(self, latest: int) -> None:
        super().__init__(f"the route table is at version {latest}")
        self.latest = latest


@dataclass(frozen=True, slots=True)
class StoredRouteTable:
    version: int
    doc: RouteTableDoc
    created_ms: int
    author: str


class RouteTableStore(Protocol):
    async def latest_version(self) -> int:
        """The newest version number (0: none yet); cheap, polled by every replica."""

    async def get(self, version: int | None = None) -> StoredRouteTable | None:
        """One version (None: the newest), or None when there is no such version."""

    async def append(self, doc: RouteTableDoc, *, author: str, base_version: int | None) -> StoredRouteTable:
        """Write the next version; raises VersionConflict when `base_version` is given and not the newest."""

    async def history(self, limit: int) -> list[StoredRouteTable]:
        """The newest versions first."""


class SqlRouteTableStore:
    """The `route_tables` table of the gateway's database (SQLite or PostgreSQL), shared by its replicas.

    A writer numbers its version newest + 1; when another writer took that number first, the primary key
    refuses the row and the write is a `VersionConflict` (or, unconditional, is numbered again).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def latest_version(self) -> int:
        async with self._engine.connect() as conn:
            # MAX over the primary key: one index lookup on both databases.
            return int((await conn.execute(select(func.max(_TABLE.c.version)))).scalar_one() or 0)

    async def get(self, version: int | None = None) -> StoredRouteTable | None:
        query = select(_TABLE).order_by(_TABLE.c.version.desc()).limit(1)
        if version is not None:
            query = select(_TABLE).where(_TABLE.c.version == version)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _stored(row)

    async def append(self, doc: RouteTableDoc, *, author: str, base_version: int | None) -> StoredRouteTable:
        for _ in range(_UNCONDITIONAL_ATTEMPTS):
            latest = await self.latest_version()
            if base_version is not None and base_version != latest:
                raise VersionConflict(latest)
            stored = StoredRouteTable(latest + 1, doc, int(time.time() * 1000), author)
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        insert(_TABLE).values(
                            version=stored.version,
                            doc=doc.as_json(),
                            created_ms=stored.created_ms,
                            author=author,
                        )
                    )
            except IntegrityError:  # another writer took this version number first
                if base_version is not None:
                    raise VersionConflict(await self.latest_version()) from None
                continue
            return stored
        raise VersionConflict(await self.latest_version())

    async def history(self, limit: int) -> list[StoredRouteTable]:
        query = select(_TABLE).order_by(_TABLE.c.version.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [_stored(row) for row in (await conn.execute(query)).all()]


_TABLE = RouteTableVersion.__table__  # type: ignore[attr-defined]
# An unconditional write that keeps losing the race to other writers gives up (a conflict) after this many.
_UNCONDITIONAL_ATTEMPTS = 5


def _stored(row: Row[Any]) -> StoredRouteTable:
    doc = row.doc
    routes = dict(doc["routes"])
    return StoredRouteTable(
        version=row.version,
        doc=RouteTableDoc(
            routes,
            {name: tuple(vector) for name, vector in (doc.get("centroids") or {}).items()},
            doc.get("note") or "",
            dict(doc.get("names") or {}),
            parse_sampling(doc.get("sampling"), routes),  # absent in versions written before it existed
        ),
        created_ms=row.created_ms,
        author=row.author,
    )


def install(router: Router, stored: StoredRouteTable) -> None:
    doc = stored.doc
    router.install(RouteTable(stored.version, dict(doc.routes), dict(doc.sampling)), doc.centroids)


async def refresh(store: RouteTableStore, router: Router) -> bool:
    """Install the store's newest version when it differs from the one served; True when it did.

    A version whose centroids are not in the domain embedder's space is refused (logged once): the table in
    force keeps serving until a newer version arrives."""
    latest = await store.latest_version()
    if latest == 0 or latest in (router.snapshot.table.version, router.refused_version):
        return False
    stored = await store.get(latest)
    if stored is None:
        return False
    try:
        install(router, stored)
    except CentroidMismatch as exc:
        router.refused_version = latest
        log.error("route table version %d refused: %s", latest, exc)
        return False
    log.info("route table version %d installed", stored.version)
    return True


async def refresh_or_keep(store: RouteTableStore, router: Router) -> None:
    """`refresh`, but a storage hiccup only logs: the table in force keeps serving, the next poll tries again."""
    try:
        await refresh(store, router)
    except Exception as exc:
        log.warning("route table refresh failed: %s", exc)


async def keep_fresh(store: RouteTableStore, router: Router, interval_s: float) -> None:
    """The background task of every replica: poll and install, never dying of a storage hiccup."""
    while True:
        await asyncio.sleep(interval_s)
        await refresh_or_keep(store, router)
