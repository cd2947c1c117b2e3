"""The reference: a minimal Starlette + uvicorn (uvloop, httptools) pass-through with one aiohttp session.

    python bench/passthrough.py --upstream http://127.0.0.1:8080 --port 9000

Forwards every POST to the same path on the upstream and relays the answer (streams chunk by chunk). It does
nothing a gateway must do (no auth, no parsing, no accounting), so it is the floor for a Python gateway.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def create_app(upstream: str) -> Starlette:
    session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await session.close()

    async def forward(request: Request) -> Response:
        assert session is not None
        body = await request.body()
        response = await session.post(
            upstream + request.url.path, data=body, headers={"content-type": "application/json"}
        )
        if response.content_type == "text/event-stream":

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in response.content.iter_any():
                        yield chunk
                finally:
                    response.release()

            return StreamingResponse(relay(), status_code=response.status, media_type="text/event-stream")
        data = await response.read()
        response.release()
        return Response(data, status_code=response.status, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    routes = [Route("/healthz", healthz), Route("/{path:path}", forward, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream.rstrip("/")),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
