"""Versioned route tables: where they are kept, and how a running gateway picks up a new one.

Versions are append-only (a rollback writes a new version with an older content), so the history says
what was served when. Every replica polls the store's newest version number every `routing.refresh_s`
seconds and installs a newer table without a restart; a request sees either the old or the new table.

`RouteTableStore` is the seam to storage. `MemoryRouteTableStore` serves one process (the embedded default
and tests); a database-backed store shared by replicas implements the same four methods.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from tiergate.gateway.router import Router
from tiergate.policies.route_table import RouteTableDoc
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


class MemoryRouteTableStore:
    def __init__(self) -> None:
        self._versions: list[StoredRouteTable] = []
        self._lock = asyncio.Lock()

    async def latest_version(self) -> int:
        return self._versions[-1].version if self._versions else 0

    async def get(self, version: int | None = None) -> StoredRouteTable | None:
        if version is None:
            return self._versions[-1] if self._versions else None
        return self._versions[version - 1] if 0 < version <= len(self._versions) else None

    async def append(self, doc: RouteTableDoc, *, author: str, base_version: int | None) -> StoredRouteTable:
        async with self._lock:
            latest = len(self._versions)
            if base_version is not None and base_version != latest:
                raise VersionConflict(latest)
            stored = StoredRouteTable(latest + 1, doc, int(time.time() * 1000), author)
            self._versions.append(stored)
            return stored

    async def history(self, limit: int) -> list[StoredRouteTable]:
        return list(reversed(self._versions[-limit:]))


def install(router: Router, stored: StoredRouteTable) -> None:
    router.install(RouteTable(stored.version, dict(stored.doc.routes)), stored.doc.centroids)


async def refresh(store: RouteTableStore, router: Router) -> bool:
    """Install the store's newest version when it differs from the one served; True when it did."""
    latest = await store.latest_version()
    if latest == 0 or latest == router.snapshot.table.version:
        return False
    stored = await store.get(latest)
    if stored is None:
        return False
    install(router, stored)
    log.info("route table version %d installed", stored.version)
    return True


async def keep_fresh(store: RouteTableStore, router: Router, interval_s: float) -> None:
    """The background task of every replica: poll, install, never die of a storage hiccup."""
    while True:
        try:
            await refresh(store, router)
        except Exception as exc:  # the table in force keeps serving; the next poll tries again
            log.warning("route table refresh failed: %s", exc)
        await asyncio.sleep(interval_s)
