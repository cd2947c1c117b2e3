"""The exact response cache's storage: an in-process LRU bounded in bytes, or Redis with a TTL.

Lookups are on the response path; writes are not: `ResponseCache.put` puts the entry on a bounded queue
that one background task drains (overflow is dropped and counted, never blocking a response). A broken
backend turns into misses (counted), never into failed requests. Keys are `<partition>:<hash>`, so the
tenant wall is visible in Redis and a tenant's entries can be purged by pattern.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tiergate.policies.cache import fresh

log = logging.getLogger("tiergate.cache")


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def aclose(self) -> None: ...


class MemoryBackend:
    """LRU over entries, evicting the least recently used until the memory they hold fits in `max_bytes`.

    `size` is memory, not payload: counting only `len(value)` let each entry cost ~4x its count for a
    typical answer (the key string, a tuple and a float per entry, the table), so the bound bounded nothing
    (issue 13). Each entry is two bytes objects: the key's SHA-256 digest and the expiry packed in front
    of the value. Both are counted as allocated (`sys.getsizeof` rounded up to the allocator's 16-byte
    blocks), and the table itself with `sys.getsizeof` of the OrderedDict, which includes its hash table and
    its linked-list nodes; so `size <= max_bytes` bounds what the cache holds.
    """

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self.max_bytes = max_bytes
        self._clock = clock
        self._held = 0  # the entries' objects; the table is counted when `size` is read
        self.evictions = 0  # entries removed to make room (not expired ones)

    @property
    def size(self) -> int:
        """Bytes held: every entry's key and value objects and the table holding them."""
        return self._held + sys.getsizeof(self._entries)

    async def get(self, key: str) -> bytes | None:
        digest = _digest(key)
        stored = self._entries.get(digest)
        if stored is None:
            return None
        if self._clock() >= _EXPIRY.unpack_from(stored)[0]:
            self._remove(digest)
            return None
        self._entries.move_to_end(digest)
        return stored[_EXPIRY.size :]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        digest = _digest(key)
        stored = _EXPIRY.pack(self._clock() + ttl_s) + value
        if _entry_bytes(digest, stored) > self.max_bytes:
            return
        if digest in self._entries:
            self._remove(digest)
        self._entries[digest] = stored
        self._held += _entry_bytes(digest, stored)
        while self.size > self.max_bytes and self._entries:
            self._remove(next(iter(self._entries)))
            self.evictions += 1

    def _remove(self, digest: bytes) -> None:
        self._held -= _entry_bytes(digest, self._entries.pop(digest))

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        self._entries.clear()
        self._held = 0


_EXPIRY = struct.Struct("<d")  # monotonic seconds, in front of the value: no tuple or float per entry


def _digest(key: str) -> bytes:
    """32 bytes instead of the key string (~130 with its partition prefix); collisions are out of reach."""
    return hashlib.sha256(key.encode()).digest()


def _allocated(obj: bytes) -> int:
    # pymalloc hands out 16-byte-aligned blocks, so an object occupies its size rounded up to 16.
    return (sys.getsizeof(obj) + 15) & ~15


def _entry_bytes(digest: bytes, stored: bytes) -> int:
    return _allocated(digest) + _allocated(stored)


class RedisBackend:
    """Entries as Redis strings with a TTL (PX), shared by every replica."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as redis

        self._client = redis.Redis.from_url(url)
        self._prefix = prefix + "cache:exact:"

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(self._prefix + key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._client.set(self._prefix + key, value, px=max(1, int(ttl_s * 1000)))

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    answer: dict[str, Any]
    tier: str | None
    model: str | None
    stored_at: float


class ResponseCache:
    def __init__(
        self, backend: CacheBackend, *, queue_size: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.backend = backend
        self._clock = clock
        self._queue: asyncio.Queue[tuple[str, dict[str, Any], float]] = asyncio.Queue(queue_size)
        self.dropped_writes = 0  # writes refused because the queue was full
        self.errors = 0  # backend failures (lookups count as misses, writes are lost)
        self.written = 0
        self._writer = asyncio.ensure_future(self._drain())

    # The write queue as `metrics.QueueStats`: its depth and drops are exported.
    name = "cache_writes"

    def depth(self) -> int:
        return self._queue.qsize()

    def dropped(self) -> int:
        return self.dropped_writes

    async def get(self, key: str, max_age_s: float | None) -> CachedAnswer | None:
        try:
            raw = await self.backend.get(key)
        except Exception as exc:  # the cache is an optimisation: its failure must not fail the request
            self.errors += 1
            log.warning("cache lookup failed: %s", exc.__class__.__name__)
            return None
        if raw is None:
            return None
        entry = orjson.loads(raw)
        if not fresh(entry["stored_at"], self._clock(), entry["ttl_s"], max_age_s):
            return None
        return CachedAnswer(entry["answer"], entry.get("tier"), entry.get("model"), entry["stored_at"])

    def put(self, key: str, entry: dict[str, Any], ttl_s: float) -> bool:
        """Queue a write; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((key, entry, ttl_s))
        except asyncio.QueueFull:
            self.dropped_writes += 1
            return False
        return True

    async def _drain(self) -> None:
        while True:
            key, entry, ttl_s = await self._queue.get()
            try:
                value = orjson.dumps({**entry, "stored_at": self._clock(), "ttl_s": ttl_s})
                await self.backend.set(key, value, ttl_s)
                self.written += 1
            except Exception as exc:
                self.errors += 1
                log.warning("cache write failed: %s", exc.__class__.__name__)
            finally:
                self._queue.task_done()

    async def flush(self) -> None:
        """Wait until every queued write is done (tests, shutdown)."""
        await self._queue.join()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.warning("cache: %d writes still queued at shutdown were dropped", self._queue.qsize())
            self.dropped_writes += self._queue.qsize()
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        await self.backend.aclose()
