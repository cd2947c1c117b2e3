"""The Redis Lua scripts hold to the same arithmetic as the in-process policies, and on a real server."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from tests.policies.test_ratelimit import CASES
from tests.tcp_proxy import TcpProxy
from tiergate.gateway.accounting.books import redis_client
from tiergate.gateway.accounting.keys import Limits
from tiergate.gateway.accounting.limits_redis import ADMIT, RedisLimiter
from tiergate.gateway.errors import InsufficientQuota, RateLimited, ServiceUnavailable
from tiergate.policies.budget import MAX_BUDGET_NANO, Budget
from tiergate.policies.ratelimit import WindowVerdict, bucket_of

pytestmark = [pytest.mark.asyncio, pytest.mark.services]


@pytest.mark.parametrize(("buckets", "now", "cost", "limit", "expected"), CASES)
async def test_lua_window_matches_the_policy(
    redis: Redis,
    redis_prefix: str,
    buckets: dict[int, int],
    now: float,
    cost: int,
    limit: int,
    expected: WindowVerdict,
) -> None:
    key = redis_prefix + "rl:k:x:rpm"
    if buckets:
        await redis.hset(key, mapping={str(b): v for b, v in buckets.items()})
    script = redis.register_script(ADMIT)
    result = [
        int(x)
        for x in await script(
            keys=[key], args=[int(now * 1000), bucket_of(now), 60, 1, cost, limit, "r", 0, 0, 0]
        )
    ]
    assert (result[0] == 1) is expected.admitted
    if not expected.admitted:
        assert result[2] / 1000 == pytest.approx(expected.retry_after_s, abs=0.001)


async def test_budget_reserve_settle_and_expired_reservations(redis: Redis, redis_prefix: str) -> None:
    spent_in_ledger = {"k:a": 400}

    async def seed(scope: str, since: int) -> int:
        return spent_in_ledger.get(scope, 0)

    limiter = RedisLimiter(redis, redis_prefix, seed, reservation_ttl_s=10)
    limits = Limits("k:a", "t:a", key_budget=Budget(1000, "daily"))
    now = float(
        int(time.time() // 86400 * 86400 + 3600)
    )  # an hour into today: counters expire by Redis's clock
    first = await limiter.admit(limits, now_s=now, tokens=0, reserve_nano=500)  # 400 (seeded) + 500 fits 1000
    with pytest.raises(InsufficientQuota) as refused:
        await limiter.admit(limits, now_s=now, tokens=0, reserve_nano=200)
    assert refused.value.headers["retry-after"] == str(23 * 3600)  # the budget renews at midnight
    await limiter.settle(first, tokens=0, cost_nano=100)
    await limiter.settle(first, tokens=0, cost_nano=100)  # settling twice changes nothing
    second = await limiter.admit(limits, now_s=now, tokens=0, reserve_nano=500)  # 500 spent + 500 fits
    assert not await limiter.top_up(second, 1, now)
    # A replica that died holding `second`: its reservation expires after the TTL and frees the budget.
    third = await limiter.admit(limits, now_s=now + 11, tokens=0, reserve_nano=500)
    assert third.reserved_nano == 500
    counter = await redis.hgetall(f"{redis_prefix}b:k:a:{int(now // 86400 * 86400)}")
    assert {k.decode(): int(v) for k, v in counter.items()} == {"spent": 500, "reserved": 500}


async def test_rate_refusal_counts_nothing(redis: Redis, redis_prefix: str) -> None:
    async def seed(scope: str, since: int) -> int:
        return 0

    limiter = RedisLimiter(redis, redis_prefix, seed, reservation_ttl_s=10)
    limits = Limits("k:b", "t:b", key_rpm=1, tenant_budget=Budget(10**9, "total"))
    await limiter.admit(limits, now_s=1000.0, tokens=0, reserve_nano=5)
    with pytest.raises(RateLimited):
        await limiter.admit(limits, now_s=1000.5, tokens=0, reserve_nano=5)
    counter = await redis.hgetall(f"{redis_prefix}b:t:b:0")
    assert int(counter[b"reserved"]) == 5  # the refused request reserved nothing


async def test_a_settlement_made_while_redis_is_away_lands_once_it_is_back(
    redis: Redis, redis_server_url: str, redis_prefix: str
) -> None:
    async def seed(scope: str, since: int) -> int:
        return 0

    host, port = redis_server_url.split("://")[1].split("/")[0].split(":")
    limits = Limits("k:c", "t:c", key_budget=Budget(10_000, "total"))
    with TcpProxy(host, int(port)) as proxy:
        client = redis_client(f"redis://127.0.0.1:{proxy.port}/0")
        limiter = RedisLimiter(client, redis_prefix, seed, reservation_ttl_s=60)
        ticket = await limiter.admit(limits, now_s=time.time(), tokens=0, reserve_nano=500)
        proxy.cut()
        with pytest.raises(ServiceUnavailable):
            await limiter.admit(limits, now_s=time.time(), tokens=0, reserve_nano=500)
        await limiter.settle(ticket, tokens=0, cost_nano=100)  # returns at once; retried in the background
        await asyncio.sleep(8)  # the outage: longer than a handful of quick retries would cover
        proxy.restore()
        counter = f"{redis_prefix}b:k:c:0"
        deadline = time.monotonic() + 10
        while await redis.hget(counter, "reserved") != b"0":
            assert time.monotonic() < deadline, "the settlement never reached Redis"
            await asyncio.sleep(0.05)
        assert await redis.hget(counter, "spent") == b"100"
        await limiter.aclose()
        await client.aclose()


async def test_amounts_near_and_beyond_the_largest_budget_never_break_the_scripts(
    redis: Redis, redis_prefix: str
) -> None:
    async def seed(scope: str, since: int) -> int:
        return 0

    limiter = RedisLimiter(redis, redis_prefix, seed, reservation_ttl_s=60)
    limits = Limits("k:d", "t:d", key_budget=Budget(MAX_BUDGET_NANO, "total"))
    with pytest.raises(InsufficientQuota):  # a reservation beyond every budget: refused, not an error
        await limiter.admit(limits, now_s=1000.0, tokens=0, reserve_nano=2**70)
    # Above 1e17 a Lua number reaches HINCRBY in exponent notation: counted exactly, to the nano-dollar.
    big = 3 * 10**17 + 1
    ticket = await limiter.admit(limits, now_s=1000.0, tokens=0, reserve_nano=big)
    assert not await limiter.top_up(ticket, MAX_BUDGET_NANO, 1000.0)
    counter = f"{redis_prefix}b:k:d:0"
    assert int(await redis.hget(counter, "reserved")) == big
    await limiter.settle(ticket, tokens=0, cost_nano=2**70)  # an upstream's absurd usage
    state = {k.decode(): int(v) for k, v in (await redis.hgetall(counter)).items()}
    assert state == {"spent": MAX_BUDGET_NANO, "reserved": 0}
