"""CPU per request of the whole gateway app, driven in-process over ASGI: no HTTP server, no wrk.

    python bench/inprocess.py gateway chat [--requests 2000] [--rounds 7] [--calls]

The scenario's config (bench/configs/<scenario>.yaml, its setup commands included) is loaded into
`create_app`, whose lifespan and routes run as uvicorn would run them; the upstream is the harness's nginx.
Eight concurrent clients call the app directly, so the figure is the gateway's own code (the aiohttp client
to the upstream included) without uvicorn's HTTP parsing. `time.process_time` over each round, best of the
rounds: on a machine shared with other work this moves far less than `run.py`'s req/s, which is what makes
a before/after comparison of a refactor readable. `--calls` counts Python function calls per request with
cProfile instead: nearly deterministic (only background batch sizes vary), so extra work on the path shows
under any noise.

Compare two checkouts in one sitting, alternating:  PYTHONPATH=<checkout> python bench/inprocess.py …
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

# Appended, not inserted: a PYTHONPATH naming another checkout wins, so one copy of this file measures both.
sys.path.append(str(Path(__file__).resolve().parent.parent))

import tiergate
from bench.harness.load import request_body
from bench.harness.runner import run_setup
from bench.harness.scenario import CONFIG_DIR, fill, parse_scenario
from bench.harness.upstream import static_upstream
from tiergate.gateway.app import create_app

try:
    from tiergate import load_settings
except ImportError:  # checkouts before the public API (e.g. 6d6b4bd, the "one house" issue's start)
    from tiergate.gateway.settings import load_settings  # type: ignore[no-redef]

CLIENTS = 8
REPO = Path(tiergate.__file__).resolve().parent.parent  # the setup commands run the checkout under test
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


async def call(
    app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]], body: bytes, state: Message
) -> int:
    """One POST through the app as a server would make it; returns the status once the body has been sent."""
    done = asyncio.Event()
    delivered = False
    status = 0

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),  # uvicorn gives each request a shallow copy of the lifespan state
    }
    await app(scope, receive, send)
    return status


async def load(app: ASGIApp, path: str, key: str, body: bytes, requests: int, state: Message) -> None:
    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", f"Bearer {key}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def client(n: int) -> None:
        for _ in range(n):
            status = await call(app, path, headers, body, state)
            if status != 200:
                raise RuntimeError(f"the gateway answered {status}")

    await asyncio.gather(*(client(requests // CLIENTS) for _ in range(CLIENTS)))


async def lifespan(app: ASGIApp, state: Message) -> tuple[asyncio.Task[None], asyncio.Event]:
    """Start the app's lifespan; returns its task and the event that shuts it down."""
    started, stop = asyncio.Event(), asyncio.Event()
    pending = [{"type": "lifespan.startup"}]

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await stop.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError(message.get("message", "startup failed"))
        if message["type"] == "lifespan.startup.complete":
            started.set()

    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, receive, send)
    )
    await asyncio.wait([task, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    return task, stop


async def measure(
    scenario_name: str, workload_name: str, requests: int, rounds: int, calls: bool
) -> dict[str, Any]:
    source = CONFIG_DIR / f"{scenario_name}.yaml"
    scenario = parse_scenario(source.read_text(encoding="utf-8"), source)
    workload = next((w for w in scenario.workloads if w.name == workload_name), None)
    if scenario.process_config is None or workload is None:
        raise SystemExit(f"{source.name}: no gateway config or no workload {workload_name!r}")
    with tempfile.TemporaryDirectory() as tmp, static_upstream(Path(tmp), core=None) as (upstream, _):
        config = Path(tmp) / "config.yaml"
        values = {
            "UPSTREAM": upstream,
            "WORKDIR": tmp,
            "PORT": "0",
            "PYTHON": sys.executable,
            "REPO": str(REPO),
            "CONFIG": str(config),
        }
        config.write_text(fill(scenario.process_config, values, source.name))
        run_setup(scenario, values, Path(tmp))
        env = {**os.environ, **{k: fill(v, values, source.name) for k, v in scenario.env.items()}}
        key = fill(scenario.key or "", values, source.name)
        app: ASGIApp = create_app(load_settings(config, env=env))  # type: ignore[assignment]
        state: Message = {}
        running, stop = await lifespan(app, state)
        body = request_body(workload.api, workload.model, stream=workload.stream, fields=workload.fields)
        await load(app, workload.path, key, body, 400, state)  # warm: connections, caches, first batches
        result: dict[str, Any] = {"scenario": scenario_name, "workload": workload_name, "requests": requests}
        if calls:
            profiler = cProfile.Profile()
            profiler.enable()
            await load(app, workload.path, key, body, requests, state)
            profiler.disable()
            counted = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
            result["calls_per_request"] = sum(entry[1] for entry in counted.values()) / requests
        else:
            per_round = []
            for _ in range(rounds):
                before = time.process_time()
                await load(app, workload.path, key, body, requests, state)
                per_round.append((time.process_time() - before) / requests * 1e6)
            result |= {"cpu_us_best": min(per_round), "cpu_us_median": statistics.median(per_round)}
        stop.set()
        await running
        return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description="CPU per request of the gateway app in-process (see docstring)"
    )
    parser.add_argument("scenario", help="a bench/configs/ scenario with a gateway config, e.g. gateway")
    parser.add_argument("workload", help="one of its workloads, e.g. chat or stream")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds; the best is reported")
    parser.add_argument("--calls", action="store_true", help="count Python calls per request instead")
    args = parser.parse_args()
    requests = max(CLIENTS, args.requests - args.requests % CLIENTS)
    print(json.dumps(asyncio.run(measure(args.scenario, args.workload, requests, args.rounds, args.calls))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
