"""SIGTERM to one of two replicas while requests are in flight: nothing is lost, the other keeps serving.

Requests to the stopping replica are of two kinds, each plain and streamed: ones that finish within its
drain timeout (they must be answered in full), and ones that would take far longer (cut off when the timeout
expires). Either way every request the replica admitted has exactly one ledger row, and no reservation is
left held in Redis: the cut-off ones are settled before the process exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.replicas import Replicas, start_replicas
from tests.support import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.services]
DRAIN_S = 5.0
PER_KIND = 3
QUICK = {"content": "one two three four five six", "chunks": 6, "chunk_delay_s": 0.2, "delay_s": 1.0}
STUCK = {"delay_s": 60.0}  # for plain requests: no answer before the drain timeout
DRIP = {"content": " ".join(["word"] * 60), "chunks": 60, "chunk_delay_s": 1.0}  # streams: a chunk a second


async def _ask(
    client: httpx.AsyncClient, url: str, key: str, rid: str, model: str, stream: bool
) -> dict[str, Any]:
    """One chat request; what the client saw: status, the body or the streamed text, whether it ended."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": rid}],
        "max_tokens": 40,
        "stream": stream,
    }
    headers = {"authorization": f"Bearer {key}", "x-request-id": rid}
    seen: dict[str, Any] = {"rid": rid, "status": None, "complete": False, "text": "", "error": None}
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
            seen["status"] = r.status_code
            async for line in r.aiter_lines():
                seen["text"] += line + "\n"
            seen["complete"] = True
    except httpx.HTTPError as exc:
        seen["error"] = exc.__class__.__name__
    return seen


def _refused(url: str) -> bool:
    try:
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def _stop_one_mid_flight(replicas: Replicas, key: str) -> dict[str, Any]:
    a, b = replicas.urls
    replicas.script("quick-1", *[QUICK] * (2 * PER_KIND))
    replicas.script("stuck-1", *[STUCK] * PER_KIND)
    replicas.script("drip-1", *[DRIP] * PER_KIND)
    kinds = [("quick-1", False), ("quick-1", True), ("stuck-1", False), ("drip-1", True)]
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as client:
        tasks = {}
        for model, stream in kinds:
            for i in range(PER_KIND):
                rid = f"{model}-{'sse' if stream else 'json'}-{i}"
                tasks[rid] = asyncio.ensure_future(_ask(client, a, key, rid, model, stream))

        def arrived() -> int:
            return sum(
                1 for r in replicas.received() if r["body"]["model"] in ("quick-1", "stuck-1", "drip-1")
            )

        deadline = time.monotonic() + 30
        while await asyncio.to_thread(arrived) < len(tasks):
            assert time.monotonic() < deadline, "the requests did not all reach the upstream"
            await asyncio.sleep(0.05)
        os.kill(replicas.procs[0].pid, signal.SIGTERM)
        stopped_at = time.monotonic()
        # While it drains, the stopping one takes no new connection and the other replica serves.
        closed = await asyncio.to_thread(wait_for, lambda: _refused(a), timeout=DRAIN_S, what="no listener")
        during = [await _ask(client, b, key, f"other-{i}", "student", stream=i % 2 == 1) for i in range(6)]
        code = await asyncio.to_thread(replicas.procs[0].wait, DRAIN_S + 30)
        return {
            "results": {rid: await task for rid, task in tasks.items()},
            "during": during,
            "closed": closed,
            "code": code,
            "exited_after": time.monotonic() - stopped_at,
        }


def test_sigterm_drains_in_flight_requests_and_settles_the_cut_off_ones(
    tmp_path: Path, postgres_url: str, redis_server_url: str, redis_prefix: str
) -> None:
    with start_replicas(
        tmp_path, postgres_url, redis_server_url, redis_prefix, models=("quick-1", "stuck-1", "drip-1"),
        drain_timeout_s=DRAIN_S,
    ) as replicas:  # fmt: skip
        key = replicas.key(budget_usd=1.0, budget_period="total")
        seen = asyncio.run(_stop_one_mid_flight(replicas, key["key"]))
        log = replicas.output(0)
        # uvicorn re-raises the signal once it has shut down cleanly, as a process stopped by it should.
        assert seen["code"] == -signal.SIGTERM and "Application shutdown complete" in log, log
        assert DRAIN_S <= seen["exited_after"] < DRAIN_S + 20, seen["exited_after"]
        assert all(r["status"] == 200 and r["complete"] for r in seen["during"]), seen["during"]
        results = seen["results"]
        for rid, r in results.items():
            if rid.startswith("quick-1-json"):
                assert r["status"] == 200 and "one two three four five six" in r["text"], r
            elif rid.startswith("quick-1-sse"):
                assert r["status"] == 200 and r["text"].rstrip().endswith("data: [DONE]"), r
            elif rid.startswith("stuck-1"):  # cut off at the drain timeout: told so, in OpenAI's shape
                assert r["status"] == 503 and '"code":"shutting_down"' in r["text"], r
            else:  # a stream cut off at the drain timeout: it began, and did not end with [DONE]
                assert r["status"] == 200 and "word" in r["text"] and "[DONE]" not in r["text"], r

        answered_by_b = [r["rid"] for r in seen["during"]]
        rows = replicas.sql(
            "SELECT request_id, status, cost_nano, reserved_nano FROM ledger WHERE key_id = $1", key["id"]
        )
        ids = [r["request_id"] for r in rows]
        assert sorted(ids) == sorted([*results, *answered_by_b]), ids  # exactly one row per admitted request
        status = {r["request_id"]: r["status"] for r in rows}
        assert {status[rid] for rid in results if rid.startswith("quick")} == {"ok"}
        assert {status[rid] for rid in results if rid.startswith("stuck-1")} == {"error"}
        assert {status[rid] for rid in results if rid.startswith("drip-1")} == {"client_disconnected"}
        # Cut-off streams are billed for what was relayed; every reservation was released.
        assert all(r["cost_nano"] > 0 for r in rows if r["request_id"].startswith("drip-1"))
        assert replicas.held_reservations(f"k:{key['id']}") == 0
        assert replicas.redis_spent(f"k:{key['id']}") == sum(r["cost_nano"] for r in rows)
