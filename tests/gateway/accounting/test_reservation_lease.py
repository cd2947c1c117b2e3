"""Budget reservations in Redis are leases: a live replica renews its own, a dead replica's are released soon."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from tiergate.gateway.accounting.keys import Limits
from tiergate.gateway.accounting.limits_redis import RedisLimiter
from tiergate.gateway.errors import InsufficientQuota
from tiergate.policies.budget import Budget

pytestmark = [pytest.mark.asyncio, pytest.mark.services]

LIMITS = Limits("k:lease", "t:lease", key_budget=Budget(1000, "total"), tenant_budget=Budget(5000, "total"))


async def _no_spend(scope: str, since: int) -> int:
    return 0


def _replica(redis: Redis, prefix: str, *, lease_s: float = 10.0, ttl_s: float = 900.0) -> RedisLimiter:
    return RedisLimiter(redis, prefix, _no_spend, reservation_ttl_s=ttl_s, reservation_lease_s=lease_s)


async def test_a_dead_replicas_reservation_is_released_after_one_lease(
    redis: Redis, redis_prefix: str
) -> None:
    dead, live = _replica(redis, redis_prefix), _replica(redis, redis_prefix)
    now = 1_000_000.0
    await dead.admit(LIMITS, now_s=now, tokens=0, reserve_nano=700)
    await dead.aclose()  # died: nothing renews its reservation any more
    with pytest.raises(InsufficientQuota):  # within the lease the budget is still held
        await live.admit(LIMITS, now_s=now + 9, tokens=0, reserve_nano=700)
    ticket = await live.admit(LIMITS, now_s=now + 11, tokens=0, reserve_nano=700)  # not 15 minutes later
    await live.settle(ticket, tokens=0, cost_nano=0)
    await live.aclose()


async def test_a_live_replica_keeps_its_reservation_past_the_lease_on_every_budget(
    redis: Redis, redis_prefix: str
) -> None:
    holder, other = _replica(redis, redis_prefix), _replica(redis, redis_prefix)
    now = 1_000_000.0
    ticket = await holder.admit(LIMITS, now_s=now, tokens=0, reserve_nano=700)
    await holder.renew(now + 8)
    with pytest.raises(InsufficientQuota):  # renewed at +8: held until +18 on the key's budget
        await other.admit(LIMITS, now_s=now + 15, tokens=0, reserve_nano=700)
    # The tenant's budget (the second sorted set) was renewed too: it still counts the 700.
    tenant_only = Limits("k:other", "t:lease", tenant_budget=Budget(5000, "total"))
    with pytest.raises(InsufficientQuota):
        await other.admit(tenant_only, now_s=now + 15, tokens=0, reserve_nano=4500)
    await holder.settle(ticket, tokens=0, cost_nano=100)
    again = await other.admit(LIMITS, now_s=now + 15, tokens=0, reserve_nano=700)  # settled: 100 + 700 fits
    assert again.reserved_nano == 700
    for limiter in (holder, other):
        await limiter.aclose()


async def test_renewal_never_revives_a_settled_or_expired_reservation(
    redis: Redis, redis_prefix: str
) -> None:
    holder, other = _replica(redis, redis_prefix), _replica(redis, redis_prefix)
    now = 1_000_000.0
    first = await holder.admit(LIMITS, now_s=now, tokens=0, reserve_nano=300)
    await holder.settle(first, tokens=0, cost_nano=300)
    await holder.renew(now + 1)
    second = await holder.admit(LIMITS, now_s=now + 1, tokens=0, reserve_nano=300)
    # `other` expires `second` (its lease ran out: the holder was cut off from Redis), then the holder renews.
    third = await other.admit(LIMITS, now_s=now + 12, tokens=0, reserve_nano=300)
    await holder.renew(now + 13)
    zset = f"{redis_prefix}bz:k:lease:0"
    assert await redis.zscore(zset, second.reservation_id) is None
    assert await redis.zscore(zset, first.reservation_id) is None
    counter = await redis.hgetall(f"{redis_prefix}b:k:lease:0")
    assert {k.decode(): int(v) for k, v in counter.items()} == {"spent": 300, "reserved": 300}
    await other.settle(third, tokens=0, cost_nano=0)
    for limiter in (holder, other):
        await limiter.aclose()


async def test_a_reservation_held_past_the_ttl_is_no_longer_renewed(redis: Redis, redis_prefix: str) -> None:
    holder = _replica(redis, redis_prefix, lease_s=10.0, ttl_s=60.0)
    now = 1_000_000.0
    ticket = await holder.admit(LIMITS, now_s=now, tokens=0, reserve_nano=700)
    zset = f"{redis_prefix}bz:k:lease:0"
    await holder.renew(now + 50)
    assert await redis.zscore(zset, ticket.reservation_id) == (now + 60) * 1000
    await holder.renew(now + 61)  # a settlement that never came: let go, it expires at +60
    assert await redis.zscore(zset, ticket.reservation_id) == (now + 60) * 1000
    await holder.aclose()


async def test_the_heartbeat_renews_held_reservations_on_its_own(redis: Redis, redis_prefix: str) -> None:
    holder = _replica(redis, redis_prefix, lease_s=0.3)
    ticket = await holder.admit(LIMITS, now_s=time.time(), tokens=0, reserve_nano=700)
    zset = f"{redis_prefix}bz:k:lease:0"
    first = await redis.zscore(zset, ticket.reservation_id)
    assert first is not None
    deadline = time.monotonic() + 10
    while (await redis.zscore(zset, ticket.reservation_id) or 0) <= first:
        assert time.monotonic() < deadline, "the heartbeat never renewed the reservation"
        await asyncio.sleep(0.02)
    await holder.settle(ticket, tokens=0, cost_nano=0)
    await holder.aclose()
