"""Shutdown with requests in flight, in uvicorn's own order: wait for connections up to the drain timeout,
cancel what is left, then run the app's lifespan shutdown (which closes the ledger) without waiting for the
cancelled requests. Every admitted request must still be settled - reservation released, one ledger row.

A real uvicorn server in this process, on SQLite, the upstream mocked; settlement is slowed down so that the
cancelled requests are still settling when the lifespan shutdown begins.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from tests.gateway.conftest import completion, settings
from tests.support import free_port, until
from tiergate.admin.server import create_server
from tiergate.gateway.components import Gateway

MASTER = {"authorization": "Bearer sk-test-master"}


RECEIVED: list[str] = []


async def _slow_upstream(request: httpx.Request) -> httpx.Response:
    body = orjson.loads(request.content)
    RECEIVED.append(body["model"])
    if body.get("stream"):

        async def chunks() -> AsyncIterator[bytes]:
            yield b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"partial answer"}}]}\n\n'
            await asyncio.sleep(60)

        return httpx.Response(200, content=chunks(), headers={"content-type": "text/event-stream"})
    await asyncio.sleep(60)
    return httpx.Response(200, json=completion(body["model"]))


async def _ask(client: httpx.AsyncClient, key: str, rid: str, stream: bool) -> int | str:
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
        "stream": stream,
    }
    headers = {"authorization": f"Bearer {key}", "x-request-id": rid}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            async for _ in r.aiter_bytes():
                pass
            return r.status_code
    except httpx.HTTPError as exc:
        return exc.__class__.__name__


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_requests_cut_off_at_the_drain_timeout_are_settled_before_the_ledger_closes(
    tmp_path: Path, stream: bool
) -> None:
    RECEIVED.clear()
    db = tmp_path / "gateway.db"
    config = settings(
        database_url=f"sqlite:///{db}", drain_timeout_s=0.3, accounting={"ledger_flush_s": 0.01}
    )
    app = create_server(config, upstream_transport=httpx.MockTransport(_slow_upstream))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=0.3)
    )
    serving = asyncio.ensure_future(server.serve())
    await until(lambda: server.started, what="the server to start")
    gw: Gateway = app.state.gateway
    settle = gw.accounting.limiter.settle

    async def slow_settle(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.3)  # longer than the lifespan shutdown takes to reach the ledger
        await settle(*args, **kwargs)

    gw.accounting.limiter.settle = slow_settle  # type: ignore[method-assign]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        tenant = (await client.post("/admin/tenants", json={"name": "t"}, headers=MASTER)).json()
        key = (
            await client.post(
                "/admin/keys", json={"tenant_id": tenant["id"], "budget_usd": 1.0}, headers=MASTER
            )
        ).json()
        rids = [f"{'sse' if stream else 'json'}-{i}" for i in range(4)]
        calls = [asyncio.ensure_future(_ask(client, key["key"], rid, rid.startswith("sse"))) for rid in rids]
        await until(lambda: len(RECEIVED) == len(rids), what="every request at the upstream")
        server.should_exit = True
        await serving
        seen = dict(zip(rids, await asyncio.gather(*calls), strict=True))

    assert all(seen[r] == 503 for r in rids if r.startswith("json")), seen  # told, in OpenAI's shape
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT request_id, status, cost_nano FROM ledger").fetchall()
        reserved = conn.execute("SELECT SUM(reserved_nano) FROM budget_counters").fetchone()[0]
    assert sorted(r[0] for r in rows) == sorted(rids)
    status = {r[0]: (r[1], r[2]) for r in rows}
    assert all(status[r] == ("error", 0) for r in rids if r.startswith("json")), status
    # A cut stream is billed for what it relayed.
    assert all(
        status[r][0] == "client_disconnected" and status[r][1] > 0 for r in rids if r.startswith("sse")
    )
    assert reserved == 0
