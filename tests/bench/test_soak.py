from __future__ import annotations

import asyncio
import shutil

import pytest

from bench.soak import soak

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="needs nginx (apt-get install -y nginx)"
)


def test_the_soak_fills_the_cache_samples_rss_and_reports_growth_after_the_fill() -> None:
    result = asyncio.run(soak(requests=400, sample_every=100, max_bytes=32 * 1024))
    assert result["requests"] == 400 and result["errors"] == 0
    assert [s["requests"] for s in result["samples"]] == [100, 200, 300, 400]
    # 32 KiB holds a few dozen answers: the cache fills within the run and then evicts.
    assert result["requests_at_fill"] is not None and result["evictions"] > 0
    assert 0 < result["cache_bytes"] <= result["max_bytes"] == 32 * 1024
    assert all(s["rss_bytes"] > 0 for s in result["samples"])
    assert result["rss_end_bytes"] == result["samples"][-1]["rss_bytes"]
    assert isinstance(result["growth_after_fill_pct"], float)
    assert result["max_growth_after_fill_pct"] >= result["growth_after_fill_pct"]
    # Each sample shows how much work waits in the background queues, so a backlog is not read as a leak.
    depths = [s["queue_depths"] for s in result["samples"]]
    assert all({"ledger", "traces", "cache_writes"} <= set(d) for d in depths)
    assert result["max_queue_depths"] == {name: max(d[name] for d in depths) for name in depths[-1]}
