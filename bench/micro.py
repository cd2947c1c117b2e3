"""Per-request steps of the gateway's hot path, timed in isolation (no server, no network).

    python bench/micro.py [--iterations N]

Complements the profiles of `run.py --profile`: each line is one step the gateway does for every chat
completion, on the benchmark's own request and canned upstream answers, in µs per call (best of 5 rounds).
Run it pinned (`taskset -c 0`) on a quiet machine; compare before and after a change to the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.load import chat_body
from bench.harness.scenario import CONFIG_DIR, fill, parse_scenario
from bench.harness.upstream import chat_completion, sse_stream
from tiergate.gateway.accounting.auth import MasterKeyAuth, Principal
from tiergate.gateway.accounting.ledger import entry_from
from tiergate.gateway.accounting.ledger_wal import LedgerWal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.config.settings import Settings, parse_settings
from tiergate.gateway.http.bodies import parse_chat, with_fields
from tiergate.gateway.upstream.fleet import build_catalog
from tiergate.gateway.upstream.relay import SSEAccumulator
from tiergate.policies.pricing import cost_nano
from tiergate.policies.routing import prefer_healthy, resolve, restrict


def gateway_settings() -> Settings:
    """The settings of the `gateway` benchmark scenario, with a placeholder upstream."""
    path = CONFIG_DIR / "gateway.yaml"
    scenario = parse_scenario(path.read_text(encoding="utf-8"), path)
    assert scenario.process_config is not None
    text = fill(scenario.process_config, {"UPSTREAM": "http://127.0.0.1:9", "WORKDIR": "/tmp"}, path.name)
    return parse_settings(yaml.safe_load(text), env=scenario.env)


def _run(coroutine: Any) -> Any:
    """Drive a coroutine that never suspends, without an event loop's overhead."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine suspended")


def steps(loop: asyncio.AbstractEventLoop, workdir: Path) -> dict[str, Callable[[], object]]:
    """Each step as a zero-argument callable; `loop` runs the one that needs an event loop, the ledger's
    write-ahead file is in `workdir`."""
    settings = gateway_settings()
    catalog = build_catalog(settings.deployments)
    auth = MasterKeyAuth(settings.master_key)
    headers = {"authorization": f"Bearer {settings.master_key}", "content-type": "application/json"}
    chat_raw, stream_raw = chat_body("student", stream=False), chat_body("ta", stream=True)
    chat, stream = parse_chat(chat_raw), parse_chat(stream_raw)
    deployment = settings.deployments[0]
    answer, events = chat_completion(), sse_stream()
    plan = resolve("student", catalog, settings.escalation)
    assert plan is not None

    def relay_stream() -> object:
        acc = SSEAccumulator(strip_usage_chunk=True)
        return acc.feed(events), acc.flush(), acc.assembled()

    record = CallRecord(
        request_id="req-0123456789abcdef",
        endpoint="chat",
        principal=Principal("key", "tenant-1", "key-1"),
        requested_model="student",
        started_at=0,
    )
    record.cost_nano, record.prompt_tokens, record.completion_tokens = 123_456, 42, 17
    row, wal = entry_from(record), LedgerWal(workdir)

    def settle_answer() -> int:
        usage = orjson.loads(answer)["usage"]
        return cost_nano(deployment.price, usage["prompt_tokens"], usage["completion_tokens"])

    return {
        "authenticate (master key)": lambda: _run(auth.authenticate(headers)),
        "parse_chat (request JSON + checks)": lambda: parse_chat(chat_raw),
        "with_fields: model rewrite": lambda: with_fields(chat.raw, chat.body, {"model": deployment.model}),
        "with_fields: model + stream_options": lambda: with_fields(
            stream.raw, stream.body, {"model": "bench-model-sse", "stream_options": {"include_usage": True}}
        ),
        "resolve + restrict (tier alias)": lambda: restrict(
            resolve("student", catalog, settings.escalation),  # type: ignore[arg-type]
            "student",
            catalog,
            None,
        ),
        "prefer_healthy": lambda: prefer_healthy(plan.targets[0].deployments, {}, 0.0, 1),
        "orjson.loads(answer) + usage + cost": settle_answer,
        "SSE relay: feed + flush + assembled (25 events)": relay_stream,
        "ledger row (entry_from)": lambda: entry_from(record),
        "ledger write-ahead append (orjson + one write)": lambda: wal.append(row) or "appended",
        "asyncio: create 2 tasks + wait (RelayResponse shape)": _relay_tasks(loop),
    }


def _relay_tasks(loop: asyncio.AbstractEventLoop) -> Callable[[], object]:
    async def nothing() -> None:
        return None

    async def shape() -> None:
        a, b = asyncio.ensure_future(nothing()), asyncio.ensure_future(asyncio.sleep(3600))
        await asyncio.wait((a, b), return_when=asyncio.FIRST_COMPLETED)
        b.cancel()

    return lambda: loop.run_until_complete(shape()) or "done"


def main() -> int:
    parser = argparse.ArgumentParser(description="time the gateway's per-request steps in isolation")
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    workdir = tempfile.TemporaryDirectory()
    try:
        for name, step in steps(loop, Path(workdir.name)).items():
            best = min(timeit.repeat(step, number=args.iterations, repeat=5)) / args.iterations
            print(f"{best * 1e6:8.2f} µs  {name}")
    finally:
        loop.close()
        workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
