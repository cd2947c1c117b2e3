"""Shared by the accounting tests: a Redis client on the test's own key prefix, and a ledger call record."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord


@pytest.fixture
async def redis(redis_server_url: str, redis_prefix: str) -> AsyncIterator[Redis]:
    """A client of the machine's Redis; everything under the test's prefix is deleted afterwards."""
    client = Redis.from_url(redis_server_url)
    yield client
    keys = [k async for k in client.scan_iter(match=redis_prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def call_record(i: int) -> CallRecord:
    """Request `r<i>` of tenant t1's key k1, costing 1,000 + i nano-USD for 10 prompt tokens."""
    record = CallRecord(
        request_id=f"r{i}",
        endpoint="chat",
        principal=Principal("key", "t1", "k1"),
        requested_model="student",
        started_at=0,
    )
    record.cost_nano, record.prompt_tokens = 1000 + i, 10
    return record
