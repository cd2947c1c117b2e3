"""Memory soak: does the gateway's resident memory stay flat once the exact cache is full?

    nice -n 19 python bench/soak.py [--requests 200000] [--sample-every 5000] [--max-bytes N]
                                    [--out bench/results/soak.json]

The gateway runs in this process (`create_app` and its lifespan, called over ASGI as uvicorn would call it,
the way `bench/inprocess.py` does) with the exact cache on at its default bound (`cache.exact.max_bytes`,
64 MiB), a SQLite database and the harness's nginx upstream. Eight clients send deterministic chat
completions, nine in ten of them unique (a counter in the question), the tenth repeating a recent one, so
the cache fills, then evicts for the rest of the run. Every `--sample-every` requests the process's RSS is
read from /proc/self/status; the cache is full from the first sample at which it has evicted an entry.

Prints (and writes to `--out`) one JSON object: requests, errors (any status but 200), RSS at the start,
when the cache first filled and at the end, the growth from the fill to the end and to the highest sample
after it, in %, the cache's entries, bytes and evictions, the deepest each background queue (ledger, traces,
cache writes) was at a sample, and every sample. The queues matter: when their database writers fall behind
this driver (SQLite, on a busy machine), the records waiting in them raise the RSS up to their bounds
(`ledger_queue_size` rows, `learning.traces.queue_size` records) without anything leaking.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.harness.upstream import static_upstream
from bench.inprocess import ASGIApp, Message, call, lifespan
from tiergate import load_settings
from tiergate.gateway.app import create_app
from tiergate.gateway.cache.exact import MemoryBackend

CLIENTS = 8
KEY = "sk-soak-master-0123456789"
REPEAT_EVERY = 10  # every tenth request repeats one sent a few requests earlier: a hit
CONFIG = """\
master_key: env:TIERGATE_MASTER_KEY
database_url: sqlite:///{workdir}/soak.db
access_log: false
cache:
  exact: {{enabled: true, ttl_s: 3600{bound}}}
tiers:
  student:
    - model: bench-model
      api_base: {upstream}/v1
      input_cost_per_mtok: 0.15
      output_cost_per_mtok: 0.60
"""
HEADERS = [
    (b"host", b"127.0.0.1"),
    (b"authorization", f"Bearer {KEY}".encode()),
    (b"content-type", b"application/json"),
]


def body(n: int) -> bytes:
    """Request `n`'s body: deterministic (temperature 0, so cacheable), unique unless `n` is a repeat."""
    if n % REPEAT_EVERY == REPEAT_EVERY - 1:
        n -= REPEAT_EVERY // 2
    question = f"Explain in one sentence what a tiered LLM gateway does (request {n})."
    doc = {
        "model": "student",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": question},
        ],
        "temperature": 0,
        "max_tokens": 64,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def growth_pct(start: int, end: int) -> float:
    return round((end - start) / start * 100, 2)


async def send_range(app: ASGIApp, state: Message, numbers: range) -> int:
    """Send requests `numbers` from CLIENTS concurrent clients; returns how many were not a 200."""
    pending = iter(numbers)
    errors = 0

    async def client() -> None:
        nonlocal errors
        for n in pending:
            payload = body(n)
            headers = [*HEADERS, (b"content-length", str(len(payload)).encode())]
            if await call(app, "/v1/chat/completions", headers, payload, state) != 200:
                errors += 1

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return errors


async def soak(requests: int, sample_every: int, max_bytes: int | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, static_upstream(Path(tmp), core=None) as (upstream, _):
        config = Path(tmp) / "config.yaml"
        bound = f", max_bytes: {max_bytes}" if max_bytes else ""  # None: the default bound
        config.write_text(CONFIG.format(workdir=tmp, upstream=upstream, bound=bound))
        env = {**os.environ, "TIERGATE_MASTER_KEY": KEY}
        gateway = create_app(load_settings(config, env=env))
        app: ASGIApp = gateway
        state: Message = {}
        running, stop = await lifespan(app, state)
        exact = gateway.state.gateway.caches.exact
        backend = exact.backend
        if not isinstance(backend, MemoryBackend):
            raise SystemExit("the soak needs the in-process exact cache (no redis_url)")
        queues = gateway.state.gateway.queues
        samples: list[dict[str, Any]] = []
        errors, filled_at = 0, None
        start_rss = rss_bytes()
        for first in range(0, requests, sample_every):
            errors += await send_range(app, state, range(first, min(first + sample_every, requests)))
            await exact.flush()  # the writes of these requests are in the cache before it is measured
            sample = {
                "requests": min(first + sample_every, requests),
                "rss_bytes": rss_bytes(),
                "cache_entries": len(backend),
                "cache_bytes": backend.size,
                "evictions": backend.evictions,
                "queue_depths": {queue.name: queue.depth() for queue in queues},
            }
            samples.append(sample)
            if filled_at is None and backend.evictions:
                filled_at = len(samples) - 1
        stop.set()
        await running
    end_rss = samples[-1]["rss_bytes"]
    fill = samples[filled_at] if filled_at is not None else None
    return {
        "requests": requests,
        "errors": errors,
        "max_bytes": backend.max_bytes,
        "rss_start_bytes": start_rss,
        "rss_at_fill_bytes": fill["rss_bytes"] if fill else None,
        "requests_at_fill": fill["requests"] if fill else None,
        "rss_end_bytes": end_rss,
        "growth_after_fill_pct": growth_pct(fill["rss_bytes"], end_rss) if fill else None,
        "max_growth_after_fill_pct": (
            growth_pct(fill["rss_bytes"], max(s["rss_bytes"] for s in samples[filled_at:])) if fill else None
        ),
        "cache_entries": samples[-1]["cache_entries"],
        "cache_bytes": samples[-1]["cache_bytes"],
        "evictions": samples[-1]["evictions"],
        "max_queue_depths": {
            name: max(s["queue_depths"][name] for s in samples) for name in samples[-1]["queue_depths"]
        },
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="RSS of the gateway over a long run with the exact cache on")
    parser.add_argument("--requests", type=int, default=200_000, help="requests in all (default 200000)")
    parser.add_argument("--sample-every", type=int, default=5000, help="requests between RSS samples")
    parser.add_argument(
        "--max-bytes", type=int, help="the exact cache's bound (default: the config's default, 64 MiB)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soak.json")
    args = parser.parse_args()
    result = asyncio.run(soak(args.requests, args.sample_every, args.max_bytes))
    text = json.dumps(result, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
