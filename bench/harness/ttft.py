"""Time to first token: from sending a streamed chat completion to the first SSE `data:` byte of its body.

wrk only sees whole responses, so this small aiohttp client measures the first event, through the target
and straight at the upstream, interleaved so that drift in the machine's load hits both alike, and reports
the medians and their difference.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class TTFT:
    concurrency: int
    requests: int
    direct_ms: float  # median straight at the upstream
    target_ms: float  # median through the process under test
    errors: int

    @property
    def added_ms(self) -> float:
        return self.target_ms - self.direct_ms


async def _first_event(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]
) -> float:
    began = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {(await response.read())[:200]!r}")
        seen = b""
        while b"data:" not in seen:
            chunk = await response.content.readany()
            if not chunk:
                raise RuntimeError("the stream ended before its first event")
            seen = seen[-4:] + chunk
        elapsed = time.perf_counter() - began
        await response.read()  # finish the stream so the connection is reused
    return elapsed


async def _measure(
    direct: tuple[str, Mapping[str, str]],
    target: tuple[str, Mapping[str, str]],
    body: bytes,
    requests: int,
    concurrency: int,
) -> TTFT:
    times: dict[str, list[float]] = {"direct": [], "target": []}
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(share: int) -> None:
            nonlocal errors
            for _ in range(share):
                for name, (url, headers) in (("direct", direct), ("target", target)):
                    try:
                        times[name].append(await _first_event(session, url, body, headers))
                    except (aiohttp.ClientError, RuntimeError, TimeoutError):
                        errors += 1

        # Warm the connections (and the target's first-request paths) before timing.
        await asyncio.gather(*(worker(1) for _ in range(concurrency)))
        times = {"direct": [], "target": []}
        errors = 0
        share = max(1, requests // concurrency)
        await asyncio.gather(*(worker(share) for _ in range(concurrency)))
    if not times["direct"] or not times["target"]:
        raise RuntimeError(f"no TTFT measured ({errors} errors)")
    return TTFT(
        concurrency=concurrency,
        requests=len(times["target"]),
        direct_ms=statistics.median(times["direct"]) * 1000,
        target_ms=statistics.median(times["target"]) * 1000,
        errors=errors,
    )


def measure_ttft(
    *,
    direct_url: str,
    target_url: str,
    target_headers: Mapping[str, str],
    body: bytes,
    requests: int,
    concurrency: int,
) -> TTFT:
    """Median time to first event with `concurrency` clients, each alternating direct and target requests."""
    json_headers = {"content-type": "application/json"}
    return asyncio.run(
        _measure(
            (direct_url, json_headers),
            (target_url, {**json_headers, **target_headers}),
            body,
            requests,
            concurrency,
        )
    )
