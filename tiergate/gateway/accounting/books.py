"""Opening and closing what virtual keys, limits, budgets and the ledger need, as one unit of the lifespan.

    database (SQLite: migrated here; PostgreSQL: checked here, or once it is back when it is away at
    startup) -> Redis (optional) -> key cache -> ledger
    (spill files and dead processes' write-ahead segments replayed) -> limiter -> background tasks (key refresh, change bus, ledger writer)

Closing drains in the opposite order, and first settles every call that was admitted: calls the server
cancelled (its drain timeout expired) settle themselves as they unwind - a cut stream bills what it relayed -
and whatever is still open after `_UNWIND_S` is settled here as failed. Only then is the ledger drained, so
every admitted call has its one ledger row and no reservation is left held.

Changes to keys and tenants are announced on the Redis channel `<redis_prefix>changes` so that every
replica re-reads them at once; without Redis the key cache's poll (every `key_refresh_s`) picks them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.accounting.budget_sql import PostgresBudget, SqliteBudget
from tiergate.gateway.accounting.keys import KeyCache
from tiergate.gateway.accounting.ledger import LedgerWriter
from tiergate.gateway.accounting.limits import Limiter, LocalLimiter
from tiergate.gateway.accounting.records import CallRecord, Sink
from tiergate.gateway.config.settings import Settings
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import database_unreachable, is_sqlite, open_engine, redact_url, sqlite_path
from tiergate.gateway.errors import GatewayError

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("tiergate.accounting")
# At shutdown, how long cancelled calls get to settle themselves before the rest are settled as failed.
_UNWIND_S = 5.0
# PostgreSQL away at startup: the first re-check after this long, then twice as long each time, up to the max.
_RECHECK_FIRST_S = 0.5
_RECHECK_MAX_S = 10.0


def redis_client(url: str) -> Redis:
    """The client for limits, budgets and key changes; imported only here, so that a gateway without Redis
    never pays for it (~8 MB)."""
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # A pooled connection that was reset while idle (Redis restarted, a proxy in between cut it) fails its
    # next command when writing it, with uvloop's RuntimeError on the closed transport: nothing reached Redis,
    # so that one error is retried once on a new connection. Nothing else is retried: a command that may have
    # run (a script whose reply was lost) must not run twice.
    stale_connection_retry = Retry(NoBackoff(), 1, supported_errors=(RuntimeError,))  # type: ignore[arg-type, unused-ignore]
    # Blocking: a burst waits briefly for a connection instead of failing; 64 covers one process.
    pool = BlockingConnectionPool.from_url(url, max_connections=64, timeout=5, retry=stale_connection_retry)
    return Redis.from_pool(pool)  # closing the client closes its pool


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
    # Calls admitted and not yet settled, by id(record): what a shutdown must settle before the ledger closes.
    open_calls: dict[int, CallRecord] = field(default_factory=dict)
    # Settlements in flight (limiter round trip, then the ledger row); awaited, never cancelled, at close.
    settling: set[asyncio.Future[None]] = field(default_factory=set)
    _all_settled: asyncio.Event | None = None  # made at close, set when the last open call settles
    # False while PostgreSQL, unreachable at startup, has not been checked yet (schema, budget counters,
    # spill files): until then the replica serves what needs no database and is not ready.
    database_checked: bool = True

    def admitted(self, record: CallRecord) -> None:
        self.open_calls[id(record)] = record

    def is_open(self, record: CallRecord) -> bool:
        return id(record) in self.open_calls

    def claim(self, record: CallRecord) -> bool:
        """True the first time a call's settlement is claimed, False after: a call is settled exactly once."""
        if record.settled:
            return False
        record.settled = True
        self.open_calls.pop(id(record), None)
        if self._all_settled is not None and not self.open_calls:
            self._all_settled.set()
        return True

    async def shielded(self, work: Awaitable[None]) -> None:
        """`work` runs to its end even when the caller is cancelled; `aclose` waits for it."""
        task = asyncio.ensure_future(work)
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)
        await asyncio.shield(task)

    async def settle(self, record: CallRecord, tokens: int, sinks: Sequence[Sink]) -> None:
        """Release the call's reservation against what it used (`tokens` upstream, `record.cost_nano`), then
        hand the record to `sinks` (the ledger among them) - once per call, even if the caller is cancelled."""
        if not self.claim(record):
            return
        ticket = record.ticket
        if ticket is None:  # nothing to release: no round trip, no task
            record.latency_s = time.perf_counter() - record.started_perf
            for sink in sinks:
                sink(record)
            return

        async def release_then_record() -> None:
            try:
                await self.limiter.settle(ticket, tokens=tokens, cost_nano=record.cost_nano)
            except Exception:  # the budget store failed (database away): the ledger row is still written
                log.exception("settling the reservation of %s failed", record.request_id)
            # After the round trip: the caller waits for it too, so latency and overhead include it.
            record.latency_s = time.perf_counter() - record.started_perf
            for sink in sinks:
                sink(record)

        await self.shielded(release_then_record())

    async def settle_failed(self, record: CallRecord, error: GatewayError) -> None:
        """An admitted call that got no answer: nothing spent, its reservation released, one ledger row.

        Only the ledger hears of it here; the error response's refusal hooks (metrics, access log, tracing)
        run in the app, as for every error, so nothing counts it twice.
        """
        if not self.is_open(record):  # not admitted, or settled already
            return
        record.outcome, record.status_code, record.error = "error", error.status, error.message
        await self.settle(record, 0, [self.ledger.sink])

    async def _settle_open_calls(self) -> None:
        self._all_settled = asyncio.Event()
        if self.open_calls:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_settled.wait(), _UNWIND_S)
        if self.open_calls:
            log.error("settling %d call(s) the server stopped without settling them", len(self.open_calls))
        stopped = GatewayError("the gateway stopped before the call was settled", status=503)
        for record in list(self.open_calls.values()):
            await self.settle_failed(record, stopped)
        if self.settling:
            await asyncio.wait(self.settling, timeout=self.settings.drain_timeout_s)

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
        if not self.database_checked:
            return "the database was unreachable at startup and is not checked yet"
        if self.redis is not None:
            try:
                await self.redis.ping()
            except Exception as exc:
                return f"redis unreachable ({exc.__class__.__name__})"
        return None

    async def aclose(self) -> None:
        await self._settle_open_calls()
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


async def _postgres_reachable(url: str) -> bool:
    """Whether PostgreSQL answers; raises SchemaBehind when it does with the wrong schema (a deploy error)."""
    try:
        await migrate.require_current(url)
    except Exception as exc:
        if not database_unreachable(exc):
            raise
        return False
    return True


async def _check_database_when_back(accounting: Accounting, budget: PostgresBudget | None) -> None:
    """PostgreSQL was away at startup: once it answers, do what startup skipped (the schema check, the budget
    counters' reset, the spill files' replay), then let the replica report ready."""
    url, wait_s = accounting.settings.database_url, _RECHECK_FIRST_S
    while True:
        await asyncio.sleep(wait_s)
        wait_s = min(wait_s * 2, _RECHECK_MAX_S)
        try:
            if not await _postgres_reachable(url):
                continue
            if budget is not None:
                await budget.start()
            replayed = await accounting.ledger.replay()
        except migrate.SchemaBehind as behind:
            log.error("%s", behind)  # stays not ready: serving against the wrong schema would corrupt it
            continue
        except Exception as exc:
            log.warning("the database is back but not usable yet (%s); trying again", exc.__class__.__name__)
            continue
        accounting.database_checked = True
        log.warning("the database is back: schema checked, %d spilled ledger rows replayed", replayed)
        return


async def open_accounting(settings: Settings) -> Accounting:
    url = settings.database_url
    reachable = True
    if is_sqlite(url):
        before, after = await migrate.upgrade(url)
        if before != after:
            log.warning("database %s migrated from %s to %s", sqlite_path(url), before or "empty", after)
    elif not (reachable := await _postgres_reachable(url)):
        # Start anyway: the master key and cached answers are served, the ledger spills, virtual keys get
        # 503s, /readyz says not ready; it all recovers when PostgreSQL is back, without a restart.
        log.warning("the database %s is unreachable at startup; starting without it", redact_url(url))
    engine = open_engine(url)
    policy = settings.accounting
    redis: Redis | None = None
    try:
        if settings.redis_url:
            redis = redis_client(settings.redis_url)
            try:
                await redis.ping()
            except Exception as exc:
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
            fsync_s=policy.ledger_fsync_s,
        )
        if reachable:
            await ledger.replay()
        limiter: Limiter
        budget: PostgresBudget | None = None
        if redis is not None:

            async def seed(scope: str, since_s: int) -> int:
                return await ledger_spend(engine, scope, since_s)

            from tiergate.gateway.accounting.limits_redis import RedisLimiter

            limiter = RedisLimiter(
                redis,
                settings.redis_prefix,
                seed,
                reservation_ttl_s=policy.reservation_ttl_s,
                reservation_lease_s=policy.reservation_lease_s,
            )
        elif is_sqlite(url):
            limiter = LocalLimiter(SqliteBudget(sqlite_path(url)))
        else:
            budget = PostgresBudget(engine)
            if reachable:
                await budget.start()
            limiter = LocalLimiter(budget)
    except BaseException:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()
        raise
    keys = KeyCache(
        engine, refresh_s=policy.key_refresh_s, max_age_s=policy.key_cache_ttl_s, cache=settings.cache
    )
    accounting = Accounting(settings, engine, keys, ledger, limiter, redis, database_checked=reachable)
    if not reachable:
        accounting.tasks.append(asyncio.ensure_future(_check_database_when_back(accounting, budget)))
    accounting.ledger_task = asyncio.ensure_future(ledger.run())
    accounting.tasks.append(asyncio.ensure_future(keys.run()))
    accounting.tasks.append(asyncio.ensure_future(ledger.replay_periodically()))
    accounting.tasks.append(asyncio.ensure_future(ledger.sync_periodically()))
    if redis is not None:
        accounting.tasks.append(asyncio.ensure_future(accounting._listen()))
    return accounting
