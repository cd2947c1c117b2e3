"""The exact cache on the real Redis: replicas share entries, and entries expire with their TTL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import respx
from httpx import Response

from tests.gateway.conftest import AUTH, chat, completion, gateway, settings
from tests.support import gateway_of

pytestmark = pytest.mark.services


@pytest.fixture
async def redis_keys(redis_server_url: str, redis_prefix: str) -> AsyncIterator[str]:
    """The prefix of this test's keys; whatever was written under it is deleted afterwards."""
    import redis.asyncio as redis

    yield redis_prefix
    client = redis.Redis.from_url(redis_server_url)
    try:
        keys = [k async for k in client.scan_iter(match=redis_prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_two_replicas_share_the_redis_cache(redis_server_url: str, redis_keys: str) -> None:
    import redis.asyncio as redis

    router = respx.Router()
    route = router.post("http://up-a/v1/chat/completions").mock(
        side_effect=lambda _: Response(200, json=completion("small-a", "Paris."))
    )
    config = settings(redis_url=redis_server_url, redis_prefix=redis_keys, cache={"exact": {"ttl_s": 30}})
    async with gateway(router, config) as (first, _):
        miss = await first.post("/v1/chat/completions", json=chat(temperature=0), headers=AUTH)
        await gateway_of(first).caches.exact.flush()
    async with gateway(router, config) as (second, records):
        hit = await second.post("/v1/chat/completions", json=chat(temperature=0), headers=AUTH)
    assert miss.headers["x-tiergate-cache"] == "miss" and hit.headers["x-tiergate-cache"] == "exact"
    assert hit.json() == miss.json() and route.call_count == 1 and records[0].cost_nano == 0
    client = redis.Redis.from_url(redis_server_url)
    try:
        (key,) = [k async for k in client.scan_iter(match=redis_keys + "*")]
        assert key.decode().startswith(redis_keys + "cache:exact:master:")  # the partition is visible
        assert 0 < await client.ttl(key) <= 30
    finally:
        await client.aclose()


async def test_an_unreachable_redis_means_misses_not_errors(redis_keys: str) -> None:
    router = respx.Router()
    route = router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    config = settings(redis_url="redis://127.0.0.1:1/0", redis_prefix=redis_keys)
    async with gateway(router, config) as (client, _):
        r = await client.post("/v1/chat/completions", json=chat(temperature=0), headers=AUTH)
        cache = gateway_of(client).caches.exact
        await cache.flush()
    assert r.status_code == 200 and r.headers["x-tiergate-cache"] == "miss" and route.call_count == 1
    assert cache.errors == 2  # the lookup and the write
