"""The server protocol stamps each request's arrival, so the overhead figures start before the app does."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import uvicorn

from tests.support import free_port, until
from tiergate.admin.commands.serve import uvicorn_kwargs
from tiergate.gateway.config.settings import parse_settings
from tiergate.gateway.http.protocol import ARRIVED, ArrivalStampingProtocol


async def test_every_request_on_a_connection_carries_its_own_arrival_before_the_app_runs() -> None:
    seen: list[tuple[float | None, float]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append((scope.get(ARRIVED), time.perf_counter()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, http=ArrivalStampingProtocol, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started, what="the server to start")
        # One client: its requests share one keep-alive connection.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            before = time.perf_counter()
            for _ in range(3):
                assert (await client.post("/", content=b"{}")).status_code == 200
    finally:
        server.should_exit = True
        await task
    assert len(seen) == 3
    previous_entry = before
    for arrived, entered in seen:
        assert arrived is not None and previous_entry <= arrived <= entered
        previous_entry = entered


def test_tiergate_serve_runs_uvicorn_with_the_stamping_protocol() -> None:
    settings = parse_settings({"tiers": {"student": [{"model": "m", "api_base": "http://127.0.0.1:9/v1"}]}})
    assert uvicorn_kwargs("127.0.0.1", 4000, settings)["http"] is ArrivalStampingProtocol
