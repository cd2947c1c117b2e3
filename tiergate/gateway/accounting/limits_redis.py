"""Limits and budgets shared by replicas through Redis: one Lua script per admission, one per settlement.

Keys (all under `redis_prefix`):
    rl:<scope>:rpm|tpm          hash second -> count: the sliding window of policies/ratelimit.py
    b:<scope>:<period start>    hash spent, reserved (nano-USD) of one budget period
    bz:<scope>:<period start>   sorted set reservation id -> expiry (ms): reservations of crashed replicas expire
    ba:<scope>:<period start>   hash reservation id -> amount
A budget counter that Redis does not hold (first use in a period, or Redis lost its data) is rebuilt from
the ledger before the request is admitted, so losing Redis never means an unlimited key.

A reservation is a lease: it expires `reservation_lease_s` after it was made or last renewed, and the replica
holding it renews every reservation it holds every third of that (one pipelined round trip, off the request
path). So the reservations of a replica that died are released within a lease (30 s by default), while a
long request on a live replica keeps its own - up to `reservation_ttl_s`, after which a reservation whose
settlement never came is no longer renewed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tiergate.gateway.accounting.keys import Limits
from tiergate.gateway.accounting.limits import (
    BudgetCheck,
    SeedSpend,
    Ticket,
    budget_checks,
    budget_refusal,
    counted_cost,
    may_top_up,
    new_ticket,
    rate_checks,
    rate_refusal,
    refuse_unreservable,
)
from tiergate.gateway.errors import ServiceUnavailable
from tiergate.policies.ratelimit import BUCKET_S, WINDOW_S, bucket_of

log = logging.getLogger("tiergate.limits")

# Amounts of money reach HINCRBY as the decimal strings they came as: Redis formats a Lua number above 1e17
# in exponent notation, which HINCRBY refuses, and a double is no longer exact above 2**53.
_NEGATED = """
local function negated(amount)
  if amount == '0' then return amount end
  if string.sub(amount, 1, 1) == '-' then return string.sub(amount, 2) end
  return '-' .. amount
end
"""

# Mirrors policies/ratelimit.check, and budget_sql's rule (spent + reserved + amount <= limit); every check
# passes before anything is counted.
ADMIT = (
    _NEGATED
    + """
local now_ms = tonumber(ARGV[1])
local now_bucket = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local n_rate = tonumber(ARGV[4])
local a = 5
local costs = {}
for i = 1, n_rate do
  local cost, limit = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  costs[i] = cost
  local flat = redis.call('HGETALL', KEYS[i])
  local used, live, values = 0, {}, {}
  for j = 1, #flat, 2 do
    local b, v = tonumber(flat[j]), tonumber(flat[j + 1])
    if b > now_bucket - window then
      used = used + v
      live[#live + 1] = b
      values[b] = v
    else
      redis.call('HDEL', KEYS[i], flat[j])
    end
  end
  if used + cost > limit then
    if cost > limit then return {0, i, window * 1000} end
    table.sort(live)
    local excess, freed = used + cost - limit, 0
    for _, b in ipairs(live) do
      freed = freed + values[b]
      if freed >= excess then return {0, i, (b + window) * 1000 - now_ms} end
    end
    return {0, i, window * 1000}
  end
end
local res_id, amount_arg, res_expiry, n_budget = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
local amount = tonumber(amount_arg)
a = a + 4
for j = 1, n_budget do
  local k = n_rate + (j - 1) * 3
  local counter, zset, amounts = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  if redis.call('EXISTS', counter) == 0 then return {3, j} end
  local expired = redis.call('ZRANGEBYSCORE', zset, '-inf', now_ms)
  for _, id in ipairs(expired) do
    redis.call('HINCRBY', counter, 'reserved', negated(redis.call('HGET', amounts, id) or '0'))
    redis.call('HDEL', amounts, id)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', zset, '-inf', now_ms) end
  local spent = tonumber(redis.call('HGET', counter, 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', counter, 'reserved') or '0')
  if spent + reserved + amount > tonumber(ARGV[a + (j - 1) * 2]) then return {2, j} end
end
for i = 1, n_rate do
  redis.call('HINCRBY', KEYS[i], ARGV[2], costs[i])
  redis.call('PEXPIRE', KEYS[i], (window + 1) * 1000)
end
for j = 1, n_budget do
  local k = n_rate + (j - 1) * 3
  redis.call('HINCRBY', KEYS[k + 1], 'reserved', amount_arg)
  redis.call('HINCRBY', KEYS[k + 3], res_id, amount_arg)
  redis.call('ZADD', KEYS[k + 2], res_expiry, res_id)
  local expire_at = tonumber(ARGV[a + (j - 1) * 2 + 1])
  if expire_at > 0 then
    for x = 1, 3 do redis.call('EXPIREAT', KEYS[k + x], expire_at) end
  end
end
return {1}
"""
)

SETTLE = (
    _NEGATED
    + """
local n_tpm, bucket, delta = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local res_id, cost, n_budget, first = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7] == '1'
if not first and n_budget > 0 and redis.call('HEXISTS', KEYS[n_tpm + 3], res_id) == 0 then
  return 0
end
if delta ~= 0 then
  for i = 1, n_tpm do
    if redis.call('HEXISTS', KEYS[i], bucket) == 1 then redis.call('HINCRBY', KEYS[i], bucket, delta) end
  end
end
for j = 1, n_budget do
  local k = n_tpm + (j - 1) * 3
  local held = redis.call('HGET', KEYS[k + 3], res_id)
  if held then
    redis.call('HINCRBY', KEYS[k + 1], 'reserved', negated(held))
    redis.call('HDEL', KEYS[k + 3], res_id)
    redis.call('ZREM', KEYS[k + 2], res_id)
  end
  redis.call('HINCRBY', KEYS[k + 1], 'spent', cost)
end
return 1
"""
)

SEED = """
redis.call('HSETNX', KEYS[1], 'spent', ARGV[1])
redis.call('HSETNX', KEYS[1], 'reserved', 0)
if tonumber(ARGV[2]) > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return 1
"""

# Counters outlive their period by a day, so a request admitted just before midnight settles on its row.
_PERIOD_GRACE_S = 86_400
_SETTLE_RETRY_MAX_S = 2.0  # while Redis is away, a settlement is retried at least this often


@dataclass(slots=True)
class _Held:
    """A reservation this replica holds: the sorted sets whose expiry it renews, and when it was made."""

    zsets: list[str]
    since_s: float


class RedisLimiter:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        seed: SeedSpend,
        *,
        reservation_ttl_s: float,
        reservation_lease_s: float = 30.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._seed = seed
        self._ttl_ms = int(reservation_ttl_s * 1000)
        self._lease_ms = int(min(reservation_lease_s, reservation_ttl_s) * 1000)
        self._held: dict[str, _Held] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._admit = redis.register_script(ADMIT)
        self._settle = redis.register_script(SETTLE)
        self._seed_script = redis.register_script(SEED)
        self._retries: set[asyncio.Task[None]] = set()

    def _budget_keys(self, b: BudgetCheck) -> list[str]:
        tail = f"{b.scope}:{b.period_start}"
        return [f"{self._prefix}b:{tail}", f"{self._prefix}bz:{tail}", f"{self._prefix}ba:{tail}"]

    async def _run(self, keys: list[str], args: list[Any], budgets: tuple[BudgetCheck, ...]) -> list[int]:
        """ADMIT, rebuilding missing budget counters from the ledger first."""
        for _ in range(3):
            try:
                result = [int(x) for x in await self._admit(keys=keys, args=args)]
            except RedisError as exc:
                raise ServiceUnavailable(
                    f"the rate-limit store is unreachable ({exc.__class__.__name__}); try again shortly",
                    code="limits_unavailable",
                ) from None
            if result[0] != 3:
                return result
            b = budgets[result[1] - 1]
            spent = await self._seed(b.scope, b.period_start)
            expire_at = b.period_end + _PERIOD_GRACE_S if b.period_end is not None else 0
            await self._seed_script(keys=[self._budget_keys(b)[0]], args=[spent, expire_at])
        raise ServiceUnavailable(
            "budget counters could not be rebuilt; try again shortly", code="limits_unavailable"
        )

    def _budget_args(self, ticket: Ticket, amount_nano: int, now_s: float) -> list[Any]:
        args: list[Any] = [
            ticket.reservation_id,
            amount_nano,
            int(now_s * 1000) + self._lease_ms,
            len(ticket.budgets),
        ]
        for b in ticket.budgets:
            args += [b.limit_nano, b.period_end + _PERIOD_GRACE_S if b.period_end is not None else 0]
        return args

    async def admit(self, limits: Limits, *, now_s: float, tokens: int, reserve_nano: int) -> Ticket:
        checks = rate_checks(limits, tokens)
        budgets = budget_checks(limits, now_s)
        refuse_unreservable(budgets, reserve_nano, now_s)
        ticket = new_ticket(limits, now_s, tokens, reserve_nano, budgets)
        if not checks and not budgets:  # nothing to count: no round trip, and no dependency on Redis
            return ticket
        keys = [f"{self._prefix}rl:{c.scope}:{c.unit}" for c in checks]
        args: list[Any] = [int(now_s * 1000), bucket_of(now_s), WINDOW_S // BUCKET_S, len(checks)]
        for c in checks:
            args += [c.cost, c.limit]
        for b in budgets:
            keys += self._budget_keys(b)
        result = await self._run(
            keys, [*args, *self._budget_args(ticket, reserve_nano, now_s)], ticket.budgets
        )
        if result[0] == 0:
            raise rate_refusal(checks[result[1] - 1], result[2] / 1000)
        if result[0] == 2:
            raise budget_refusal(budgets[result[1] - 1], now_s, reserve_nano)
        if budgets:
            self._hold(ticket, now_s)
        return ticket

    def _hold(self, ticket: Ticket, now_s: float) -> None:
        self._held[ticket.reservation_id] = _Held([self._budget_keys(b)[1] for b in ticket.budgets], now_s)
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew_periodically())

    async def _renew_periodically(self) -> None:
        while self._held:
            await asyncio.sleep(self._lease_ms / 3000)
            await self.renew(time.time())

    async def renew(self, now_s: float) -> None:
        """Extend the lease of every reservation this replica holds to `now_s` + the lease.

        Only reservations still in Redis are renewed (ZADD XX): one another replica already expired, or a
        settlement removed, is not brought back. A reservation held past `reservation_ttl_s` is let go."""
        expiry = int(now_s * 1000) + self._lease_ms
        pipe = self._redis.pipeline(transaction=False)
        for reservation_id, held in list(self._held.items()):
            if (now_s - held.since_s) * 1000 > self._ttl_ms:
                del self._held[reservation_id]
                log.error(
                    "reservation %s was never settled within accounting.reservation_ttl_s; it is no "
                    "longer renewed and expires",
                    reservation_id,
                )
                continue
            for zset in held.zsets:
                pipe.zadd(zset, {reservation_id: expiry}, xx=True)
        if not len(pipe):
            return
        try:
            await pipe.execute()
        except RedisError as exc:  # Redis away: the next beat tries again, within the lease
            log.warning("renewing %d reservation(s) failed: %s", len(self._held), exc.__class__.__name__)

    async def top_up(self, ticket: Ticket, amount_nano: int, now_s: float) -> bool:
        if not ticket.budgets or amount_nano <= 0:
            return True
        if not may_top_up(ticket, amount_nano):
            return False
        keys = [k for b in ticket.budgets for k in self._budget_keys(b)]
        args = [
            int(now_s * 1000),
            bucket_of(now_s),
            WINDOW_S // BUCKET_S,
            0,
            *self._budget_args(ticket, amount_nano, now_s),
        ]
        if (await self._run(keys, args, ticket.budgets))[0] != 1:
            return False
        ticket.reserved_nano += amount_nano
        return True

    async def settle(self, ticket: Ticket, *, tokens: int, cost_nano: int) -> None:
        if ticket.settled:
            return
        ticket.settled = True
        keys = [f"{self._prefix}rl:{scope}:tpm" for scope in ticket.tpm_scopes]
        keys += [k for b in ticket.budgets for k in self._budget_keys(b)]
        args: list[int | str] = [
            len(ticket.tpm_scopes),
            ticket.bucket,
            tokens - ticket.tokens_estimate,
            ticket.reservation_id,
            counted_cost(cost_nano),
            len(ticket.budgets),
            1,
        ]
        if not keys:
            return
        try:
            await self._settle(keys=keys, args=args)
            self._held.pop(ticket.reservation_id, None)
        except RedisError as exc:
            log.warning(
                "settling %s failed (%s); retrying in the background",
                ticket.reservation_id,
                exc.__class__.__name__,
            )
            # The reservation stays held (renewed) until the retry lands, so it does not expire meanwhile.
            task = asyncio.get_running_loop().create_task(self._retry(keys, args))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _retry(self, keys: list[str], args: list[int | str]) -> None:
        # A retry applies only while its reservation is still held: the first attempt may have run with its
        # reply lost, and applying it twice would count the cost twice. Past the reservation's TTL it would
        # be a no-op, so retrying stops there.
        reservation_id = str(args[3])
        args = [*args[:-1], 0]
        deadline = time.monotonic() + self._ttl_ms / 1000
        attempt = 0
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(min(_SETTLE_RETRY_MAX_S, 0.2 * 2**attempt))
                attempt += 1
                try:
                    applied = await self._settle(keys=keys, args=args)
                except RedisError:
                    continue
                if not int(applied):
                    # Redis was away from this replica longer than a lease, and another replica expired it.
                    log.error(
                        "settlement %s reached Redis after its reservation had expired; its cost is missing "
                        "from Redis's budget counters (the ledger has it)",
                        reservation_id,
                    )
                return
            log.error("settlement %s could not be written to Redis; the ledger still has it", reservation_id)
        finally:
            self._held.pop(reservation_id, None)

    async def aclose(self) -> None:
        if self._retries:
            log.error(
                "%d settlement(s) not yet written to Redis at shutdown: their reservations expire after the "
                "reservation TTL and their cost is missing from Redis's budget counters (the ledger has it)",
                len(self._retries),
            )
        tasks = [*self._retries, *([self._heartbeat] if self._heartbeat is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
