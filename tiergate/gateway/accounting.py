"""Opening and closing what virtual keys, limits, budgets and the ledger need, as one unit of the lifespan.

    database (SQLite: migrated here; PostgreSQL: checked here) -> Redis (optional) -> key cache -> ledger
    (spill files replayed) -> limiter -> background tasks (key refresh, change bus, ledger writer)

Changes to keys and tenants are announced on the Redis channel `<redis_prefix>changes` so that every
replica re-reads them at once; without Redis the key cache's poll (every `key_refresh_s`) picks them up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.budget_sql import PostgresBudget, SqliteBudget
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import is_sqlite, open_engine, sqlite_path
from tiergate.gateway.keys import KeyCache
from tiergate.gateway.ledger import LedgerWriter
from tiergate.gateway.limits import Limiter, LocalLimiter
from tiergate.gateway.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("tiergate.accounting")


def changes_channel(prefix: str) -> str:
    return f"{prefix}changes"


async def ledger_spend(engine: AsyncEngine, scope: str, since_s: int) -> int:
    """What a key ("k:<id>") or tenant ("t:<id>") spent on requests since `since_s`, per the ledger."""
    column = "key_id" if scope.startswith("k:") else "tenant_id"
    query = text(
        f"SELECT COALESCE(SUM(cost_nano), 0) FROM ledger WHERE {column} = :id AND ts_ms >= :since AND kind = 'request'"
    )
    async with engine.connect() as conn:
        return int((await conn.execute(query, {"id": scope[2:], "since": since_s * 1000})).scalar_one())


async def publish_change(
    redis: Redis, prefix: str, *, key_ids: Iterable[str] = (), tenant_ids: Iterable[str] = ()
) -> None:
    await redis.publish(
        changes_channel(prefix), orjson.dumps({"keys": list(key_ids), "tenants": list(tenant_ids)})
    )


@dataclass
class Accounting:
    settings: Settings
    engine: AsyncEngine
    keys: KeyCache
    ledger: LedgerWriter
    limiter: Limiter
    redis: Redis | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    ledger_task: asyncio.Task[None] | None = None
    # Settlements started while the server was cancelling requests; awaited, never cancelled, at close.
    settling: set[asyncio.Future[None]] = field(default_factory=set)

    async def announce(self, *, key_ids: Iterable[str] = (), tenant_ids: Iterable[str] = ()) -> None:
        """A key or tenant changed: re-read it here now, and tell the other replicas."""
        key_ids, tenant_ids = list(key_ids), list(tenant_ids)
        await self.keys.changed(key_ids=key_ids, tenant_ids=tenant_ids)
        if self.redis is not None:
            try:
                await publish_change(
                    self.redis, self.settings.redis_prefix, key_ids=key_ids, tenant_ids=tenant_ids
                )
            except Exception as exc:  # the others still see it at their next poll
                log.warning("announcing a key change failed: %s", exc.__class__.__name__)

    async def _listen(self) -> None:
        assert self.redis is not None
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(changes_channel(self.settings.redis_prefix))
                    # A message lost while (re)subscribing is covered by a full refresh now.
                    await self.keys.poll_once()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        change = orjson.loads(message["data"])
                        await self.keys.changed(
                            key_ids=change.get("keys", ()), tenant_ids=change.get("tenants", ())
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or the database away: listen again shortly
                log.warning("change listener interrupted (%s); reconnecting", exc.__class__.__name__)
                await asyncio.sleep(0.5)

    async def ready(self) -> str | None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"database unreachable ({exc.__class__.__name__})"
        if self.redis is not None:
            try:
                await self.redis.ping()
            except Exception as exc:
                return f"redis unreachable ({exc.__class__.__name__})"
        return None

    async def aclose(self) -> None:
        if self.settling:
            await asyncio.wait(self.settling, timeout=self.settings.drain_timeout_s)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.ledger_task is not None:
            self.ledger.stop()
            done, _ = await asyncio.wait({self.ledger_task}, timeout=self.settings.drain_timeout_s)
            if not done:
                log.error("the ledger was not drained within %.0fs: spilling", self.settings.drain_timeout_s)
                self.ledger_task.cancel()
                await asyncio.gather(self.ledger_task, return_exceptions=True)
                self.ledger.spill_pending()
        await self.limiter.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


async def open_accounting(settings: Settings) -> Accounting:
    url = settings.database_url
    if is_sqlite(url):
        before, after = await migrate.upgrade(url)
        if before != after:
            log.warning("database %s migrated from %s to %s", sqlite_path(url), before or "empty", after)
    else:
        await migrate.check(url)
    engine = open_engine(url)
    policy = settings.accounting
    redis: Redis | None = None
    try:
        if settings.redis_url:
            # Imported only here: a gateway without Redis never pays for the client (~8 MB).
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.exceptions import RedisError

            # Blocking: a burst waits briefly for a connection instead of failing; 64 covers one process.
            pool = BlockingConnectionPool.from_url(settings.redis_url, max_connections=64, timeout=5)
            redis = Redis(connection_pool=pool)
            try:
                await redis.ping()
            except RedisError as exc:
                # Start anyway: /readyz says not ready, calls that need shared limits get a 503, and all
                # of it recovers when Redis is back, without a restart.
                log.warning(
                    "Redis is unreachable at startup (%s); calls with limits get 503s until it is back",
                    exc.__class__.__name__,
                )
        ledger = LedgerWriter(
            engine,
            batch_size=policy.ledger_batch_size,
            flush_s=policy.ledger_flush_s,
            retries=policy.ledger_retries,
            queue_size=policy.ledger_queue_size,
            spill_dir=policy.spill_dir,
        )
        await ledger.replay()
        limiter: Limiter
        if redis is not None:

            async def seed(scope: str, since_s: int) -> int:
                return await ledger_spend(engine, scope, since_s)

            from tiergate.gateway.limits_redis import RedisLimiter

            limiter = RedisLimiter(
                redis, settings.redis_prefix, seed, reservation_ttl_s=policy.reservation_ttl_s
            )
        elif is_sqlite(url):
            limiter = LocalLimiter(SqliteBudget(sqlite_path(url)))
        else:
            budget = PostgresBudget(engine)
            await budget.start()
            limiter = LocalLimiter(budget)
    except BaseException:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()
        raise
    keys = KeyCache(engine, refresh_s=policy.key_refresh_s, max_age_s=policy.key_cache_ttl_s)
    accounting = Accounting(settings, engine, keys, ledger, limiter, redis)
    accounting.ledger_task = asyncio.ensure_future(ledger.run())
    accounting.tasks.append(asyncio.ensure_future(keys.run()))
    if redis is not None:
        accounting.tasks.append(asyncio.ensure_future(accounting._listen()))
    return accounting
