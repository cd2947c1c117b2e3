"""The exact cache's `max_bytes` bounds the memory its entries hold, as tracemalloc measures it (issue 13)."""

from __future__ import annotations

import gc
import hashlib
import tracemalloc

import pytest

from tiergate.gateway.cache.exact import MemoryBackend

BOUND = 1024 * 1024
# What tracemalloc sees besides the cache between the two readings (the interpreter's own small allocations).
SLACK = 16 * 1024


async def held_by_a_full_cache(value_bytes: int) -> tuple[MemoryBackend, int]:
    """A cache filled far past its bound with keys shaped as the gateway's; the bytes it holds, traced."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        backend = MemoryBackend(BOUND)
        for i in range(2 * BOUND // value_bytes + 2_000):
            key = f"t:tenant-{i % 7}:{hashlib.sha256(str(i).encode()).hexdigest()}"
            await backend.set(key, i.to_bytes(8, "big") * (value_bytes // 8), 3600)
        del key
        gc.collect()
        return backend, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


# 100: a short answer, where counting only `len(value)` held 4.5x the bound; 500: a typical answer (1.7x).
@pytest.mark.parametrize("value_bytes", [100, 500, 4000])
async def test_a_full_cache_holds_no_more_memory_than_max_bytes(value_bytes: int) -> None:
    backend, held = await held_by_a_full_cache(value_bytes)
    assert held <= BOUND + SLACK
    assert backend.evictions > 0 and backend.size <= BOUND
    assert held > 0.8 * BOUND  # full: the bound is not met by holding little


async def test_the_count_is_close_to_what_is_held() -> None:
    backend, held = await held_by_a_full_cache(500)
    assert held <= backend.size <= 1.1 * held  # an upper bound, and a tight one: the cache uses its room
