"""The semantic response cache's storage: Chroma, one collection per tenant partition.

An entry is one answered query: its sentence vector (given to Chroma explicitly - Chroma's own embedding
function would download a model), the query text as the document, and as metadata the scope it was asked in
(`policies.cache.semantic_scope`: route, conversation context, parameters), when it was stored, its TTL and
the answer. The verifier also needs the stored query's token states; rather than keep ~1.5 KB per word
piece, the stored text is embedded again, which only happens for a candidate above the threshold (and the
embedder's LRU often still holds it).

Each tenant has a collection of its own, so a bug in a filter cannot serve one tenant's answer to another.
A lookup asks Chroma for the `CANDIDATES` nearest entries of any scope first: an unfiltered query was ~6 ms
faster than one with a `where` filter in `bench/semantic_lookup.py`, and it settles most lookups - when one
of them has the request's scope, the first such is the nearest entry of that scope; when the last of them is
below the threshold, no entry further away can be served. Only when all of them are close enough but of
other scopes (one question asked under several system prompts) is the query repeated with the scope as a
filter, so such a crowd never hides the entry that should be served.

Chroma calls block, so they run in a thread pool of their own. Writes go on a bounded queue drained by one
task (overflow is dropped and counted) in batches: one upsert costs Chroma ~8 ms of CPU alone but ~0.6 ms
per entry in a batch of 32, so a write waits up to `WRITE_LINGER_S` for others to share its call (a
paraphrase asked within that time is a miss). A batch Chroma refuses for what it holds (not for being away)
is written entry by entry, so only the entry at fault is lost (counted in `rejected`, logged by its id).
Expired entries are skipped on read and deleted every `prune_s`.
A broken Chroma turns into misses (counted), never into failed requests; so does a slow one: a lookup
gives up after `lookup_timeout_s` (chromadb's HTTP client has no timeout of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson

from tiergate.gateway.cache.exact import CachedAnswer
from tiergate.gateway.db.batches import log_refused, write_each
from tiergate.gateway.routing.query import ChatQuery, Encoder
from tiergate.policies.cache import fresh
from tiergate.policies.semantic import EncodedQuery, MatchDecision, SemanticPolicy, decide_match

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from chromadb.api.types import Where

log = logging.getLogger("tiergate.cache")
T = TypeVar("T")
CANDIDATES = 4
WRITE_BATCH = 64  # entries per upsert call, at most
WRITE_LINGER_S = 0.1
PREFIX = "tiergate-"


def collection_name(partition: str) -> str:
    """Chroma names allow few characters; a tenant id may hold any, so the partition is hashed."""
    return PREFIX + hashlib.sha256(partition.encode()).hexdigest()[:40]


def open_client(url: str | None, path: str) -> ClientAPI:
    """A Chroma server's client when `url` is set, else the embedded persistent store in `path`."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if url:
        parts = urlsplit(url)
        ssl = parts.scheme == "https"
        return chromadb.HttpClient(
            host=parts.hostname or "localhost",
            port=parts.port or (443 if ssl else 8000),
            ssl=ssl,
            settings=settings,
        )
    return chromadb.PersistentClient(path=path, settings=settings)


@dataclass(frozen=True, slots=True)
class SemanticHit:
    answer: CachedAnswer
    decision: MatchDecision


@dataclass(frozen=True, slots=True)
class SemanticEntry:
    """One answer to keep; queued, embedded and written off the response path."""

    partition: str
    scope: str
    text: str
    answer: dict[str, Any]
    tier: str | None
    model: str | None
    ttl_s: float


_Row = tuple[SemanticEntry, np.ndarray]  # an entry to write, with its vector


class SemanticCache:
    def __init__(
        self,
        client: ClientAPI,
        encoder: Encoder,
        *,
        queue_size: int,
        prune_s: float,
        lookup_timeout_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.clock = clock
        self._encoder = encoder
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tiergate-chroma")
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self._queue: asyncio.Queue[SemanticEntry] = asyncio.Queue(queue_size)
        self._hurry = asyncio.Event()  # set by flush and shutdown: write what is queued without lingering
        self._prune_s = prune_s
        self._lookup_timeout_s = lookup_timeout_s
        self.dropped_writes = 0  # writes refused because the queue was full
        self.rejected_writes = 0  # entries Chroma refused on their own (the rest of their batch written)
        self.errors = 0  # Chroma or embedding failures (lookups count as misses, writes are lost)
        self.written = 0
        self._tasks = [
            asyncio.ensure_future(self._drain()),
            asyncio.ensure_future(self._prune_periodically()),
        ]

    # The write queue as `metrics.QueueStats`: its depth and drops are exported.
    name = "semantic_cache_writes"

    def depth(self) -> int:
        return self._queue.qsize()

    def dropped(self) -> int:
        return self.dropped_writes

    def rejected(self) -> int:
        return self.rejected_writes

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _collection(self, partition: str, create: bool) -> Collection | None:
        with self._lock:
            found = self._collections.get(partition)
        if found is not None:
            return found
        from chromadb.errors import NotFoundError

        name = collection_name(partition)
        if create:
            found = self.client.get_or_create_collection(
                name, embedding_function=None, metadata={"hnsw:space": "cosine", "partition": partition}
            )
        else:
            try:
                found = self.client.get_collection(name, embedding_function=None)
            except NotFoundError:  # nothing stored for this tenant yet
                return None
        with self._lock:
            self._collections[partition] = found
        return found

    def _forget(self, partition: str) -> None:
        """After a failure: the collection may have been deleted (a purge, another replica); look it up again."""
        with self._lock:
            self._collections.pop(partition, None)

    def _nearest(
        self, partition: str, scope: str, vector: np.ndarray, threshold: float
    ) -> list[tuple[float, str, dict[str, Any]]]:
        """Entries of `scope`, nearest first; the first is the nearest of that scope whenever one is at or above
        `threshold` (see the module's docstring for why the filter is asked only sometimes)."""
        collection = self._collection(partition, create=False)
        if collection is None:
            return []
        found = self._query(collection, vector, None)
        same = [c for c in found if c[2].get("scope") == scope]
        if same or len(found) < CANDIDATES or found[-1][0] < threshold:
            return same
        return self._query(collection, vector, {"scope": scope})

    @staticmethod
    def _query(
        collection: Collection, vector: np.ndarray, where: dict[str, Any] | None
    ) -> list[tuple[float, str, dict[str, Any]]]:
        found = collection.query(
            query_embeddings=[vector],
            n_results=CANDIDATES,
            where=cast("Where | None", where),
            include=["distances", "documents", "metadatas"],
        )
        distances, documents, metadatas = found["distances"], found["documents"], found["metadatas"]
        if not distances or not documents or not metadatas:
            return []
        return [
            (1.0 - float(d), str(doc), dict(meta))
            for d, doc, meta in zip(distances[0], documents[0], metadatas[0], strict=True)
            if doc is not None and meta is not None
        ]

    async def lookup(
        self, partition: str, scope: str, query: ChatQuery, policy: SemanticPolicy, max_age_s: float | None
    ) -> SemanticHit | None:
        """The stored answer to the nearest same-scope query, if similar enough and verified; else None."""
        try:
            async with asyncio.timeout(self._lookup_timeout_s):
                return await self._lookup(partition, scope, query, policy, max_age_s)
        except Exception as exc:  # the cache is an optimisation: its failure must not fail the request
            self.errors += 1
            self._forget(partition)
            log.warning("semantic cache lookup failed: %s", exc.__class__.__name__)
        return None

    async def _lookup(
        self, partition: str, scope: str, query: ChatQuery, policy: SemanticPolicy, max_age_s: float | None
    ) -> SemanticHit | None:
        encoded = await query.encoded()
        found = await self._run(self._nearest, partition, scope, encoded.vector, policy.threshold)
        now = self.clock()
        candidates = sorted((c for c in found if _fresh(c[2], now, max_age_s)), key=lambda c: -c[0])
        incoming = EncodedQuery.of(query.text, encoded)
        for similarity, text, meta in candidates:
            if similarity < policy.threshold:
                break
            stored = EncodedQuery.of(text, await self._encoder.aencode(text))
            decision = await self._run(decide_match, stored, incoming, policy)
            if decision.hit:
                answer = CachedAnswer(
                    orjson.loads(meta["answer"]),
                    meta.get("tier") or None,
                    meta.get("model") or None,
                    meta["stored_at"],
                )
                return SemanticHit(answer, decision)
        return None

    def put(self, entry: SemanticEntry) -> bool:
        """Queue a write; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped_writes += 1
            return False
        return True

    def _upsert(self, partition: str, rows: list[_Row], now: float) -> None:
        collection = self._collection(partition, create=True)
        assert collection is not None
        # One entry per query text and scope: asking again refreshes it instead of adding a twin (and of two
        # in one batch, the newer wins: Chroma refuses a batch with a repeated id).
        newest = {entry_id(entry): (entry, vector) for entry, vector in rows}
        collection.upsert(
            ids=list(newest),
            embeddings=[vector for _, vector in newest.values()],
            documents=[entry.text for entry, _ in newest.values()],
            metadatas=[
                {
                    "scope": entry.scope,
                    "stored_at": now,
                    "ttl_s": entry.ttl_s,
                    "expires_at": now + entry.ttl_s,
                    "answer": orjson.dumps(entry.answer).decode(),
                    "tier": entry.tier or "",
                    "model": entry.model or "",
                }
                for entry, _ in newest.values()
            ],
        )

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.empty():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), WRITE_LINGER_S)
                self._hurry.clear()
            while len(batch) < WRITE_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[SemanticEntry]) -> None:
        by_partition: dict[str, list[_Row]] = {}
        for entry in batch:
            try:
                encoded = await self._encoder.aencode(entry.text)  # the lookup's embedding, from the LRU
            except Exception as exc:
                self.errors += 1
                log.warning("semantic cache write failed: %s", exc.__class__.__name__)
                continue
            by_partition.setdefault(entry.partition, []).append((entry, encoded.vector))
        now = self.clock()
        for partition, rows in by_partition.items():
            await self._write_partition(partition, rows, now)

    async def _write_partition(self, partition: str, rows: list[_Row], now: float) -> None:
        async def upsert(some: list[_Row]) -> None:
            await self._run(self._upsert, partition, some, now)

        try:
            await upsert(rows)
            self.written += len(rows)
            return
        except Exception as exc:
            self._forget(partition)
            if chroma_unreachable(exc):
                self.errors += 1
                log.warning("semantic cache write failed: %s", exc.__class__.__name__)
                return
        # Chroma refused an entry it cannot take (a vector of another size, ...): the others still go in.
        done = await write_each(rows, upsert, chroma_unreachable)
        self.written += done.written
        for (entry, _), refusal in done.refused:
            self.rejected_writes += 1
            log_refused(log, "semantic cache entry", entry_id(entry), refusal, "not cached")
        if done.away:
            self.errors += 1
            log.warning("semantic cache write failed: Chroma went away (%d entries)", len(done.away))

    def _prune(self, now: float) -> int:
        removed = 0
        for collection in self.client.list_collections():
            if not collection.name.startswith(PREFIX):
                continue
            expired = collection.get(where=cast("Where", {"expires_at": {"$lte": now}}), include=[])["ids"]
            if expired:
                collection.delete(ids=expired)
                removed += len(expired)
        return removed

    async def prune(self) -> int:
        """Delete every expired entry of every tenant; returns how many."""
        return await self._run(self._prune, self.clock())

    async def _prune_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._prune_s)
            try:
                await self.prune()
            except Exception as exc:
                self.errors += 1
                log.warning("semantic cache pruning failed: %s", exc.__class__.__name__)

    async def flush(self) -> None:
        """Wait until every queued write is done (tests, shutdown)."""
        self._hurry.set()
        await self._queue.join()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        self._hurry.set()
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.warning(
                "semantic cache: %d writes still queued at shutdown were dropped", self._queue.qsize()
            )
            self.dropped_writes += self._queue.qsize()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A call stuck on an unreachable server must not hold up the shutdown.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.client.close()  # type: ignore[attr-defined]  # on every client chromadb returns, not in ClientAPI


def entry_id(entry: SemanticEntry) -> str:
    return hashlib.sha256(f"{entry.scope}\0{entry.text}".encode()).hexdigest()[:32]


def chroma_unreachable(error: BaseException) -> bool:
    """Whether a Chroma call failed because the server is away (the embedded store never is), rather than
    refusing what it was given."""
    return isinstance(error, httpx.TransportError | ConnectionError | TimeoutError)


def _fresh(meta: dict[str, Any], now: float, max_age_s: float | None) -> bool:
    stored_at, ttl_s = meta.get("stored_at"), meta.get("ttl_s")
    if not isinstance(stored_at, int | float) or not isinstance(ttl_s, int | float):
        return False
    return fresh(float(stored_at), now, float(ttl_s), max_age_s)
